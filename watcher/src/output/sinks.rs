//! Sinks of the NDJSON feed (`watcher run`): stdout, a file (appended,
//! reopened on SIGHUP for logrotate), syslog (RFC 5424 over `/dev/log`, the
//! JSON record as the message), and a unix stream socket that several local
//! consumers read at once. Each record is serialized once; a slow or stuck
//! socket consumer never blocks the pipeline or the other consumers: each has
//! a bounded queue, and what it misses is counted and told to it.
use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::{fs::PermissionsExt, net::UnixDatagram},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use bytes::Bytes;
use std::{
    os::unix::net::{UnixListener, UnixStream},
    sync::{atomic::AtomicBool, mpsc},
};

use crate::{
    output::lane::{Line, LineMeta, SinkWriter},
    output::record::{Body, Record},
};

/// Which record types the feed carries: `["finding"]`, `["all"]`, or a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Types(Vec<String>);

pub(crate) const RECORD_TYPES: [&str; 10] = [
    "fork",
    "exec",
    "exit",
    "reap",
    "bind",
    "connect",
    "tcp_state",
    "loss",
    "finding",
    "health",
];

impl Types {
    pub(crate) fn new(types: &[String]) -> Result<Types, String> {
        for t in types {
            if t != "all" && !RECORD_TYPES.contains(&t.as_str()) {
                return Err(format!(
                    "unknown record type `{t}` in [feed] types (use \"all\" or some of {})",
                    RECORD_TYPES.join(", ")
                ));
            }
        }
        Ok(Types(types.to_vec()))
    }
    pub(crate) fn all(&self) -> bool {
        self.0.iter().any(|t| t == "all")
    }
    /// `loss` and `health` always pass: they say the feed is incomplete.
    pub(crate) fn wants(&self, r: &Record) -> bool {
        matches!(r.body, Body::Loss(_) | Body::Health(_))
            || self.all()
            || self.0.iter().any(|t| t == r.body.type_name())
    }
    pub(crate) fn list(&self) -> &[String] {
        &self.0
    }
}

/// A file appended to, reopened on request.
pub(crate) struct FileSink {
    file: io::BufWriter<File>,
}

impl FileSink {
    pub(crate) fn open(path: &Path) -> io::Result<FileSink> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(FileSink {
            file: io::BufWriter::new(file),
        })
    }
    pub(crate) fn write(&mut self, line: &[u8]) -> io::Result<()> {
        self.file.write_all(line)
    }
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        Write::flush(&mut self.file)
    }
}

