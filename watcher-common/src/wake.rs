//! The wakeup policy: which records wake the reader at once, because they
//! can decide a finding, and which ride on the next drain (bulk: they keep
//! the tables current, and the reader drains them within its bulk period).
//! The kernel programs call these functions when they submit; this table
//! is the only place the choice is made.
//!
//! | record | wakes the reader | decides |
//! |---|---|---|
//! | fork that is its parent's `rate_per_s`-th in a second (the kernel counts each parent's forks per second itself) | at once | fork_storm (the rate) |
//! | fork while a fork bomb can be decided (userspace says until when: a subtree grown by half the limit) | at once | fork_storm (the growth) |
//! | other forks, reap, cgroup | never | (state only; a worker re-forked in a crash loop is read by the busy drain) |
//! | exec of a program userspace listed (`EXEC_WAKE`: a program at half its instance limit or more, a program in a crash loop) | at once | duplicate_instances, respawn_storm (the restart) |
//! | exec of a name that more live processes have than `duplicate_instances` allows (the kernel's own count, [`exec`]) | at once | duplicate_instances |
//! | other execs | the first of a burst (see below) | (state only) |
//! | exit that ends a process with a non-zero status, or while its parent is not in wait() | at once | respawn_storm, zombie, zombie_accumulation |
//! | other exits (threads; a clean exit its parent is waiting for) | never | |
//! | bind that failed, or of a UDP socket (it receives from its bind) | at once | port_conflict, address_unavailable, ports_exhausted, port_shadowed |
//! | bind of a TCP socket that succeeded | never | |
//! | connect that failed (not EINPROGRESS) | at once | connect_failures, ports_exhausted |
//! | connect that succeeded or is in progress | never | |
//! | TCP state: → LISTEN, LISTEN → CLOSE, SYN_SENT → CLOSE | at once | port_shadowed, connect_failures |
//! | TCP state: SYN_SENT → ESTABLISHED | never | |
//! | signal (only fatal ones and OOM kills reach the ring) | at once | crash causes |
//!
//! A deciding record wakes the reader when it sleeps, and only then. The
//! reader says in the kernel's `READER` word whether it does
//! ([`READER_ASLEEP`]); a deciding record, once submitted, swaps the word to
//! [`READER_URGENT`] and wakes the reader if it found it asleep — one
//! wakeup per sleep, however many CPUs write deciding records. An awake
//! reader finds the word urgent before it sleeps and drains again instead.
//! A burst's first 32 drains follow its records at once; in a storm the
//! reader then paces itself, napping awake an eighth of a wakeup interval
//! after each drain, doubling to half an interval (a sustained storm costs
//! two drains per interval, not one per record), until no deciding record
//! has come for an interval. Bulk records never wake it: the reader
//! re-drains one interval after each drain that found records (backing off
//! to the bulk period on a trickle, see the reader) while records have come
//! within the last two bulk periods — sleeping meanwhile as [`READER_DOZING`] —
//! and every bulk period after a quiet spell.
//!
//! An exec decides only when its program is at half its instance limit or
//! more, or in a crash loop (a restart): userspace lists those programs in
//! the kernel's `EXEC_WAKE` map by the name the exec gives them (`comm`), and
//! their execs are urgent. Any other exec wakes the reader only as the first
//! of a burst — when it sleeps with no drain planned ([`READER_ASLEEP`]: no
//! records came for two bulk periods) and no record woke it from this CPU for
//! [`LAZY_INTERVALS`] wakeup intervals — so a lone exec is read at once and a build's thousands
//! ride on the drains the first one started (a wakeup per exec was a third of
//! watcher's CPU in an exec flood). A program's first instances are read
//! that way, in time for the later ones to be urgent — unless they come
//! faster than the reader's drains (eleven copies started in a few
//! milliseconds): so the kernel counts, itself, the live processes that
//! each name was given by an exec it saw (`EXEC_LIVE`: tgid → name, until
//! the process ends; `EXEC_CROWD`: name → how many), and an exec whose
//! name is then on more live processes than `duplicate_instances` allows
//! (userspace writes that number, [`crate::READER_EXEC_CROWD`]) is urgent
//! too. A name is a program's or more than one's: the count covers every
//! instance of a program the kernel saw exec under that name, so the
//! instance that crosses a limit is urgent (instances started before
//! watcher, and a count lost to a race or a full table, leave it to the
//! listing above); an exec flood one at a time (a build's, a loop's) is
//! never more than a few live, and stays lazy.

/// `SOCK_DGRAM`.
const SOCK_DGRAM: u16 = 2;
const EINPROGRESS: i32 = 115;
const TCP_SYN_SENT: u32 = 2;
const TCP_CLOSE: u32 = 7;
const TCP_LISTEN: u32 = 10;

/// fork, reap, cgroup records.
pub const fn bulk() -> bool {
    false
}

/// A fork record (`decides`: it comes before the time userspace set in
/// `READER`'s [`crate::READER_FORKS_UNTIL`] entry; `nth`: which of its
/// parent's forks in this second it is, as the kernel counts them — 0 when
/// uncounted; `rate`: `READER`'s [`crate::READER_FORK_RATE`], 0 for never).
/// The fork that reaches the rate is the one that can open a `fork_storm`
/// finding (when the parent kept the rate for long enough: userspace
/// decides that), so it alone wakes the reader — one wakeup per storming
/// parent per second, where every fork from half the rate on once did.
pub const fn fork(decides: bool, nth: u64, rate: u64) -> bool {
    decides || (rate != 0 && nth == rate)
}

