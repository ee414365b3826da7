//! A sink's lane: a bounded queue and a thread of its own between the
//! pipeline and one sink (stdout, the feed file, syslog). The pipeline
//! serializes a record once and offers the line to every lane without
//! waiting: a lane whose queue is full (its sink is stalled: a consumer that
//! stopped reading stdout, a slow disk, a syslog daemon that stopped taking)
//! drops the line for itself only, counts it, and tells its sink how many it
//! missed (a `loss` record, reason `sink_too_slow`) as soon as it writes again.
//! Detection and the other sinks never wait for it.
//!
//! A line a person acts on (a finding, a loss, a health record) skips the
//! hop to the lane's thread when the sink can take it at once: stdout that
//! is a socket (systemd's journal) or a pipe with room, and nothing of the
//! lane still queued (so lines stay in order). The pipeline writes it
//! itself then, without waiting ([`Direct`]); otherwise it is queued as any
//! line. (On these 2-vCPU machines the wakeup of the lane's thread was
//! 25–100 µs of a finding's way to its reader.)
use crate::kernel::clock::Clock;
use std::{
    io,
    os::fd::RawFd,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{self, SyncSender, TrySendError},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bytes::Bytes;

use crate::{
    output::record::{Body, LossInfo, LossRecord, Record, SCHEMA_VERSION},
    output::stages::Histogram,
};

/// Lines queued per lane before its sink starts missing records.
pub(crate) const LANE_QUEUE: usize = 16_384;

/// How long a stopping lane may take to write what is queued.
const DRAIN_LIMIT: Duration = Duration::from_secs(3);

/// What a syslog line needs of a record besides its JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LineMeta {
    /// RFC 5424 severity: an opening finding is a warning, a blind pipeline an error.
    pub severity: u8,
    /// The record type (`finding`, `exec`, …): syslog's MSGID.
    pub msgid: &'static str,
    /// The record's RFC 3339 time.
    pub time: String,
}

impl LineMeta {
    pub(crate) fn of(r: &Record) -> LineMeta {
        let severity = match &r.body {
            Body::Finding(f) if f.state == "open" => 4,
            Body::Finding(_) => 5,
            Body::Health(h) if h.health.status != "ok" => 3,
            Body::Loss(_) => 4,
            _ => 6,
        };
        LineMeta {
            severity,
            msgid: r.body.type_name(),
            time: r.time.clone(),
        }
    }
}

/// One record, serialized once, shared by every lane.
#[derive(Clone, Debug)]
pub(crate) struct Line {
    /// The record's JSON and a newline.
    pub json: Bytes,
    pub meta: LineMeta,
    /// When it was offered to the lanes (for the write latency).
    pub queued: Instant,
    /// A line a person acts on: written at once when the sink can take it
    /// without waiting (see [`Direct`]).
    pub urgent: bool,
}

impl Line {
    pub(crate) fn of(r: &Record) -> serde_json::Result<Line> {
        let mut v = serde_json::to_vec(r)?;
        v.push(b'\n');
        Ok(Line {
            json: Bytes::from(v),
            meta: LineMeta::of(r),
            queued: Instant::now(),
            urgent: Line::acted_on(r),
        })
    }

    /// Whether `r` is what a person acts on (a finding, a loss, a health
    /// record), not an event of the host's.
    pub(crate) fn acted_on(r: &Record) -> bool {
        matches!(r.body, Body::Finding(_) | Body::Loss(_) | Body::Health(_))
    }

    /// A readable line (`watcher trace` without `--json`): not a record of the feed.
    pub(crate) fn text(mut text: String) -> Line {
        text.push('\n');
        Line {
            json: Bytes::from(text),
            meta: LineMeta {
                severity: 6,
                msgid: "text",
                time: String::new(),
            },
            queued: Instant::now(),
            urgent: false,
        }
    }

    /// The JSON without its newline.
    pub(crate) fn json_str(&self) -> &str {
        let b = self.json.strip_suffix(b"\n").unwrap_or(&self.json);
        std::str::from_utf8(b).unwrap_or("")
    }
}

