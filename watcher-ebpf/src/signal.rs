//! Who ends a process: `signal/signal_generate`, filtered here to signals
//! whose default action kills (the config's mask) and that were delivered,
//! and `oom/mark_victim`, the OOM killer's choice. Both are rare on a healthy
//! host (SIGCHLD, the one frequent signal, is not in the mask), and each tells
//! userspace why the next exit of that process happened: a supervisor's stop,
//! a person's kill, a fault, or the OOM killer.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use watcher_common::{wake, EventKind, SignalData, SIGNAL_GENERATED, SIGNAL_OOM_VICTIM};

use crate::common::{conf, emit, now, tp_read, wanted_kind};

/// `TRACE_SIGNAL_DELIVERED`: the signal was queued (not ignored, not already pending).
const TRACE_SIGNAL_DELIVERED: i32 = 0;

#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    let _ = try_signal(&ctx);
    0
}

fn try_signal(ctx: &TracePointContext) -> Option<()> {
    if !wanted_kind(EventKind::Signal) {
        return None;
    }
    let sig: i32 = tp_read(ctx, conf!(tp_signal_sig))?;
    if !(1..32).contains(&sig) || conf!(signal_mask) & (1u32 << sig as u32) == 0 {
        return None;
    }
    let result: i32 = tp_read(ctx, conf!(tp_signal_result))?;
    if result != TRACE_SIGNAL_DELIVERED {
        return None;
    }
    let pid: i32 = tp_read(ctx, conf!(tp_signal_pid))?;
    let code: i32 = tp_read(ctx, conf!(tp_signal_code)).unwrap_or(0);
    let group: i32 = tp_read(ctx, conf!(tp_signal_group)).unwrap_or(0);
    let data = SignalData {
        target_pid: pid as u32,
        sig: sig as u32,
        code,
        group: (group != 0) as u32,
        source: SIGNAL_GENERATED,
        _pad: 0,
    };
    emit(EventKind::Signal, now(), wake::signal(), data);
    Some(())
}

#[tracepoint]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    let _ = try_oom(&ctx);
    0
}

fn try_oom(ctx: &TracePointContext) -> Option<()> {
    if !wanted_kind(EventKind::Signal) {
        return None;
    }
    let pid: i32 = tp_read(ctx, conf!(tp_oom_pid))?;
    let data = SignalData {
        target_pid: pid as u32,
        sig: 9,
        code: 0,
        group: 1,
        source: SIGNAL_OOM_VICTIM,
        _pad: 0,
    };
    emit(EventKind::Signal, now(), wake::signal(), data);
    Some(())
}
