//! The one decoder of ring-buffer records. It checks lengths, matches every
//! kind, and never panics on any input (short, unknown, garbage).
use std::net::IpAddr;

use thiserror::Error;
use watcher_common::{
    CgroupData, Event, EventKind, ExecData, ExitData, ForkData, Header, ReapData, SignalData,
    SockCallData, SockCloseData, TcpStateData, AF_INET, AF_INET6, ARGS_MAX, CGROUP_MKDIR,
    CGROUP_PATH_LEN, FILENAME_LEN,
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than {need} bytes ({what})")]
    Short {
        len: usize,
        need: usize,
        what: &'static str,
    },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("record of kind {kind} declares {declared} bytes, expected {expected}")]
    SizeMismatch {
        kind: &'static str,
        declared: u32,
        expected: usize,
    },
}

/// An exec, with its strings decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exec {
    pub old_pid: u32,
    /// (Shared: the process table keeps it as its executable.)
    pub filename: std::sync::Arc<str>,
    /// (Shared: the process table keeps it as it is, no copy of the text.)
    pub argv: super::argv::Argv,
    /// The kernel kept only the first bytes of a longer argument vector.
    pub argv_truncated: bool,
    /// The task's cgroup (v2 id) at exec.
    pub cgroup_id: u64,
}

/// A cgroup created or removed (the hierarchy whose ids process records carry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    pub id: u64,
    /// `true` for mkdir, `false` for rmdir.
    pub created: bool,
    /// Path relative to the hierarchy's root (`/docker/<id>`).
    pub path: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    Fork(ForkData),
    Exec(Exec),
    Exit(ExitData),
    Reap(ReapData),
    Bind(SockCallData),
    Connect(SockCallData),
    TcpState(TcpStateData),
    Cgroup(Cgroup),
    Signal(SignalData),
    /// A tracked bound TCP socket was destroyed (internal: no record of its own).
    SockClose(SockCloseData),
}

/// A decoded kernel record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelEvent {
    pub header: Header,
    pub payload: Payload,
}

impl KernelEvent {
    pub fn kind(&self) -> EventKind {
        match self.payload {
            Payload::Fork(_) => EventKind::Fork,
            Payload::Exec(_) => EventKind::Exec,
            Payload::Exit(_) => EventKind::Exit,
            Payload::Reap(_) => EventKind::Reap,
            Payload::Bind(_) => EventKind::Bind,
            Payload::Connect(_) => EventKind::Connect,
            Payload::TcpState(_) => EventKind::TcpState,
            Payload::Cgroup(_) => EventKind::Cgroup,
            Payload::Signal(_) => EventKind::Signal,
            Payload::SockClose(_) => EventKind::SockClose,
        }
    }

    pub fn comm(&self) -> String {
        cstr(&self.header.comm)
    }
}

/// Read a `T` from the start of `buf`, after checking its length.
fn read<T: Copy>(buf: &[u8], what: &'static str) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if buf.len() < need {
        return Err(DecodeError::Short {
            len: buf.len(),
            need,
            what,
        });
    }
    // SAFETY: length checked above; T is one of the wire structs, made only of
    // integers and byte arrays, for which every bit pattern is valid;
    // read_unaligned makes no alignment assumption about `buf`.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

fn record<T: Copy>(buf: &[u8], header: &Header, kind: EventKind) -> Result<T, DecodeError> {
    let expected = std::mem::size_of::<Event<T>>();
    if header.size as usize != expected {
        return Err(DecodeError::SizeMismatch {
            kind: kind.as_str(),
            declared: header.size,
            expected,
        });
    }
    let ev: Event<T> = read(buf, kind.as_str())?;
    Ok(ev.data)
}

