//! What the threads on a finding's path ask of the kernel's scheduler: a
//! short time slice. Linux 6.12's scheduler (EEVDF) lets a woken thread
//! with a shorter slice than the running one take the CPU at once; with the
//! default slice (3 ms here) a woken reader waits for the running task to
//! use up its own — measured on this machine kind: `respawn_storm`'s restart
//! read 1.2 ms after the exec (`perf sched timehist`: the reader runnable
//! for 1.0–1.2 ms behind the exec'ing task on its CPU), 0.33 ms with a
//! 0.1 ms slice. It changes when the thread runs, not how much: a thread
//! that sleeps between short turns uses no more CPU for it. Kernels before
//! 6.12 ignore the request (the nice value is still set).
//!
//! The helpers (namespace workers, the `/proc` worker, the runtime client,
//! the metrics server, the OTLP exporter, the kernel-table sweeper) run
//! below it: nice 10 and `SCHED_BATCH`, whose wakeups do not preempt the
//! running thread. And the deciding thread wakes them only once its turn's
//! findings are written (`SocketLookup::hold_questions`). Measured before
//! both: a `ports_exhausted` open asked a namespace worker for its port
//! summary mid-turn; the worker, placed on the reader's CPU, took it before
//! the finding's line was written and ran 2.3 ms of `setns` and sock_diag
//! (`perf sched`): p99 3.2 ms, 8 % of the samples past 2 ms.

/// The slice asked for: the least the kernel grants (0.1 ms).
pub(crate) const SHORT_SLICE_NS: u64 = 100_000;

/// `struct sched_attr` (VER0, 48 bytes).
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Ask for a short slice for the calling thread, keeping its nice value
/// and its policy (`SCHED_OTHER`). `Err`: what the kernel said (the thread
/// then keeps the default slice; findings are as correct, some later).
pub(crate) fn short_slice() -> std::io::Result<()> {
    // SAFETY: getpriority takes plain integers; -1 can be a nice value, so
    // errno tells an error apart.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, 0)
    };
    if nice == -1 && std::io::Error::last_os_error().raw_os_error().unwrap_or(0) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    set_attr(libc::SCHED_OTHER, nice, SHORT_SLICE_NS)
}

/// `sched_setattr` for the calling thread: `policy`, `nice`, and the slice
/// `runtime` asks for (0: the default).
fn set_attr(policy: i32, nice: i32, runtime: u64) -> std::io::Result<()> {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: policy as u32,
        flags: 0,
        nice,
        priority: 0,
        runtime,
        deadline: 0,
        period: 0,
    };
    // SAFETY: a valid `sched_attr` of the size it states, for this thread (0).
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The helpers' nice value (the deciding thread's is the process's: `[daemon] nice`).
pub(crate) const HELPER_NICE: i32 = 10;

/// Run the calling thread as a helper: [`HELPER_NICE`], `SCHED_BATCH` (its
/// wakeups do not preempt; the tick and the CPU's idleness give it time).
/// (Linux keeps both per thread.) Best effort: a kernel that refuses the
/// policy leaves the nice value set.
pub(crate) fn run_as_helper() {
    if set_attr(libc::SCHED_BATCH, HELPER_NICE, 0).is_err() {
        // SAFETY: setpriority takes plain integers.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, 0, HELPER_NICE);
        }
    }
}

/// The calling thread's slice as the kernel has it (ns; 0 on kernels that
/// keep none per thread).
#[cfg(test)]
fn slice() -> u64 {
    let mut attr = SchedAttr {
        size: 0,
        policy: 0,
        flags: 0,
        nice: 0,
        priority: 0,
        runtime: 0,
        deadline: 0,
        period: 0,
    };
    // SAFETY: a buffer of the size passed, for this thread.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut SchedAttr,
            std::mem::size_of::<SchedAttr>() as u32,
            0,
        )
    };
    if r == 0 {
        attr.runtime
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_nice_value_and_gets_the_short_slice_where_the_kernel_has_one() {
        std::thread::spawn(|| {
            // SAFETY: plain integers, this thread.
            let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            short_slice().expect("sched_setattr");
            let after = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            assert_eq!(before, after, "the nice value is kept");
            let s = slice();
            assert!(
                s == SHORT_SLICE_NS || s == 0,
                "slice {s} ns: not the one asked for (0: a kernel before 6.12)"
            );
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn a_helper_runs_at_its_nice_value_under_sched_batch() {
        std::thread::spawn(|| {
            run_as_helper();
            // SAFETY: plain integers, this thread.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            let policy = unsafe { libc::sched_getscheduler(0) };
            assert_eq!(nice, HELPER_NICE);
            assert_eq!(
                policy,
                libc::SCHED_BATCH,
                "a helper's wakeups must not preempt the reader"
            );
        })
        .join()
        .expect("thread");
    }
}