/// RFC 5424 syslog over the local socket.
pub(crate) struct SyslogSink {
    out: SyslogOut,
}

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG` (RFC 5424), facility daemon.
pub(crate) fn rfc5424(meta: &LineMeta, json: &str, hostname: &str, pid: u32) -> String {
    let pri = 3 * 8 + meta.severity;
    format!(
        "<{pri}>1 {} {hostname} watcher {pid} {} - {json}",
        meta.time, meta.msgid
    )
}

impl SyslogSink {
    pub(crate) fn open(path: &Path) -> io::Result<SyslogSink> {
        let sock = UnixDatagram::unbound()?;
        sock.connect(path)?;
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "-".into());
        Ok(SyslogSink {
            out: SyslogOut {
                sock,
                hostname,
                pid: std::process::id(),
            },
        })
    }

    /// The pipeline's own way to this syslog socket, for lines that cannot
    /// wait (a descriptor of its own: the sink's thread owns this one).
    pub(crate) fn direct(&self) -> io::Result<crate::output::lane::Direct> {
        Ok(crate::output::lane::Direct::Syslog(std::sync::Arc::new(
            SyslogOut {
                sock: self.out.sock.try_clone()?,
                hostname: self.out.hostname.clone(),
                pid: self.out.pid,
            },
        )))
    }
}

/// A connected syslog socket and how a line is framed for it: the sink's
/// (its thread's sends may wait), and the pipeline's own (a `send` that
/// never waits: a full socket queue is `WouldBlock`, the line goes to the lane).
#[derive(Debug)]
pub(crate) struct SyslogOut {
    sock: UnixDatagram,
    hostname: String,
    pid: u32,
}

impl SyslogOut {
    fn frame(&self, line: &Line) -> String {
        rfc5424(&line.meta, line.json_str(), &self.hostname, self.pid)
    }

    /// Send `line` without waiting (a datagram: whole or not at all).
    pub(crate) fn send_now(&self, line: &Line) -> io::Result<()> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.sock);
        crate::output::lane::send_nowait(fd, self.frame(line).as_bytes()).map(|_| ())
    }
}

impl SinkWriter for SyslogSink {
    fn write(&mut self, line: &Line) -> io::Result<()> {
        self.out
            .sock
            .send(self.out.frame(line).as_bytes())
            .map(|_| ())
    }
}

impl SinkWriter for FileSink {
    fn write(&mut self, line: &Line) -> io::Result<()> {
        FileSink::write(self, &line.json)
    }
    fn flush(&mut self) -> io::Result<()> {
        FileSink::flush(self)
    }
}

struct Consumer {
    tx: mpsc::SyncSender<Bytes>,
    dropped: Arc<AtomicU64>,
    /// Set by its writer thread when the consumer went away.
    gone: Arc<AtomicBool>,
}

/// A unix stream socket: every connected consumer receives the feed.
pub(crate) struct SocketSink {
    path: PathBuf,
    consumers: Arc<Mutex<Vec<Consumer>>>,
    /// Records dropped for slow consumers, all consumers together.
    pub dropped: Arc<AtomicU64>,
    closing: Arc<AtomicBool>,
}

/// Lines queued per consumer before it starts missing records.
pub(crate) const CONSUMER_QUEUE: usize = 4096;

impl SocketSink {
    /// Bind `path` (owner-only permissions) and accept consumers in the background.
    pub(crate) fn bind(path: &Path) -> io::Result<SocketSink> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        if path.exists() {
            // A stale socket of an earlier run; anything else is not ours to remove.
            let meta = std::fs::symlink_metadata(path)?;
            if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
                std::fs::remove_file(path)?;
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
        }
        // Create it owner-only from the start (no window with wider permissions).
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let listener = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = listener?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let consumers: Arc<Mutex<Vec<Consumer>>> = Arc::default();
        let dropped = Arc::new(AtomicU64::new(0));
        let closing = Arc::new(AtomicBool::new(false));
        // Threads of their own, beside the pipeline: a consumer's writes never
        // wait for the pipeline, and the pipeline never waits for them.
        let c = consumers.clone();
        let stop = closing.clone();
        std::thread::Builder::new()
            .name("watcher-feed-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let (tx, rx) = mpsc::sync_channel::<Bytes>(CONSUMER_QUEUE);
                    let mine = Arc::new(AtomicU64::new(0));
                    let gone = Arc::new(AtomicBool::new(false));
                    c.lock().expect("consumers lock").push(Consumer {
                        tx,
                        dropped: mine.clone(),
                        gone: gone.clone(),
                    });
                    let spawned = std::thread::Builder::new()
                        .name("watcher-feed-consumer".into())
                        .spawn(move || write_consumer(stream, rx, &mine, &gone));
                    if spawned.is_err() {
                        tracing::warn!("cannot start a thread for a feed consumer");
                    }
                }
            })?;
        Ok(SocketSink {
            path: path.to_owned(),
            consumers,
            dropped,
            closing,
        })
    }

    /// Queue a line for every consumer; a full queue drops it for that consumer only.
    pub(crate) fn send(&self, line: &Bytes) {
        let mut cs = self.consumers.lock().expect("consumers lock");
        cs.retain(|c| !c.gone.load(Ordering::Relaxed));
        for c in cs.iter() {
            if c.tx.try_send(line.clone()).is_err() {
                c.dropped.fetch_add(1, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Consumers connected now (accepted, not gone).
    pub(crate) fn consumers(&self) -> usize {
        let cs = self.consumers.lock().expect("consumers lock");
        cs.iter()
            .filter(|c| !c.gone.load(Ordering::Relaxed))
            .count()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketSink {
    fn drop(&mut self) {
        // Consumers' threads end with their queues; the accept thread at its next connection.
        self.consumers.lock().expect("consumers lock").clear();
        self.closing.store(true, Ordering::Relaxed);
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One consumer's writer: its queued lines, each preceded by a `loss` record
/// when it missed some.
fn write_consumer(
    mut stream: UnixStream,
    rx: mpsc::Receiver<Bytes>,
    missed: &AtomicU64,
    gone: &AtomicBool,
) {
    let mut told = 0u64;
    while let Ok(line) = rx.recv() {
        let now_missed = missed.load(Ordering::Relaxed);
        if now_missed > told {
            let note = crate::output::lane::missed_line(
                now_missed - told,
                now_missed,
                "consumer_too_slow",
            );
            if stream.write_all(&note.json).is_err() {
                break;
            }
            told = now_missed;
        }
        if stream.write_all(&line).is_err() {
            break;
        }
    }
    gone.store(true, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::record::{FindingRecord, SCHEMA_VERSION};

    #[test]
    fn rfc5424_lines() {
        let r = Record {
            schema: SCHEMA_VERSION,
            time: "2026-01-02T03:04:05.000006Z".into(),
            mono_ns: 1,
            body: Body::Finding(FindingRecord {
                kind: "zombie".into(),
                state: "open".into(),
                id: "z".into(),
                subject: "zombie-0".into(),
                summary: "s".into(),
                count: 1,
                first_seen: String::new(),
                last_seen: String::new(),
                processes: vec![],
                details: Default::default(),
            }),
        };
        assert_eq!(
            rfc5424(&LineMeta::of(&r), "{}", "host", 42),
            "<28>1 2026-01-02T03:04:05.000006Z host watcher 42 finding - {}"
        );
    }

    #[test]
    fn types() {
        assert!(Types::new(&["finding".into(), "nope".into()]).is_err());
        let t = Types::new(&["finding".into()]).unwrap();
        assert!(!t.all());
    }
}