/// Decode one ring-buffer record.
pub fn decode(buf: &[u8]) -> Result<KernelEvent, DecodeError> {
    let header: Header = read(buf, "header")?;
    let kind = EventKind::from_u32(header.kind);
    let payload = match kind {
        EventKind::Unknown => return Err(DecodeError::UnknownKind(header.kind)),
        EventKind::Fork => Payload::Fork(record::<ForkData>(buf, &header, kind)?),
        EventKind::Exec => {
            // Variable-size: the fixed part, then `args_len` bytes of argv.
            let fixed = std::mem::size_of::<Event<ExecData>>();
            let d = read::<Event<ExecData>>(buf, kind.as_str())?.data;
            let alen = d.args_len as usize;
            if alen > ARGS_MAX || header.size as usize != fixed + alen {
                return Err(DecodeError::SizeMismatch {
                    kind: kind.as_str(),
                    declared: header.size,
                    expected: fixed + alen.min(ARGS_MAX),
                });
            }
            let Some(args) = buf.get(fixed..fixed + alen) else {
                return Err(DecodeError::Short {
                    len: buf.len(),
                    need: fixed + alen,
                    what: kind.as_str(),
                });
            };
            let flen = (d.filename_len as usize).min(FILENAME_LEN);
            let argv = super::argv::Argv::from_bytes(args);
            Payload::Exec(Exec {
                old_pid: d.old_pid,
                filename: text(&d.filename[..flen]),
                argv,
                argv_truncated: d.args_full_len as usize > alen,
                cgroup_id: d.cgroup_id,
            })
        }
        EventKind::Exit => Payload::Exit(record::<ExitData>(buf, &header, kind)?),
        EventKind::Reap => Payload::Reap(record::<ReapData>(buf, &header, kind)?),
        EventKind::Bind => Payload::Bind(record::<SockCallData>(buf, &header, kind)?),
        EventKind::Connect => Payload::Connect(record::<SockCallData>(buf, &header, kind)?),
        EventKind::TcpState => Payload::TcpState(record::<TcpStateData>(buf, &header, kind)?),
        EventKind::Cgroup => {
            let d = record::<CgroupData>(buf, &header, kind)?;
            let n = (d.path_len as usize).min(CGROUP_PATH_LEN);
            Payload::Cgroup(Cgroup {
                id: d.id,
                created: d.op == CGROUP_MKDIR,
                path: cstr(&d.path[..n]),
            })
        }
        EventKind::Signal => Payload::Signal(record::<SignalData>(buf, &header, kind)?),
        EventKind::SockClose => Payload::SockClose(record::<SockCloseData>(buf, &header, kind)?),
    };
    Ok(KernelEvent { header, payload })
}

/// A NUL-terminated (or full) byte array as text, borrowed when it is UTF-8.
fn until_nul(b: &[u8]) -> std::borrow::Cow<'_, str> {
    let end = memchr::memchr(0, b).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end])
}

/// [`cstr`] as shared text: one allocation (a `String` made into an
/// `Arc<str>` was two, and a copy).
fn text(b: &[u8]) -> std::sync::Arc<str> {
    until_nul(b).as_ref().into()
}

/// A NUL-terminated (or full) byte array as text.
pub fn cstr(b: &[u8]) -> String {
    until_nul(b).into_owned()
}

/// The address of a wire record, `None` for families other than IPv4/IPv6.
pub fn ip_addr(family: u16, addr: &[u8; 16]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::from([addr[0], addr[1], addr[2], addr[3]])),
        AF_INET6 => Some(IpAddr::from(*addr)),
        _ => None,
    }
}

/// The bytes of a record exactly as the kernel writes it (for tests, fuzzing and replay benchmarks).
pub fn encode<T: Copy>(ev: &Event<T>) -> Vec<u8> {
    let n = std::mem::size_of::<Event<T>>();
    let mut out = vec![0u8; n];
    // SAFETY: `out` has exactly size_of::<Event<T>>() bytes; write_unaligned needs no alignment.
    unsafe { std::ptr::write_unaligned(out.as_mut_ptr().cast::<Event<T>>(), *ev) };
    out
}