/// The `loss` record a lane writes to its sink after it missed `count` lines.
pub(crate) fn missed_line(count: u64, total: u64, reason: &str) -> Line {
    let mono = Clock::mono_now();
    let r = Record {
        schema: SCHEMA_VERSION,
        time: Clock::now().rfc3339(mono),
        mono_ns: mono,
        body: Body::Loss(LossRecord {
            loss: LossInfo {
                count,
                total,
                reason: reason.into(),
                by_type: Default::default(),
                by_table: Default::default(),
            },
        }),
    };
    Line::of(&r).unwrap_or_else(|_| Line::text(String::new()))
}

/// What a lane writes to.
pub(crate) trait SinkWriter: Send + 'static {
    fn write(&mut self, line: &Line) -> io::Result<()>;
    /// After each batch.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// A readable line goes as it is; the feed's sinks take only records.
    fn takes_text(&self) -> bool {
        false
    }
}

impl SinkWriter for io::BufWriter<io::Stdout> {
    fn write(&mut self, line: &Line) -> io::Result<()> {
        io::Write::write_all(self, &line.json)
    }
    fn flush(&mut self) -> io::Result<()> {
        io::Write::flush(self)
    }
    fn takes_text(&self) -> bool {
        true
    }
}

/// A sink the pipeline can write to itself when that cannot wait: stdout
/// when it is a socket (a `send` that does not wait) or a pipe (when the
/// pipe has room for the line: the kernel's unread count against its size),
/// and syslog's datagram socket (a `send` that does not wait, of the line
/// as the sink frames it). Anything else (a terminal, a file — whose write
/// may wait for the disk —, /dev/null) always goes through the lane's thread.
#[derive(Clone, Debug)]
pub(crate) enum Direct {
    Socket(RawFd),
    Pipe(RawFd),
    Syslog(Arc<crate::output::sinks::SyslogOut>),
}

/// Room kept free in a pipe beyond the line: the kernel fills a pipe by
/// pages, the first and the last possibly part-used.
const PIPE_SLACK: usize = 2 * 4096;

impl Direct {
    /// For stdout, by what it is.
    pub(crate) fn stdout() -> Option<Direct> {
        Direct::of(libc::STDOUT_FILENO)
    }