/// An exec record: a new instance of a program (`listed`: its name is in
/// `EXEC_WAKE`; `crowd`: the live processes that have its name from an
/// exec, this one included, as the kernel counts them — a count that can
/// run below zero after a race, never above the truth; `crowd_limit`:
/// [`crate::READER_EXEC_CROWD`], 0 for never). Otherwise not urgent: the
/// first of a burst ([`LAZY_INTERVALS`]).
pub const fn exec(listed: bool, crowd: i64, crowd_limit: u64) -> bool {
    listed || (crowd_limit != 0 && crowd >= crowd_limit as i64)
}

/// The reader sleeps (the map's initial value: until a reader says
/// otherwise, every deciding record wakes it).
pub const READER_ASLEEP: u64 = 0;
/// The reader is awake: it drains again before it sleeps, and a deciding
/// record only says it came ([`READER_URGENT`]).
pub const READER_AWAKE: u64 = 1;
/// The reader is awake and a deciding record came since it last looked:
/// it drains again before it sleeps.
pub const READER_URGENT: u64 = 2;
/// The reader sleeps, but has a drain planned within a few wakeup
/// intervals (records came recently: it re-drains for them). A deciding
/// record wakes it, as [`READER_ASLEEP`]; a lazy one (an exec of a program
/// not listed) rides on that drain instead of waking it.
pub const READER_DOZING: u64 = 3;

/// Whether a deciding record that found the word `was` wakes the reader.
pub const fn wakes(was: u64) -> bool {
    was == READER_ASLEEP || was == READER_DOZING
}

/// A record that is not urgent but need not wait for a bulk period either
/// (an exec of a program not listed) wakes the reader when it sleeps with
/// no drain planned ([`READER_ASLEEP`], not [`READER_DOZING`]) and no
/// record has woken it from its CPU for this many wakeup intervals.
pub const LAZY_INTERVALS: u64 = 8;

/// An exit record (`exit_code`: the raw `task_struct.exit_code`).
pub const fn exit(exit_code: u32, ends_process: bool, parent_waiting: bool) -> bool {
    ends_process && (exit_code != 0 || !parent_waiting)
}

/// A bind record.
pub const fn bind(ret: i32, sock_type: u16) -> bool {
    ret != 0 || sock_type == SOCK_DGRAM
}

/// A connect record.
pub const fn connect(ret: i32) -> bool {
    ret != 0 && ret != -EINPROGRESS
}

/// A TCP state change record.
pub const fn tcp_state(old: u32, new: u32) -> bool {
    new == TCP_LISTEN
        || (old == TCP_LISTEN && new == TCP_CLOSE)
        || (old == TCP_SYN_SENT && new == TCP_CLOSE)
}

/// A signal record (fatal signals, OOM kills).
pub const fn signal() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deciding_records_wake_and_bulk_ones_do_not() {
        assert!(!bulk());
        assert!(fork(true, 0, 500), "a fork bomb about to be decided");
        assert!(!fork(false, 0, 500), "uncounted");
        // The parent's forks in a second, as the kernel counts them (rate 500).
        assert!(fork(false, 500, 500), "the fork that reaches the rate");
        assert!(!fork(false, 499, 500), "below it");
        assert!(!fork(false, 250, 500), "half the rate: no longer urgent");
        assert!(!fork(false, 501, 500), "the rest of a storming second");
        assert!(!fork(false, 500, 0), "fork_storm off: never");
        assert!(
            exec(true, 1, 11),
            "a listed program: duplicate_instances, a restart"
        );
        assert!(!exec(false, 1, 11), "any other exec: the first of a burst");
        // The kernel's count of a name's live processes (limit 10: 11 is one too many).
        assert!(exec(false, 11, 11), "the instance that crosses the limit");
        assert!(exec(false, 40, 11), "and any after it");
        assert!(!exec(false, 10, 11), "at the limit: lazy");
        assert!(!exec(false, 2, 11), "an exec flood one at a time: lazy");
        assert!(!exec(false, -3, 11), "a count run below zero by a race");
        assert!(!exec(false, 1_000, 0), "duplicate_instances off: never");
        // Exits: a crash, a signal death, an exit nobody waits for.
        assert!(exit(1 << 8, true, true), "exit code 1");
        assert!(exit(11, true, true), "SIGSEGV");
        assert!(
            exit(0, true, false),
            "its parent is not waiting: a zombie to be"
        );
        assert!(!exit(0, true, true), "a clean exit its parent reaps");
        assert!(!exit(1 << 8, false, false), "a thread");
        // Binds.
        assert!(bind(-98, 1), "EADDRINUSE");
        assert!(bind(-99, 1), "EADDRNOTAVAIL");
        assert!(bind(0, 2), "a UDP socket starts receiving");
        assert!(!bind(0, 1), "a TCP bind: the listen decides");
        // Connects.
        assert!(connect(-111), "ECONNREFUSED");
        assert!(connect(-99), "EADDRNOTAVAIL");
        assert!(!connect(0));
        assert!(!connect(-115), "EINPROGRESS: the state change decides");
        // TCP states.
        assert!(tcp_state(7, 10), "listen");
        assert!(tcp_state(10, 7), "listener closed");
        assert!(tcp_state(2, 7), "handshake failed");
        assert!(!tcp_state(2, 1), "connected");
        assert!(signal());
    }
}