/// The bytes of an exec record as the kernel writes it: the fixed part,
/// then `args` (its `args_len` and the header's size set to match).
pub fn encode_exec(ev: &Event<ExecData>, args: &[u8]) -> Vec<u8> {
    let mut ev = *ev;
    ev.data.args_len = args.len() as u32;
    ev.header.size = (std::mem::size_of::<Event<ExecData>>() + args.len()) as u32;
    let mut out = encode(&ev);
    out.extend_from_slice(args);
    out
}

/// A header for building records in tests and replays.
pub fn header_for<T>(kind: EventKind, ts_ns: u64, pid: u32, tgid: u32, comm: &str) -> Header {
    let mut c = [0u8; 16];
    for (d, s) in c.iter_mut().zip(comm.bytes().take(15)) {
        *d = s;
    }
    Header {
        kind: kind as u32,
        size: std::mem::size_of::<Event<T>>() as u32,
        ts_ns,
        pid,
        tgid,
        uid: 0,
        comm: c,
        ..Default::default()
    }
}

/// One record in a recording: its length (u32, little-endian), then its
/// bytes as the ring held them. (A failed write ends nothing: the
/// recording is a developer's tool, not a sink.)
pub(crate) fn write_recorded(w: &mut impl std::io::Write, record: &[u8]) {
    let _ = w.write_all(&(record.len() as u32).to_le_bytes());
    let _ = w.write_all(record);
}