    pub(crate) fn of(fd: RawFd) -> Option<Direct> {
        // SAFETY: fstat writes into the struct it is given.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return None;
        }
        match st.st_mode & libc::S_IFMT {
            libc::S_IFSOCK => Some(Direct::Socket(fd)),
            libc::S_IFIFO => Some(Direct::Pipe(fd)),
            _ => None,
        }
    }

    /// Write what the sink takes at once of `line` (`WouldBlock` when
    /// that is nothing): the bytes of its JSON written.
    fn write_now(&self, line: &Line) -> io::Result<usize> {
        let buf: &[u8] = &line.json;
        let n = match *self {
            Direct::Socket(fd) => return send_nowait(fd, buf),
            Direct::Pipe(fd) => {
                // A write into a pipe with room for it is whole at once,
                // whatever its length (the kernel copies all it has room for;
                // a signal may cut it short: the rest goes by the lane). The
                // room is asked each time (a reader may resize its pipe).
                // (Longer than PIPE_BUF, a line may interleave with another
                // writer of the same pipe — as the lane's own write of it
                // would.)
                // SAFETY: plain fcntl/ioctl on a descriptor; FIONREAD writes an int.
                let size = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
                let mut unread: libc::c_int = 0;
                let asked = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut unread) };
                if size < 0
                    || asked != 0
                    || unread.max(0) as usize + buf.len() + PIPE_SLACK > size as usize
                {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                // SAFETY: `buf` is valid for its length.
                unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) }
            }
            // A datagram goes whole or not at all.
            Direct::Syslog(ref out) => return out.send_now(line).map(|()| buf.len()),
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// `send` on socket `fd` that never waits (`WouldBlock` when the socket
/// cannot take `buf` now) and never raises SIGPIPE: the bytes sent.
pub(crate) fn send_nowait(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for its length; the flags make it never wait.
    let n = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[derive(Default)]
struct Shared {
    /// Lines the full queue refused.
    dropped: AtomicU64,
    /// Of them, those the sink has been told of (a `loss` record).
    told: AtomicU64,
    /// Lines queued and not yet written and flushed by the lane's thread.
    pending: AtomicU64,
    /// Lines the pipeline wrote itself (see [`Direct`]).
    direct: AtomicU64,
    /// Lines (or flushes) the sink failed to write.
    errors: AtomicU64,
    /// The sink is gone for good (a closed pipe): nothing more is offered.
    gone: AtomicBool,
    /// A writer to use from the next batch on (a reopened file).
    replacement: Mutex<Option<Box<dyn SinkWriter>>>,
    replace: AtomicBool,
    /// Queued → written, per line.
    latency: Mutex<Histogram>,
}

/// A sink's queue and thread.
pub(crate) struct Lane {
    name: &'static str,
    tx: Option<SyncSender<Line>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// How urgent lines may skip the queue, when they may.
    direct: Option<Direct>,
}

impl Lane {
    /// Start the lane's thread, writing to `writer`, `capacity` lines queued at most.
    pub(crate) fn start(
        name: &'static str,
        writer: Box<dyn SinkWriter>,
        capacity: usize,
    ) -> io::Result<Lane> {
        let (tx, rx) = mpsc::sync_channel::<Line>(capacity.max(1));
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("watcher-sink-{name}"))
            .spawn(move || run(writer, rx, &s))?;
        Ok(Lane {
            name,
            tx: Some(tx),
            shared,
            thread: Some(thread),
            direct: None,
        })
    }

    /// Urgent lines are written at once through `direct` when it can take
    /// them without waiting and nothing of the lane is still queued.
    pub(crate) fn with_direct(mut self, direct: Option<Direct>) -> Lane {
        self.direct = direct;
        self
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// Offer a line (never waits): a full queue drops it for this lane only.
    pub(crate) fn send(&self, mut line: Line) {
        if self.shared.gone.load(Ordering::Relaxed) {
            return;
        }
        if line.urgent && self.wrote_at_once(&mut line) {
            return;
        }
        let Some(tx) = &self.tx else { return };
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        match tx.try_send(line) {
            Ok(()) => {}
            Err(e) => {
                self.shared.pending.fetch_sub(1, Ordering::AcqRel);
                match e {
                    TrySendError::Full(_) => {
                        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    TrySendError::Disconnected(_) => {
                        self.shared.gone.store(true, Ordering::Relaxed)
                    }
                }
            }
        }
    }

    /// Write `line` on this thread when the sink takes it at once and the
    /// lane has nothing queued, nothing missed untold and no writer to
    /// change (so lines stay in order); `false`: it is to be queued (what a
    /// partial write left of it, then).
    fn wrote_at_once(&self, line: &mut Line) -> bool {
        let Some(direct) = &self.direct else {
            return false;
        };
        let s = &self.shared;
        if s.pending.load(Ordering::Acquire) != 0
            || s.dropped.load(Ordering::Relaxed) != s.told.load(Ordering::Relaxed)
            || s.replace.load(Ordering::Acquire)
        {
            return false;
        }
        match direct.write_now(line) {
            Ok(n) if n == line.json.len() => {
                s.direct.fetch_add(1, Ordering::Relaxed);
                s.latency
                    .lock()
                    .expect("lane lock")
                    .observe_ns(line.queued.elapsed().as_nanos() as u64);
                true
            }
            Ok(n) => {
                // (The rest goes next, by the lane: nothing else is queued.)
                line.json = line.json.slice(n..);
                false
            }
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                s.gone.store(true, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// Lines written at once by the pipeline, not by the lane's thread.
    pub(crate) fn direct_writes(&self) -> u64 {
        self.shared.direct.load(Ordering::Relaxed)
    }

    /// Write to `writer` from the next batch on (the old one is flushed and closed).
    pub(crate) fn replace(&self, writer: Box<dyn SinkWriter>) {
        *self.shared.replacement.lock().expect("lane lock") = Some(writer);
        self.shared.replace.store(true, Ordering::Release);
    }

    /// Lines dropped because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Lines the sink failed to write.
    pub(crate) fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    /// Whether the sink is gone (its pipe closed).
    pub(crate) fn gone(&self) -> bool {
        self.shared.gone.load(Ordering::Relaxed)
    }

    /// Queued → written latencies so far.
    pub(crate) fn latency(&self) -> Histogram {
        self.shared.latency.lock().expect("lane lock").clone()
    }
}

impl Drop for Lane {
    /// What is queued is written (for up to a few seconds: a stalled sink
    /// does not hold the daemon's stop).
    fn drop(&mut self) {
        drop(self.tx.take());
        let Some(t) = self.thread.take() else { return };
        let until = Instant::now() + DRAIN_LIMIT;
        while !t.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
}

/// Most lines written between two flushes.
const BATCH: usize = 512;

fn run(mut writer: Box<dyn SinkWriter>, rx: mpsc::Receiver<Line>, s: &Shared) {
    let mut told = 0u64;
    let mut batch: Vec<Line> = Vec::with_capacity(BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(l) => batch.push(l),
                Err(_) => break,
            }
        }
        if s.replace.swap(false, Ordering::Acquire) {
            if let Some(w) = s.replacement.lock().expect("lane lock").take() {
                let _ = writer.flush();
                writer = w;
            }
        }
        // What this sink missed, before what it writes now.
        let missed = s.dropped.load(Ordering::Relaxed);
        if missed > told {
            let note = missed_line(missed - told, missed, "sink_too_slow");
            if write(&mut *writer, &note, s).is_err() {
                return;
            }
            told = missed;
            s.told.store(told, Ordering::Relaxed);
        }
        let text = writer.takes_text();
        for line in batch.iter().filter(|l| l.meta.msgid != "text" || text) {
            if write(&mut *writer, line, s).is_err() {
                return;
            }
        }
        if let Err(e) = writer.flush() {
            if gone(&e, s) {
                return;
            }
            s.errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut h = s.latency.lock().expect("lane lock");
        let n = batch.len() as u64;
        for line in batch.drain(..) {
            h.observe_ns(line.queued.elapsed().as_nanos() as u64);
        }
        drop(h);
        // (Written and flushed: an urgent line may go at once again.)
        s.pending.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Write one line; `Err` when the sink is gone for good.
fn write(w: &mut dyn SinkWriter, line: &Line, s: &Shared) -> Result<(), ()> {
    match w.write(line) {
        Ok(()) => Ok(()),
        Err(e) if gone(&e, s) => Err(()),
        Err(_) => {
            s.errors.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }
}

fn gone(e: &io::Error, s: &Shared) -> bool {
    if e.kind() == io::ErrorKind::BrokenPipe {
        s.gone.store(true, Ordering::Relaxed);
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::Receiver;

    /// A sink that blocks in each write until told to go on (says when it
    /// first blocked).
    struct Gate {
        out: Arc<Mutex<Vec<String>>>,
        go: Receiver<()>,
        entered: Option<mpsc::Sender<()>>,
    }

    impl SinkWriter for Gate {
        fn write(&mut self, line: &Line) -> io::Result<()> {
            if let Some(e) = self.entered.take() {
                let _ = e.send(());
            }
            let _ = self.go.recv();
            self.out.lock().unwrap().push(line.json_str().to_owned());
            Ok(())
        }
    }

    /// Until `done` holds, for 5 s at most (the test's assertions say the rest).
    fn wait_for(mut done: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(5);
        while !done() && Instant::now() < until {
            std::thread::yield_now();
        }
    }

    /// A record that says `n` (a loss record's total).
    fn record(n: u64) -> Line {
        missed_line(0, n, "test")
    }

    #[test]
    fn a_stalled_sink_drops_for_itself_and_is_told_what_it_missed() {
        let (go, gate) = mpsc::channel();
        let (entered_tx, entered) = mpsc::channel();
        let out: Arc<Mutex<Vec<String>>> = Arc::default();
        let stalled = Lane::start(
            "stalled",
            Box::new(Gate {
                out: out.clone(),
                go: gate,
                entered: Some(entered_tx),
            }),
            4,
        )
        .unwrap();
        let (fine_tx, fine_rx) = mpsc::channel::<String>();
        struct Chan(mpsc::Sender<String>);
        impl SinkWriter for Chan {
            fn write(&mut self, line: &Line) -> io::Result<()> {
                let _ = self.0.send(line.json_str().to_owned());
                Ok(())
            }
        }
        let fine = Lane::start("fine", Box::new(Chan(fine_tx)), 4).unwrap();
        let t = Instant::now();
        // The stalled sink takes its first line and blocks writing it (the
        // lane's batch is that one line: nothing else was offered yet).
        stalled.send(record(0));
        entered
            .recv_timeout(Duration::from_secs(5))
            .expect("the stalled sink took its first line");
        for n in 0..100 {
            if n > 0 {
                stalled.send(record(n));
            }
            fine.send(record(n));
            // The healthy lane keeps up: each line is written before the next is offered.
            let got = fine_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("the healthy sink writes");
            assert!(got.contains(&format!("\"total\":{n},")), "{got}");
        }
        // Offering never waited for the stalled sink.
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(fine.dropped(), 0);
        // One line is being written, the queue holds 4: the rest was dropped.
        let dropped = stalled.dropped();
        assert_eq!(dropped, 95);
        // The sink moves again: a loss record first, then what comes next.
        drop(go);
        wait_for(|| {
            out.lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("sink_too_slow"))
        });
        stalled.send(record(1000));
        drop(stalled);
        let got = out.lock().unwrap().clone();
        let loss = got
            .iter()
            .find(|l| l.contains("sink_too_slow"))
            .expect("a loss record");
        let v: serde_json::Value = serde_json::from_str(loss).unwrap();
        assert_eq!(v["loss"]["count"].as_u64(), Some(dropped), "{got:?}");
        assert_eq!(
            got.iter().filter(|l| l.contains("sink_too_slow")).count(),
            1,
            "{got:?}"
        );
        assert_eq!(got.len() as u64, 100 - dropped + 2, "{got:?}");
        assert!(got.last().unwrap().contains("\"total\":1000"), "{got:?}");
    }

    #[test]
    fn a_closed_pipe_ends_the_lane() {
        struct Closed;
        impl SinkWriter for Closed {
            fn write(&mut self, _: &Line) -> io::Result<()> {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            }
        }
        let lane = Lane::start("closed", Box::new(Closed), 4).unwrap();
        lane.send(record(1));
        wait_for(|| lane.gone());
        assert!(lane.gone());
        assert_eq!(lane.errors(), 0);
    }

    /// A sink that hands each line it is given to a channel.
    struct Chan(mpsc::Sender<String>);
    impl SinkWriter for Chan {
        fn write(&mut self, line: &Line) -> io::Result<()> {
            let _ = self.0.send(line.json_str().to_owned());
            Ok(())
        }
    }

    /// A record that says `n`, urgent or not.
    fn line(n: u64, urgent: bool) -> Line {
        let mut l = record(n);
        l.urgent = urgent;
        l
    }

    /// What can be read from `fd` now (it is non-blocking).
    fn unread(fd: &std::os::fd::OwnedFd) -> String {
        let mut buf = vec![0u8; 1 << 17];
        match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(fd), &mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(_) => String::new(),
        }
    }

    fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&r),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        (r, w)
    }

    #[test]
    fn an_urgent_line_goes_at_once_into_a_pipe_or_socket_with_room_an_event_line_through_the_lane()
    {
        use std::os::fd::AsRawFd as _;
        let (r, w) = pipe();
        let (tx, rx) = mpsc::channel();
        let lane = Lane::start("stdout", Box::new(Chan(tx)), 4)
            .unwrap()
            .with_direct(Direct::of(w.as_raw_fd()));
        assert!(matches!(lane.direct, Some(Direct::Pipe(fd)) if fd == w.as_raw_fd()));
        lane.send(line(1, true));
        // Written before `send` returned, by this thread: in the pipe now.
        assert!(unread(&r).contains("\"total\":1,"));
        assert_eq!(lane.direct_writes(), 1);
        lane.send(line(2, false));
        let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(got.contains("\"total\":2,"), "{got}");
        assert_eq!(lane.direct_writes(), 1);
        // Longer than PIPE_BUF (a finding naming eleven instances): at once
        // too, whole, when the pipe has room for it.
        wait_for(|| lane.shared.pending.load(Ordering::Acquire) == 0);
        let mut long = line(5, true);
        let mut json = long.json.to_vec();
        json.splice(
            1..1,
            format!("\"pad\":\"{}\",", "x".repeat(6000)).into_bytes(),
        );
        long.json = json.into();
        let len = long.json.len();
        assert!(len > libc::PIPE_BUF);
        lane.send(long);
        assert_eq!(lane.direct_writes(), 2);
        let got = unread(&r);
        assert_eq!(got.len(), len, "the whole line");
        assert!(got.contains("\"total\":5,"));
        // A socket (systemd's journal): a send that does not wait.
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let (tx, _rx) = mpsc::channel();
        let lane = Lane::start("stdout", Box::new(Chan(tx)), 4)
            .unwrap()
            .with_direct(Direct::of(a.as_raw_fd()));
        lane.send(line(3, true));
        let mut buf = [0u8; 4096];
        let n = std::io::Read::read(&mut &b, &mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("\"total\":3,"));
        assert_eq!(lane.direct_writes(), 1);
        // Not a pipe or a socket: always the lane.
        assert!(Direct::of(std::fs::File::open("/dev/null").unwrap().as_raw_fd()).is_none());
    }

    #[test]
    fn an_urgent_line_goes_at_once_to_syslog_as_a_datagram_it_frames() {
        let dir = std::env::temp_dir().join(format!("watcher-lane-syslog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let sink = crate::output::sinks::SyslogSink::open(&path).unwrap();
        let direct = sink.direct().unwrap();
        let lane = Lane::start("syslog", Box::new(sink), 4)
            .unwrap()
            .with_direct(Some(direct));
        let mut buf = [0u8; 8192];
        // Written before `send` returned, by this thread, framed as the sink frames it.
        lane.send(line(1, true));
        assert_eq!(lane.direct_writes(), 1);
        let n = server.recv(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(
            got.starts_with('<') && got.contains("1 ") && got.contains(" watcher "),
            "{got}"
        );
        assert!(
            got.contains("\"total\":1,") && !got.ends_with('\n'),
            "{got}"
        );
        // An event line goes through the lane's thread, framed the same way.
        lane.send(line(2, false));
        let n = server.recv(&mut buf).unwrap();
        let lane_got = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(lane_got.contains("\"total\":2,"), "{lane_got}");
        assert_eq!(lane.direct_writes(), 1);
        assert_eq!(
            got.split(" - ").next().map(|h| h.split(' ').count()),
            lane_got.split(" - ").next().map(|h| h.split(' ').count()),
            "one framing: {got} / {lane_got}"
        );
        // Nobody reads: once the socket's queue is full the line goes to
        // the lane, and `send` does not wait.
        wait_for(|| lane.shared.pending.load(Ordering::Acquire) == 0);
        let t = Instant::now();
        for i in 0..2000 {
            lane.send(line(10 + i, true));
        }
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(lane.direct_writes() < 2001, "the full socket refused some");
        // (Read what the lane's thread still sends, so it ends.)
        server
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        while server.recv(&mut buf).is_ok() {}
        drop(lane);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_urgent_line_waits_behind_queued_lines_and_never_for_a_full_pipe() {
        use std::os::fd::AsRawFd as _;
        let (r, w) = pipe();
        let (go, gate) = mpsc::channel();
        let (entered_tx, entered) = mpsc::channel();
        let out: Arc<Mutex<Vec<String>>> = Arc::default();
        let lane = Lane::start(
            "stdout",
            Box::new(Gate {
                out: out.clone(),
                go: gate,
                entered: Some(entered_tx),
            }),
            8,
        )
        .unwrap()
        .with_direct(Direct::of(w.as_raw_fd()));
        // An event line is being written by the lane: the urgent one after
        // it is queued behind it, not written ahead of it.
        lane.send(line(1, false));
        entered.recv_timeout(Duration::from_secs(5)).unwrap();
        lane.send(line(2, true));
        assert_eq!(lane.direct_writes(), 0);
        assert_eq!(unread(&r), "");
        go.send(()).unwrap();
        go.send(()).unwrap();
        wait_for(|| out.lock().unwrap().len() >= 2);
        let got = out.lock().unwrap().clone();
        assert!(
            got[0].contains("\"total\":1,") && got[1].contains("\"total\":2,"),
            "{got:?}"
        );
        // The lane has written everything: the next urgent line goes at once.
        wait_for(|| lane.shared.pending.load(Ordering::Acquire) == 0);
        lane.send(line(3, true));
        assert_eq!(lane.direct_writes(), 1);
        assert!(unread(&r).contains("\"total\":3,"));
        // A pipe nobody reads, nearly full: the line goes to the lane, and
        // `send` does not wait.
        let size = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) } as usize;
        let fill = vec![b'x'; size - 4096];
        assert_eq!(nix::unistd::write(&w, &fill).unwrap(), fill.len());
        let t = Instant::now();
        lane.send(line(4, true));
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(lane.direct_writes(), 1);
        go.send(()).unwrap();
        wait_for(|| out.lock().unwrap().len() >= 3);
        assert!(out.lock().unwrap()[2].contains("\"total\":4,"));
        drop(go);
    }
}
