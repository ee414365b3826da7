//! Cgroups: `cgroup/cgroup_mkdir` and `cgroup/cgroup_rmdir` of the hierarchy
//! whose ids the process records carry. A container runtime creates the
//! container's cgroup before it moves the first process in, so the id → path
//! mapping (and with it the container) is in the ring before the container's
//! first exec; rmdir lets userspace forget it. Rare events: no filtering
//! beyond the hierarchy.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use watcher_common::{CgroupData, EventKind, CGROUP_MKDIR, CGROUP_RMDIR};

use crate::common::{
    conf, now, read_data_loc_str, reserve, submit, tp_read, wanted_kind, write_header,
};

#[tracepoint]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    let _ = try_cgroup(&ctx, CGROUP_MKDIR);
    0
}

#[tracepoint]
pub fn cgroup_rmdir(ctx: TracePointContext) -> u32 {
    let _ = try_cgroup(&ctx, CGROUP_RMDIR);
    0
}

fn try_cgroup(ctx: &TracePointContext, op: u32) -> Option<()> {
    if !wanted_kind(EventKind::Cgroup) {
        return None;
    }
    let root: i32 = tp_read(ctx, conf!(tp_cgroup_root))?;
    if root as u32 != conf!(cgroup_hierarchy) {
        return None;
    }
    let id: u64 = tp_read(ctx, conf!(tp_cgroup_id))?;
    let level: i32 = tp_read(ctx, conf!(tp_cgroup_level)).unwrap_or(0);
    let loc: u32 = tp_read(ctx, conf!(tp_cgroup_path))?;
    let ts = now();
    let mut entry = reserve::<CgroupData>(EventKind::Cgroup)?;
    let ev = entry.as_mut_ptr();
    unsafe {
        write_header::<CgroupData>(core::ptr::addr_of_mut!((*ev).header), EventKind::Cgroup, ts);
        let d = core::ptr::addr_of_mut!((*ev).data);
        (*d).id = id;
        (*d).op = op;
        (*d).level = level as u32;
        (*d)._pad = 0;
        (*d).path_len = read_data_loc_str(ctx, loc, &mut (*d).path);
    }
    submit(entry, ts, watcher_common::wake::bulk());
    Some(())
}