/// The records of a recording (`WATCHER_RECORD`), in the order they were
/// read; a truncated tail is left out.
pub fn read_recording(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        let Some(record) = tail.get(..len) else { break };
        out.push(record);
        rest = &tail[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_reads_back_record_by_record_without_its_torn_tail() {
        let mut w = Vec::new();
        write_recorded(&mut w, b"first");
        write_recorded(&mut w, b"");
        write_recorded(&mut w, b"third record");
        let whole = read_recording(&w);
        assert_eq!(whole, vec![&b"first"[..], b"", b"third record"]);
        // A recording cut in the middle of a record (a killed watcher).
        let torn = read_recording(&w[..w.len() - 3]);
        assert_eq!(torn, vec![&b"first"[..], b""]);
    }

    fn exec_record(filename: &str, args: &[u8], full: u32) -> Vec<u8> {
        let mut d = ExecData {
            old_pid: 10,
            cgroup_id: 0,
            filename_len: filename.len() as u32,
            args_len: 0,
            args_full_len: full,
            filename: [0; FILENAME_LEN],
        };
        d.filename[..filename.len()].copy_from_slice(filename.as_bytes());
        let ev = Event {
            header: header_for::<ExecData>(EventKind::Exec, 5, 10, 10, "python3"),
            data: d,
        };
        encode_exec(&ev, args)
    }

    fn samples() -> Vec<Vec<u8>> {
        let sock = SockCallData {
            fd: 3,
            ret: -98,
            family: AF_INET,
            port: 8080,
            sock_type: 1,
            addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            scope_id: 0,
            netns: 4026531840,
            skaddr: 0xffff_8880_1234_0000,
            inode: 4242,
            ..Default::default()
        };
        vec![
            encode(&Event {
                header: header_for::<ForkData>(EventKind::Fork, 1, 100, 100, "bash"),
                data: ForkData {
                    child_pid: 101,
                    child_tgid: 101,
                    clone_flags: 0x11,
                    cgroup_id: 0,
                },
            }),
            exec_record("/usr/bin/python3", b"python3\0app.py\0", 15),
            encode(&Event {
                header: header_for::<ExitData>(EventKind::Exit, 2, 101, 101, "python3"),
                data: ExitData {
                    exit_code: 0x300,
                    group_dead: 1,
                    parent_tgid: 0,
                    parent_waiting: 0,
                    cgroup_id: 0,
                    pidns: 0,
                    ns_pid: 0,
                    flags: 0,
                    reaper_tgid: 0,
                },
            }),
            encode(&Event {
                header: header_for::<ReapData>(EventKind::Reap, 3, 100, 100, "bash"),
                data: ReapData {
                    reaped_pid: 101,
                    source: 1,
                },
            }),
            encode(&Event {
                header: header_for::<SockCallData>(EventKind::Bind, 4, 7, 7, "nc"),
                data: sock,
            }),
            encode(&Event {
                header: header_for::<SockCallData>(EventKind::Connect, 4, 7, 7, "nc"),
                data: sock,
            }),
            encode(&Event {
                header: header_for::<TcpStateData>(EventKind::TcpState, 6, 0, 0, "swapper/0"),
                data: TcpStateData {
                    skaddr: 1,
                    old_state: 2,
                    new_state: 7,
                    sport: 40000,
                    dport: 9,
                    family: AF_INET,
                    protocol: 6,
                    saddr: [0; 16],
                    daddr: [0; 16],
                    netns: 4026531840,
                    inode: 0,
                    ..Default::default()
                },
            }),
            encode(&cgroup_event(true, "/docker/abc")),
            encode(&Event {
                header: header_for::<SignalData>(EventKind::Signal, 8, 412, 412, "kill"),
                data: SignalData {
                    target_pid: 101,
                    sig: 9,
                    code: 0,
                    group: 1,
                    source: watcher_common::SIGNAL_GENERATED,
                    ..Default::default()
                },
            }),
            encode(&Event {
                header: header_for::<SockCloseData>(EventKind::SockClose, 9, 0, 0, "swapper/0"),
                data: SockCloseData {
                    skaddr: 0xffff_8880_1234_0000,
                    netns: 4026531840,
                    port: 8080,
                    family: AF_INET,
                    addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                },
            }),
        ]
    }

    fn cgroup_event(created: bool, path: &str) -> Event<CgroupData> {
        let mut d = CgroupData {
            id: 120,
            op: if created {
                CGROUP_MKDIR
            } else {
                watcher_common::CGROUP_RMDIR
            },
            level: 2,
            path_len: path.len() as u32,
            path: [0; CGROUP_PATH_LEN],
            _pad: 0,
        };
        d.path[..path.len()].copy_from_slice(path.as_bytes());
        Event {
            header: header_for::<CgroupData>(EventKind::Cgroup, 7, 900, 900, "runc"),
            data: d,
        }
    }

    #[test]
    fn cgroup_records() {
        let e = decode(&encode(&cgroup_event(true, "/docker/abc"))).unwrap();
        assert_eq!(
            e.payload,
            Payload::Cgroup(Cgroup {
                id: 120,
                created: true,
                path: "/docker/abc".into()
            })
        );
        let mut ev = cgroup_event(false, "/x");
        ev.data.path_len = 9999;
        let Payload::Cgroup(c) = decode(&encode(&ev)).unwrap().payload else {
            panic!("cgroup expected")
        };
        assert!(!c.created);
        assert_eq!(
            c.path, "/x",
            "a length beyond the array is clamped, the string ends at its NUL"
        );
    }

    #[test]
    fn round_trips_every_kind() {
        let kinds: Vec<_> = samples()
            .iter()
            .map(|b| decode(b).expect("decodes").kind())
            .collect();
        assert_eq!(kinds, EventKind::ALL.to_vec());
        let e = decode(&samples()[0]).unwrap();
        assert_eq!(e.header.pid, 100);
        assert_eq!(e.comm(), "bash");
        assert_eq!(
            e.payload,
            Payload::Fork(ForkData {
                child_pid: 101,
                child_tgid: 101,
                clone_flags: 0x11,
                cgroup_id: 0
            })
        );
        match decode(&samples()[4]).unwrap().payload {
            Payload::Bind(s) => {
                assert_eq!((s.port, s.ret, s.fd), (8080, -98, 3));
                assert_eq!(
                    ip_addr(s.family, &s.addr),
                    Some("127.0.0.1".parse().unwrap())
                );
            }
            other => panic!("expected bind, got {other:?}"),
        }
    }

    #[test]
    fn exec_strings() {
        let e = decode(&exec_record("/usr/bin/python3", b"python3\0app.py\0", 15)).unwrap();
        assert_eq!(
            e.payload,
            Payload::Exec(Exec {
                old_pid: 10,
                filename: "/usr/bin/python3".into(),
                argv: crate::kernel::argv::Argv::from_args(["python3", "app.py"]),
                argv_truncated: false,
                cgroup_id: 0,
            })
        );
        // Truncated by the kernel, a filename length larger than its array, invalid UTF-8.
        let mut r = exec_record("x", b"a\xff\0b", 5000);
        r[48 + 4..48 + 8].copy_from_slice(&9999u32.to_le_bytes());
        let e = decode(&r).unwrap();
        let Payload::Exec(x) = e.payload else {
            panic!("exec expected")
        };
        assert!(x.argv_truncated);
        assert_eq!(&*x.filename, "x");
        assert_eq!(x.argv.first().as_deref(), Some("a\u{fffd}"));
    }

    #[test]
    fn an_exec_record_is_as_long_as_its_command_line() {
        // 3 KiB of argv: the record is the fixed part and those bytes, whole.
        let long = format!("gcc\0{}\0", "-Iinclude/x ".repeat(256));
        let r = exec_record("/usr/bin/gcc", long.as_bytes(), long.len() as u32);
        assert_eq!(r.len(), std::mem::size_of::<Event<ExecData>>() + long.len());
        let Payload::Exec(x) = decode(&r).unwrap().payload else {
            panic!("exec expected")
        };
        assert_eq!(x.argv.len(), 2);
        assert_eq!(x.argv.get(1).map(|a| a.len()), Some(12 * 256));
        assert!(!x.argv_truncated);
        // An args_len that disagrees with the record's size, or beyond the
        // most the kernel can write, is refused, never read past the record.
        let mut bad = r.clone();
        bad[48 + 8..48 + 12].copy_from_slice(&(long.len() as u32 + 1).to_le_bytes());
        assert!(matches!(
            decode(&bad),
            Err(DecodeError::SizeMismatch { .. })
        ));
        let mut bad = r.clone();
        bad[48 + 8..48 + 12].copy_from_slice(&(ARGS_MAX as u32 + 1).to_le_bytes());
        assert!(matches!(
            decode(&bad),
            Err(DecodeError::SizeMismatch { .. })
        ));
        // A record cut short of its declared argv is short, not garbage.
        assert!(matches!(
            decode(&r[..r.len() - 1]),
            Err(DecodeError::Short { .. })
        ));
    }

    #[test]
    fn truncated_records_are_errors() {
        for s in samples() {
            for n in 0..s.len() {
                assert!(
                    decode(&s[..n]).is_err(),
                    "a {n}-byte prefix of a {}-byte record decoded",
                    s.len()
                );
            }
        }
    }

    #[test]
    fn unknown_kind_and_bad_size_are_errors() {
        let mut b = samples()[0].clone();
        b[0] = 99;
        assert_eq!(decode(&b), Err(DecodeError::UnknownKind(99)));
        let mut b = samples()[0].clone();
        b[4] = 200;
        assert!(matches!(decode(&b), Err(DecodeError::SizeMismatch { .. })));
    }

    #[test]
    fn random_input_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 1200) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len >= 8 && next() % 2 == 0 {
                // Plausible headers reach the payload decoders.
                let kind = (next() % 9) as u32;
                b[..4].copy_from_slice(&kind.to_le_bytes());
                b[4..8].copy_from_slice(&(len as u32).to_le_bytes());
            }
            let _ = decode(&b);
        }
    }
}
