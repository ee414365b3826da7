//! A real process that does one real thing the tests then expect to see:
//! fork, exec, exit with a code, die by a signal, get reaped in one of several
//! ways, bind, connect. It prints what the test needs to know (pids, ports)
//! as `key=value` lines on stdout.
use std::{
    io::Write,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    os::{
        fd::AsRawFd,
        unix::{ffi::OsStrExt, process::CommandExt},
    },
    process::exit,
    time::{Duration, Instant},
};

use nix::{
    sys::{
        signal::{self, SigHandler, Signal},
        socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6},
        wait::{waitid, waitpid, Id, WaitPidFlag},
    },
    unistd::{fork, ForkResult, Pid},
};

fn say(k: &str, v: impl std::fmt::Display) {
    println!("{k}={v}");
    let _ = std::io::stdout().flush();
}

fn child_exit(code: i32) -> Pid {
    // SAFETY: single-threaded at this point; the child only calls _exit.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => unsafe { libc::_exit(code) },
        ForkResult::Parent { child } => child,
    }
}

/// The fields of `/proc/<pid>/stat` after the command's closing
/// parenthesis (state first, then the parent's pid); none when it is gone.
fn stat_fields(pid: impl std::fmt::Display) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().map(str::to_owned).collect())
        })
        .unwrap_or_default()
}

/// Until `pid` is a zombie (state Z in /proc), 10 s at most.
fn until_zombie(pid: Pid) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = stat_fields(pid).first().and_then(|s| s.chars().next());
        if state == Some('Z') || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Until `pid` is gone from /proc; `limit` at most (none: as long as it
/// takes — the test's own deadline is the limit).
fn wait_gone(pid: Pid, limit: Option<Duration>) {
    let deadline = limit.map(|l| Instant::now() + l);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            deadline.is_none_or(|d| Instant::now() < d),
            "pid {pid} still exists after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn v4(port: u16, a: [u8; 4]) -> SockaddrIn {
    SockaddrIn::from(std::net::SocketAddrV4::new(Ipv4Addr::from(a), port))
}

fn tcp4() -> std::os::fd::OwnedFd {
    socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .expect("socket")
}

fn tcp6() -> std::os::fd::OwnedFd {
    socket::socket(
        AddressFamily::Inet6,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .expect("socket")
}

/// Bring `lo` up in the network namespace this process is in (it must be
/// allowed to: root of the namespace's user namespace).
fn lo_up() {
    // SAFETY: a plain ioctl on a socket with a zeroed, NUL-terminated ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0, "socket");
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        assert_eq!(
            libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req),
            0,
            "SIOCGIFFLAGS"
        );
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(
            libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req),
            0,
            "SIOCSIFFLAGS"
        );
        libc::close(fd);
    }
}

/// A port nobody listens on: bind port 0, note it, close.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `keep-caps N,N,… -- PROG ARGS`: run PROG (as root) with only these
/// capabilities, like `setpriv --bounding-set=-all,+… --inh-caps=-all`:
/// every other one leaves the bounding set, the inheritable set is emptied,
/// and exec gives root exactly the bounding set. Prints nothing (PROG's output
/// is what the caller reads).
fn keep_caps(list: &str, prog: &[String]) -> ! {
    let keep: Vec<u32> = list
        .split(',')
        .map(|c| c.parse().expect("capability numbers, e.g. 2,19,38,39"))
        .collect();
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .expect("cap_last_cap")
        .trim()
        .parse()
        .expect("number");
    for cap in (0..=last).filter(|c| !keep.contains(c)) {
        // SAFETY: prctl with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        assert_eq!(
            r,
            0,
            "PR_CAPBSET_DROP {cap}: {}",
            std::io::Error::last_os_error()
        );
    }
    // capget/capset, version 3 (two 32-bit words per set): clear inheritable.
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: valid header and a two-element data array, as version 3 requires.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()),
            0,
            "capget"
        );
        d[0].inheritable = 0;
        d[1].inheritable = 0;
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()),
            0,
            "capset"
        );
    }
    let err = std::process::Command::new(&prog[0]).args(&prog[1..]).exec();
    panic!("exec {}: {err}", prog[0]);
}

/// Wait `how`: a number of milliseconds, or `stdin` — until a line comes on
/// stdin (or it closes).
fn hold(how: &str) {
    if how == "stdin" {
        let mut buf = String::new();
        let _ = std::io::stdin().read_line(&mut buf);
    } else {
        std::thread::sleep(Duration::from_millis(how.parse().unwrap_or(0)));
    }
}

fn main() {
    // (Lossy: `hostile-names` runs this program with an argv[0] that is not UTF-8.)
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    if arg(1) == "keep-caps" {
        assert_eq!(arg(3), "--", "usage: actor keep-caps N,N,… -- PROG ARGS");
        keep_caps(arg(2), &args[4..]);
    }
    if arg(1) == "as-user" {
        // as-user UID -- PROG ARGS: run PROG as that user (and group), no
        // supplementary groups, no capabilities: a local user.
        assert_eq!(arg(3), "--", "usage: actor as-user UID -- PROG ARGS");
        let id: u32 = arg(2).parse().expect("uid");
        nix::unistd::setgroups(&[]).expect("setgroups");
        nix::unistd::setgid(nix::unistd::Gid::from_raw(id)).expect("setgid");
        nix::unistd::setuid(nix::unistd::Uid::from_raw(id)).expect("setuid");
        let err = std::process::Command::new(&args[4]).args(&args[5..]).exec();
        panic!("exec {}: {err}", args[4]);
    }
    if arg(1) == "named" {
        // named PORT (run by `hostile-names`): a process whose name is
        // hostile binds a port that is held: a port conflict naming it.
        let name = b"\x1b[2J\x1b]0;x\x07\n\xff\xfe";
        // SAFETY: PR_SET_NAME reads a NUL-terminated buffer of at most 16 bytes.
        let mut comm = [0u8; 16];
        comm[..name.len()].copy_from_slice(name);
        unsafe { libc::prctl(libc::PR_SET_NAME, comm.as_ptr()) };
        let port: u16 = arg(2).parse().expect("port");
        say("pid", std::process::id());
        let s = tcp4();
        let e = socket::bind(s.as_raw_fd(), &v4(port, [0, 0, 0, 0])).expect_err("the port is held");
        say("errno", e as i32);
        // Until the test has seen the finding (stdin closes).
        let mut buf = String::new();
        let _ = std::io::stdin().read_line(&mut buf);
        exit(0);
    }
    say("pid", std::process::id());
    match arg(1) {
        "exit" => exit(arg(2).parse().unwrap_or(0)),
        "exec-self" => {
            let me = std::env::current_exe().expect("current_exe");
            let err = exec::execvp(&me, &["actor", "exit", "0", arg(2)]);
            panic!("exec failed: {err}");
        }
        "spawn-exit" => {
            let code: i32 = arg(2).parse().unwrap_or(0);
            let c = child_exit(code);
            say("child", c);
            waitpid(c, None).expect("waitpid");
        }
        "sigkill" => {
            // SAFETY: the child only sleeps.
            let c = match unsafe { fork() }.expect("fork") {
                ForkResult::Child => loop {
                    unsafe { libc::pause() };
                },
                ForkResult::Parent { child } => child,
            };
            say("child", c);
            signal::kill(c, Signal::SIGKILL).expect("kill");
            waitpid(c, None).expect("waitpid");
        }
        "segv" => {
            // A real fault: the kernel sends SIGSEGV (si_code SEGV_MAPERR).
            // SAFETY: deliberately invalid; the process dies here.
            unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
        }
        "waitid" => {
            let c = child_exit(5);
            say("child", c);
            waitid(Id::Pid(c), WaitPidFlag::WEXITED).expect("waitid");
        }
        "ignore-sigchld" => {
            // SAFETY: setting a signal disposition to SIG_IGN.
            unsafe { signal::signal(Signal::SIGCHLD, SigHandler::SigIgn) }.expect("signal");
            let c = child_exit(0);
            say("child", c);
            wait_gone(c, Some(Duration::from_secs(10)));
        }
        "ignored-children" => {
            // ignored-children N: with SIGCHLD ignored, N children that exit
            // at once (the kernel reaps each without a wait); their pids.
            let n: u32 = arg(2).parse().expect("n");
            // SAFETY: setting a signal disposition to SIG_IGN.
            unsafe { signal::signal(Signal::SIGCHLD, SigHandler::SigIgn) }.expect("signal");
            let kids: Vec<String> = (0..n).map(|_| child_exit(0).to_string()).collect();
            // Until every one has ended: one still running when this process
            // exits would pass to init and be reaped by its wait, not by the
            // kernel (under load a child may not have run yet).
            let me = std::process::id().to_string();
            let mine = |pid: &String| stat_fields(pid).get(1) == Some(&me);
            let until = Instant::now() + Duration::from_secs(30);
            while kids.iter().any(mine) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            say("children", kids.join(","));
        }
        "fork-loop" => {
            // N × (fork, child _exit(0), wait4): the classic tracer stress.
            let n: u32 = arg(2).parse().unwrap_or(10_000);
            let t = Instant::now();
            for _ in 0..n {
                let c = child_exit(0);
                waitpid(c, None).expect("waitpid");
            }
            say("elapsed_ns", t.elapsed().as_nanos());
        }
        "syscall-loop" => {
            // syscall-loop N: N × getppid, a system call no tracer follows —
            // what a host's every other system call pays for the tracing.
            let n: u32 = arg(2).parse().unwrap_or(1_000_000);
            let t = Instant::now();
            for _ in 0..n {
                std::hint::black_box(nix::unistd::getppid());
            }
            say("elapsed_ns", t.elapsed().as_nanos());
        }
        "listen-hold" => {
            // listen-hold ADDR PORT [reuseport] [v6only]: listen until stdin closes.
            let ip: std::net::IpAddr = arg(2).parse().expect("addr");
            let port: u16 = arg(3).parse().expect("port");
            let opts = &args[4.min(args.len())..];
            let fam = if ip.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let s = socket::socket(fam, SockType::Stream, SockFlag::empty(), None).expect("socket");
            if opts.iter().any(|o| o == "reuseport") {
                socket::setsockopt(&s, socket::sockopt::ReusePort, &true).expect("SO_REUSEPORT");
            }
            if opts.iter().any(|o| o == "v6only") {
                socket::setsockopt(&s, socket::sockopt::Ipv6V6Only, &true).expect("IPV6_V6ONLY");
            }
            let sa = socket::SockaddrStorage::from(SocketAddr::new(ip, port));
            socket::bind(s.as_raw_fd(), &sa).expect("bind");
            socket::listen(&s, socket::Backlog::new(64).expect("backlog")).expect("listen");
            let bound: socket::SockaddrStorage =
                socket::getsockname(s.as_raw_fd()).expect("getsockname");
            let port = bound
                .as_sockaddr_in()
                .map(|a| a.port())
                .or_else(|| bound.as_sockaddr_in6().map(|a| a.port()))
                .unwrap_or(0);
            say("port", port);
            say("listening", 1);
            let mut buf = String::new();
            let _ = std::io::stdin().read_line(&mut buf);
        }
        "bind-port" => {
            // bind-port PORT [IPV4]: bind 0.0.0.0:PORT (or IPV4:PORT); exit 1 when it is in use.
            let port: u16 = arg(2).parse().expect("port");
            let ip: std::net::Ipv4Addr = if arg(3).is_empty() {
                std::net::Ipv4Addr::UNSPECIFIED
            } else {
                arg(3).parse().expect("IPv4 address")
            };
            let s = tcp4();
            match socket::bind(s.as_raw_fd(), &v4(port, ip.octets())) {
                Ok(()) => say("bound", port),
                Err(e) => {
                    say("errno", e as i32);
                    exit(1);
                }
            }
        }
        "probe-ports" => {
            // probe-ports FROM: bind 127.0.0.1:FROM, FROM+1, … until one is free (as dev servers do), then hold it until stdin closes.
            let mut port: u16 = arg(2).parse().expect("port");
            let s = loop {
                let s = tcp4();
                match socket::bind(s.as_raw_fd(), &v4(port, [127, 0, 0, 1])) {
                    Ok(()) => break s,
                    Err(_) => port += 1,
                }
            };
            socket::listen(&s, socket::Backlog::new(16).expect("backlog")).expect("listen");
            say("bound", port);
            let mut buf = String::new();
            let _ = std::io::stdin().read_line(&mut buf);
        }
        "exhaust" => {
            // exhaust bind|connect N [PORT]: in this network namespace, N binds
            // to 127.0.0.1:0 (or N connects to a listener on 127.0.0.1:PORT),
            // each held; says each errno; on a line from stdin, frees one and
            // tries once more; holds until stdin closes.
            use std::os::unix::fs::MetadataExt as _;
            say(
                "netns",
                std::fs::metadata("/proc/self/ns/net").expect("netns").ino(),
            );
            let connect = arg(2) == "connect";
            let n: u32 = arg(3).parse().expect("n");
            let port: u16 = if connect {
                arg(4).parse().expect("port")
            } else {
                0
            };
            let listener = connect.then(|| {
                let l = tcp4();
                socket::bind(l.as_raw_fd(), &v4(port, [127, 0, 0, 1])).expect("bind the listener");
                socket::listen(&l, socket::Backlog::new(64).expect("backlog")).expect("listen");
                l
            });
            let attempt = || {
                let s = tcp4();
                let r = if connect {
                    socket::connect(s.as_raw_fd(), &v4(port, [127, 0, 0, 1]))
                } else {
                    socket::bind(s.as_raw_fd(), &v4(0, [127, 0, 0, 1]))
                };
                r.map(|()| s)
            };
            let mut held = Vec::new();
            for _ in 0..n {
                match attempt() {
                    Ok(s) => held.push(s),
                    Err(e) => say("errno", e as i32),
                }
            }
            say("held", held.len());
            let mut buf = String::new();
            let _ = std::io::stdin().read_line(&mut buf);
            if !held.is_empty() {
                held.remove(0);
            }
            // A connect's port goes to TIME_WAIT when its side closes first: let the server side close first.
            match attempt() {
                Ok(s) => {
                    held.push(s);
                    say("again", "ok");
                }
                Err(e) => say("again", e as i32),
            }
            let _ = std::io::stdin().read_line(&mut buf);
            drop(listener);
        }
        "zombies" => {
            // zombies N HOLD: N children exit at once; reaped only after
            // HOLD (milliseconds, or `stdin`: when a line comes on stdin or it closes —
            // the test says when, instead of racing a fixed hold), which
            // starts once every child is a zombie: on a loaded machine a
            // child may not have run yet when a fixed hold ends, and a parent
            // reaping children as they exit is what a healthy one does (the
            // bench's loaded phase once saw 995 of 1,000 such samples).
            let n: u32 = arg(2).parse().expect("n");
            let kids: Vec<Pid> = (0..n).map(|_| child_exit(0)).collect();
            for k in &kids {
                until_zombie(*k);
            }
            say(
                "children",
                kids.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            hold(arg(3));
            for k in kids {
                waitpid(k, None).expect("waitpid");
            }
            say("reaped", 1);
        }
        "orphan-zombies" => {
            // orphan-zombies N REAP HOLD_MS: become a child subreaper that
            // ignores SIGCHLD (so the kernel reaps what it inherits, without a
            // wait); a middle child makes N zombies, reaps the first REAP, holds
            // the rest for HOLD (ms, or `stdin`: until a line comes on stdin)
            // and exits without reaping them. Holds until stdin closes.
            let n: u32 = arg(2).parse().expect("n");
            let reap: usize = arg(3).parse().unwrap_or(0);
            let middle_hold = arg(4).to_owned();
            nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
            // SAFETY: setting a signal disposition to SIG_IGN.
            unsafe { signal::signal(Signal::SIGCHLD, SigHandler::SigIgn) }.expect("signal");
            // SAFETY: single-threaded; the child makes zombies and _exits.
            match unsafe { fork() }.expect("fork") {
                ForkResult::Child => {
                    // SAFETY: back to the default, so its own children stay zombies.
                    let _ = unsafe { signal::signal(Signal::SIGCHLD, SigHandler::SigDfl) };
                    let kids: Vec<Pid> = (0..n).map(|_| child_exit(0)).collect();
                    // Each one a zombie before the middle exits.
                    kids.iter().for_each(|k| until_zombie(*k));
                    for k in kids.iter().take(reap) {
                        let _ = waitpid(*k, None);
                    }
                    say("reaped", reap);
                    hold(&middle_hold);
                    unsafe { libc::_exit(0) }
                }
                ForkResult::Parent { child } => {
                    say("middle", child);
                    // The middle holds until the test says (a line on
                    // stdin) or for HOLD: that time is not the kernel's.
                    let limit = middle_hold
                        .parse()
                        .ok()
                        .map(|ms| Duration::from_millis(ms) + Duration::from_secs(10));
                    wait_gone(child, limit);
                    say("orphaned", n);
                }
            }
            let mut buf = String::new();
            let _ = std::io::stdin().read_line(&mut buf);
        }
        "subreaper-orphans" => {
            // subreaper-orphans N: become a child subreaper; a middle child
            // makes N zombies and exits without reaping them, so they pass to
            // this process (not to init), which reaps them when a line comes
            // on stdin.
            let n: u32 = arg(2).parse().expect("n");
            nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
            // SAFETY: single-threaded; the child makes zombies and _exits.
            match unsafe { fork() }.expect("fork") {
                ForkResult::Child => {
                    let kids: Vec<Pid> = (0..n).map(|_| child_exit(0)).collect();
                    // Each one a zombie before the middle exits.
                    kids.iter().for_each(|k| until_zombie(*k));
                    unsafe { libc::_exit(0) }
                }
                ForkResult::Parent { child } => {
                    say("middle", child);
                    waitpid(child, None).expect("waitpid middle");
                    say("orphaned", n);
                    let mut buf = String::new();
                    let _ = std::io::stdin().read_line(&mut buf);
                    let mut reaped = 0;
                    while waitpid(Pid::from_raw(-1), None).is_ok() {
                        reaped += 1;
                    }
                    say("reaped", reaped);
                }
            }
        }
        "supervise" => {
            // supervise N CHILD_MS [TAG]: restart `actor crash CHILD_MS [TAG]`
            // N times, as a naive supervisor does (TAG: another program each time).
            let n: u32 = arg(2).parse().expect("n");
            let me = std::env::current_exe().expect("exe");
            let tag: Vec<String> = std::env::args().skip(4).take(1).collect();
            for _ in 0..n {
                let st = std::process::Command::new(&me)
                    .args(["crash", arg(3)])
                    .args(&tag)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .expect("spawn");
                assert_eq!(st.code(), Some(1));
            }
        }
        "crash" => {
            std::thread::sleep(Duration::from_millis(arg(2).parse().unwrap_or(30)));
            exit(1);
        }
        "sleep-ms" => std::thread::sleep(Duration::from_millis(arg(2).parse().unwrap_or(1000))),
        "copies" => {
            // copies N MS [TAG]: N copies of `actor sleep-ms MS [TAG]` side by
            // side (TAG: another program each time).
            let n: u32 = arg(2).parse().expect("n");
            let me = std::env::current_exe().expect("exe");
            let tag: Vec<String> = std::env::args().skip(4).take(1).collect();
            let mut kids: Vec<std::process::Child> = (0..n)
                .map(|_| {
                    std::process::Command::new(&me)
                        .args(["sleep-ms", arg(3)])
                        .args(&tag)
                        .stdout(std::process::Stdio::null())
                        .spawn()
                        .expect("spawn")
                })
                .collect();
            say(
                "children",
                kids.iter()
                    .map(|c| c.id().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            for k in &mut kids {
                k.wait().expect("wait");
            }
        }
        "fork-fast" => {
            // fork-fast MS RATE: fork RATE children per second for MS milliseconds.
            let ms: u64 = arg(2).parse().expect("ms");
            let rate: u64 = arg(3).parse().expect("rate");
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < Duration::from_millis(ms) {
                let due = start.elapsed().as_micros() as u64 * rate / 1_000_000;
                while n <= due {
                    let c = child_exit(0);
                    waitpid(c, None).expect("waitpid");
                    n += 1;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            say("forks", n);
        }
        "connect-burst" => {
            // connect-burst PORT N: N non-blocking connects to 127.0.0.1:PORT, each waited for.
            let port: u16 = arg(2).parse().expect("port");
            let n: u32 = arg(3).parse().expect("n");
            for _ in 0..n {
                let s = socket::socket(
                    AddressFamily::Inet,
                    SockType::Stream,
                    SockFlag::SOCK_NONBLOCK,
                    None,
                )
                .expect("socket");
                let _ = socket::connect(s.as_raw_fd(), &v4(port, [127, 0, 0, 1]));
                let mut pfd = [nix::poll::PollFd::new(
                    std::os::fd::AsFd::as_fd(&s),
                    nix::poll::PollFlags::POLLOUT,
                )];
                let _ = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(2000u16));
            }
        }
        "connect-ok" => {
            let port: u16 = arg(2).parse().expect("port");
            std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        }
        "serve" => {
            // serve PORT N: accept N connections, or stop once none has come
            // for 2 s (a client that closed before its connection reached a
            // full accept queue is never accepted: waiting for it was a
            // generator that never ended); says how many it accepted.
            let l = TcpListener::bind(("127.0.0.1", arg(2).parse::<u16>().expect("port")))
                .expect("listen");
            socket::setsockopt(
                &l,
                socket::sockopt::ReceiveTimeout,
                &nix::sys::time::TimeVal::new(2, 0),
            )
            .expect("SO_RCVTIMEO");
            say("port", l.local_addr().expect("addr").port());
            let mut accepted = 0u32;
            for _ in 0..arg(3).parse::<u32>().expect("n") {
                match l.accept() {
                    Ok(_) => accepted += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("accept: {e}"),
                }
            }
            say("accepted", accepted);
        }
        "clients" => {
            // clients PORT N: N connections, one after the other.
            let port: u16 = arg(2).parse().expect("port");
            for _ in 0..arg(3).parse::<u32>().expect("n") {
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    match std::net::TcpStream::connect(("127.0.0.1", port)) {
                        Ok(_) => break,
                        Err(e) if Instant::now() < deadline => {
                            let _ = e;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("connect: {e}"),
                    }
                }
            }
        }
        "prefork" => {
            // prefork N MS: a master forking N workers (no exec) that live MS, then reaping them.
            let n: u32 = arg(2).parse().expect("n");
            let ms: u64 = arg(3).parse().expect("ms");
            let mut kids = Vec::new();
            for _ in 0..n {
                // SAFETY: the child only sleeps and _exits.
                match unsafe { fork() }.expect("fork") {
                    ForkResult::Child => {
                        std::thread::sleep(Duration::from_millis(ms));
                        unsafe { libc::_exit(0) }
                    }
                    ForkResult::Parent { child } => kids.push(child),
                }
            }
            for k in kids {
                waitpid(k, None).expect("waitpid");
            }
        }
        "net-loop" => {
            // net-loop N: N × (bind 127.0.0.1:0, a second bind of that port → EADDRINUSE,
            // connect to a closed port → ECONNREFUSED).
            let n: u32 = arg(2).parse().unwrap_or(10_000);
            let closed = closed_port();
            let t = Instant::now();
            for _ in 0..n {
                let a = tcp4();
                socket::bind(a.as_raw_fd(), &v4(0, [127, 0, 0, 1])).expect("bind");
                let bound: SockaddrIn = socket::getsockname(a.as_raw_fd()).expect("getsockname");
                let b = tcp4();
                let _ = socket::bind(b.as_raw_fd(), &v4(bound.port(), [127, 0, 0, 1]));
                let c = tcp4();
                let _ = socket::connect(c.as_raw_fd(), &v4(closed, [127, 0, 0, 1]));
            }
            say("elapsed_ns", t.elapsed().as_nanos());
        }
        "hold-children" => {
            // hold-children N: N children that sleep until stdin closes.
            let n: u32 = arg(2).parse().expect("n");
            let mut kids = Vec::new();
            for _ in 0..n {
                // SAFETY: the child only pauses and _exits.
                match unsafe { fork() }.expect("fork") {
                    ForkResult::Child => {
                        unsafe { libc::pause() };
                        unsafe { libc::_exit(0) }
                    }
                    ForkResult::Parent { child } => kids.push(child),
                }
            }
            say("children", n);
            let mut buf = String::new();
            let _ = std::io::stdin().read_line(&mut buf);
            for k in &kids {
                let _ = signal::kill(*k, Signal::SIGKILL);
            }
            for k in kids {
                let _ = waitpid(k, None);
            }
        }
        "leader-exits-first" => {
            // The leader thread ends first (a bare exit(2), not exit_group), so
            // the process ends only when its other thread does.
            let leader = std::process::id();
            std::thread::spawn(move || {
                let stat = format!("/proc/{leader}/task/{leader}/stat");
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    // The state follows the command name's closing parenthesis.
                    match std::fs::read_to_string(&stat) {
                        Ok(s)
                            if s.rsplit(')')
                                .next()
                                .is_some_and(|r| r.trim_start().starts_with('Z')) =>
                        {
                            break
                        }
                        Err(_) => break,
                        _ => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
                say("tid", unsafe { libc::gettid() });
                unsafe { libc::syscall(libc::SYS_exit, 0) };
            });
            unsafe { libc::syscall(libc::SYS_exit, 0) };
            unreachable!("exit(2) returned");
        }
        "thread" => {
            let t = std::thread::spawn(|| unsafe { libc::gettid() });
            say("tid", t.join().expect("join"));
        }
        "threads-on-line" => {
            // threads-on-line N: say `ready`, wait for a line on stdin, then
            // N threads one after another, each started and joined (a burst
            // from a process already running: no exec to wake anyone).
            let n: u32 = arg(2).parse().expect("n");
            say("ready", 1);
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            for _ in 0..n {
                std::thread::spawn(|| ()).join().expect("join");
            }
            say("done", n);
        }
        "threads" => {
            // threads N: N threads, one after another, each started and joined.
            let n: u32 = arg(2).parse().expect("n");
            for _ in 0..n {
                std::thread::spawn(|| ()).join().expect("join");
            }
        }
        "named-thread-sockets" => {
            // named-thread-sockets NAME: as a local user, in a thread named NAME (and only
            // there: every socket of the process), a bind to 127.0.0.1:0, a second bind of that port (EADDRINUSE) and a
            // connect to a closed port (ECONNREFUSED); every socket closed
            // before the thread ends. Prints the thread's id.
            let name = arg(2).to_owned();
            // Run by root: first a local user whose ids all differ — real
            // uid 65534, effective and saved 65533, groups 65532 — so a
            // record's uid that is not the real one shows.
            use nix::unistd::{Gid, Uid};
            nix::unistd::setgroups(&[]).expect("setgroups");
            let g = Gid::from_raw(65532);
            nix::unistd::setresgid(g, g, g).expect("setresgid");
            let e = Uid::from_raw(65533);
            nix::unistd::setresuid(Uid::from_raw(65534), e, e).expect("setresuid");
            let tid = std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    let closed = closed_port();
                    let a = tcp4();
                    socket::bind(a.as_raw_fd(), &v4(0, [127, 0, 0, 1])).expect("bind");
                    let bound: SockaddrIn =
                        socket::getsockname(a.as_raw_fd()).expect("getsockname");
                    let b = tcp4();
                    let _ = socket::bind(b.as_raw_fd(), &v4(bound.port(), [127, 0, 0, 1]));
                    let c = tcp4();
                    let _ = socket::connect(c.as_raw_fd(), &v4(closed, [127, 0, 0, 1]));
                    say("port", bound.port());
                    nix::unistd::gettid().as_raw()
                })
                .expect("thread")
                .join()
                .expect("join");
            say("tid", tid);
        }
        "bind4" => {
            let s = tcp4();
            socket::bind(s.as_raw_fd(), &v4(0, [127, 0, 0, 1])).expect("bind");
            let a: SockaddrIn = socket::getsockname(s.as_raw_fd()).expect("getsockname");
            say("port", a.port());
        }
        "bind6" => {
            let s = tcp6();
            let a = SockaddrIn6::from(std::net::SocketAddrV6::new(
                std::net::Ipv6Addr::LOCALHOST,
                0,
                0,
                0,
            ));
            socket::bind(s.as_raw_fd(), &a).expect("bind ::1");
            let a: SockaddrIn6 = socket::getsockname(s.as_raw_fd()).expect("getsockname");
            say("port", a.port());
        }
        "addrinuse" => {
            let l = TcpListener::bind("127.0.0.1:0").expect("listen");
            let port = l.local_addr().expect("addr").port();
            say("port", port);
            let s = tcp4();
            let e = socket::bind(s.as_raw_fd(), &v4(port, [127, 0, 0, 1]))
                .expect_err("second bind must fail");
            say("errno", e as i32);
        }
        "addrinuse-repeat" => {
            // addrinuse-repeat N MS: N failed binds (EADDRINUSE), MS apart,
            // from one process (no process start between them).
            let n: u32 = arg(2).parse().unwrap_or(3);
            let ms: u64 = arg(3).parse().unwrap_or(300);
            let l = TcpListener::bind("127.0.0.1:0").expect("listen");
            let port = l.local_addr().expect("addr").port();
            say("port", port);
            for k in 0..n {
                if k > 0 {
                    std::thread::sleep(Duration::from_millis(ms));
                }
                let s = tcp4();
                let _ = socket::bind(s.as_raw_fd(), &v4(port, [127, 0, 0, 1]))
                    .expect_err("second bind must fail");
            }
        }
        "notavail" => {
            // notavail [ADDR]: 192.0.2.1 (TEST-NET-1, on no host) unless
            // another is given (IPv4 or IPv6: 2001:db8::/32 is on no host
            // either): EADDRNOTAVAIL. Nothing is sent.
            let a: std::net::IpAddr = std::env::args()
                .nth(2)
                .map(|a| a.parse().expect("an IP address"))
                .unwrap_or(Ipv4Addr::new(192, 0, 2, 1).into());
            let e = match a {
                std::net::IpAddr::V4(a) => {
                    let s = tcp4();
                    socket::bind(s.as_raw_fd(), &v4(4242, a.octets()))
                }
                std::net::IpAddr::V6(a) => {
                    let s = tcp6();
                    let at = SockaddrIn6::from(std::net::SocketAddrV6::new(a, 4242, 0, 0));
                    socket::bind(s.as_raw_fd(), &at)
                }
            }
            .expect_err("bind must fail");
            say("errno", e as i32);
        }
        "connect-refused" => {
            let port = closed_port();
            say("port", port);
            let s = tcp4();
            let e = socket::connect(s.as_raw_fd(), &v4(port, [127, 0, 0, 1]))
                .expect_err("connect must fail");
            say("errno", e as i32);
        }
        "connect-nonblocking" => {
            let port = closed_port();
            say("port", port);
            let s = socket::socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK,
                None,
            )
            .expect("socket");
            let e =
                socket::connect(s.as_raw_fd(), &v4(port, [127, 0, 0, 1])).expect_err("EINPROGRESS");
            say("errno", e as i32);
            // The local port names this attempt: another actor may pick the
            // same closed port at the same time.
            let local: socket::SockaddrIn =
                socket::getsockname(s.as_raw_fd()).expect("getsockname");
            say("source", local.port());
            // Wait for the outcome (refused) so the state change happens while we live.
            let mut pfd = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&s),
                nix::poll::PollFlags::POLLOUT,
            )];
            let _ = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(5000u16));
        }
        "hostile-names" => {
            // hostile-names PORT: exec this program as `named PORT` with an
            // argv[0] of 4 KiB holding terminal escapes, control characters
            // and bytes that are not UTF-8, and a name (comm) of the same kind.
            let mut zero: Vec<u8> = b"\x1b[31mred\x1b[0m\r\n\x07\x08\xc3\x28\xff".to_vec();
            zero.extend(std::iter::repeat_n(b'A', 4096 - zero.len()));
            let me = std::env::current_exe().expect("own path");
            let err = std::process::Command::new(me)
                .arg0(std::ffi::OsStr::from_bytes(&zero))
                .args(["named", arg(2)])
                .exec();
            panic!("exec: {err}");
        }
        "exec-flood" => {
            // exec-flood N BYTES ALIVE: N programs exec'd with a command line
            // of BYTES (one argument; at most 128 KiB, the kernel's limit for
            // one); the first ALIVE of them live 300 ms (`sh -c 'sleep 0.3'`,
            // the long argument its $0), the rest are /bin/true.
            let n: u32 = arg(2).parse().expect("n");
            let bytes: usize = arg(3).parse().expect("bytes");
            let alive: u32 = arg(4).parse().unwrap_or(0);
            let big = std::ffi::CString::new("z".repeat(bytes.min(128 * 1024 - 1))).expect("arg");
            let sh = std::ffi::CString::new("/bin/sh").expect("sh");
            let tru = std::ffi::CString::new("/bin/true").expect("true");
            let c = std::ffi::CString::new("-c").expect("c");
            let sleep = std::ffi::CString::new("sleep 0.3").expect("sleep");
            say("flooding", 1);
            let t = Instant::now();
            let mut kids = Vec::new();
            for i in 0..n {
                // SAFETY: single-threaded; the child only execs or _exits.
                match unsafe { fork() }.expect("fork") {
                    ForkResult::Child => {
                        if i < alive {
                            let _ = nix::unistd::execv(
                                &sh,
                                &[sh.clone(), c.clone(), sleep.clone(), big.clone()],
                            );
                        } else {
                            let _ = nix::unistd::execv(&tru, &[tru.clone(), big.clone()]);
                        }
                        unsafe { libc::_exit(127) }
                    }
                    ForkResult::Parent { child } => {
                        if i < alive {
                            kids.push(child);
                        } else {
                            waitpid(child, None).expect("waitpid");
                        }
                    }
                }
            }
            for k in kids {
                waitpid(k, None).expect("waitpid");
            }
            say("execs", n);
            say("elapsed_ns", t.elapsed().as_nanos());
        }
        "netns-flood" => {
            // netns-flood N BATCH (as a local user): N network namespaces,
            // each made in a user namespace of its own, BATCH alive at once;
            // in each, a listener on 0.0.0.0:4000, a second bind of that port
            // (EADDRINUSE) and a connect to 127.0.0.1:4001 (lo is down: it fails).
            let n: u32 = arg(2).parse().expect("n");
            let batch: u32 = arg(3).parse().unwrap_or(500);
            say("flooding", 1);
            let t = Instant::now();
            let mut made = 0;
            let mut failed_binds = 0;
            while made < n {
                let (release_r, release_w) = nix::unistd::pipe().expect("pipe");
                let (done_r, done_w) = nix::unistd::pipe().expect("pipe");
                let mut kids = Vec::new();
                for _ in 0..batch.min(n - made) {
                    // SAFETY: single-threaded; the child makes its namespaces, binds, waits, _exits.
                    match unsafe { fork() }.expect("fork") {
                        ForkResult::Child => {
                            drop(release_w);
                            drop(done_r);
                            let ok = nix::sched::unshare(
                                nix::sched::CloneFlags::CLONE_NEWUSER
                                    | nix::sched::CloneFlags::CLONE_NEWNET,
                            )
                            .is_ok();
                            let mut r = 0u8;
                            if ok {
                                let a = tcp4();
                                let _ = socket::setsockopt(&a, socket::sockopt::ReuseAddr, &true);
                                let _ = socket::bind(a.as_raw_fd(), &v4(4000, [0, 0, 0, 0]));
                                let _ =
                                    socket::listen(&a, socket::Backlog::new(1).expect("backlog"));
                                let b = tcp4();
                                if socket::bind(b.as_raw_fd(), &v4(4000, [0, 0, 0, 0])).is_err() {
                                    r = 1;
                                }
                                let c = tcp4();
                                let _ = socket::connect(c.as_raw_fd(), &v4(4001, [127, 0, 0, 1]));
                                let _ = nix::unistd::write(&done_w, &[r]);
                                let mut buf = [0u8; 1];
                                let _ = nix::unistd::read(release_r.as_raw_fd(), &mut buf);
                                unsafe { libc::_exit(0) }
                            }
                            let _ = nix::unistd::write(&done_w, &[2]);
                            unsafe { libc::_exit(1) }
                        }
                        ForkResult::Parent { child } => kids.push(child),
                    }
                }
                drop(done_w);
                drop(release_r);
                // Each child says when it has bound; all are released together.
                let mut buf = [0u8; 1];
                for _ in 0..kids.len() {
                    match nix::unistd::read(done_r.as_raw_fd(), &mut buf) {
                        Ok(1) if buf[0] == 1 => failed_binds += 1,
                        Ok(1) if buf[0] == 2 => {
                            panic!("unshare(CLONE_NEWUSER|CLONE_NEWNET) refused")
                        }
                        _ => {}
                    }
                }
                drop(release_w);
                for k in &kids {
                    waitpid(*k, None).expect("waitpid");
                }
                made += kids.len() as u32;
            }
            say("namespaces", made);
            say("failed_binds", failed_binds);
            say("elapsed_ns", t.elapsed().as_nanos());
        }
        "port-flood" => {
            // port-flood N (as a local user): N distinct ports whose second
            // bind fails (EADDRINUSE), in namespaces of its own (user + net),
            // 60,000 ports each.
            let n: u32 = arg(2).parse().expect("n");
            say("flooding", 1);
            let t = Instant::now();
            let mut done = 0u32;
            while done < n {
                let chunk = (n - done).min(60_000);
                // SAFETY: single-threaded; the child works in its namespaces and _exits.
                match unsafe { fork() }.expect("fork") {
                    ForkResult::Child => {
                        nix::sched::unshare(
                            nix::sched::CloneFlags::CLONE_NEWUSER
                                | nix::sched::CloneFlags::CLONE_NEWNET,
                        )
                        .expect("unshare(CLONE_NEWUSER|CLONE_NEWNET)");
                        let mut failed = 0u32;
                        for port in (1024..=65535u16).take(chunk as usize) {
                            let a = tcp4();
                            if socket::bind(a.as_raw_fd(), &v4(port, [0, 0, 0, 0])).is_err() {
                                continue;
                            }
                            let b = tcp4();
                            if socket::bind(b.as_raw_fd(), &v4(port, [0, 0, 0, 0])).is_err() {
                                failed += 1;
                            }
                        }
                        unsafe { libc::_exit(if failed == chunk { 0 } else { 1 }) }
                    }
                    ForkResult::Parent { child } => {
                        let st = waitpid(child, None).expect("waitpid");
                        assert!(
                            matches!(st, nix::sys::wait::WaitStatus::Exited(_, 0)),
                            "the port flood's child: {st:?}"
                        );
                    }
                }
                done += chunk;
            }
            say("failed_binds", done);
            say("elapsed_ns", t.elapsed().as_nanos());
        }
        "refused-flood" => {
            // refused-flood N (as a local user): connects to N distinct
            // destinations (127.0.0.1–127.0.0.2, every port from 1) that
            // nobody listens on, in a namespace of its own with lo up: each refused.
            let n: u32 = arg(2).parse().expect("n");
            nix::sched::unshare(
                nix::sched::CloneFlags::CLONE_NEWUSER | nix::sched::CloneFlags::CLONE_NEWNET,
            )
            .expect("unshare(CLONE_NEWUSER|CLONE_NEWNET)");
            lo_up();
            say("flooding", 1);
            let t = Instant::now();
            let mut refused = 0u32;
            'all: for host in [1u8, 2] {
                for port in 1..=65535u16 {
                    if refused >= n {
                        break 'all;
                    }
                    let c = tcp4();
                    if socket::connect(c.as_raw_fd(), &v4(port, [127, 0, 0, host]))
                        == Err(nix::errno::Errno::ECONNREFUSED)
                    {
                        refused += 1;
                    }
                }
            }
            say("refused", refused);
            say("elapsed_ns", t.elapsed().as_nanos());
        }
        "fork-bomb" => {
            // fork-bomb MS: a fork bomb that outlives its limit for MS
            // milliseconds. A grower forks workers for as long as the bomb
            // lasts (a refused fork, EAGAIN, is tried again); each worker
            // forks and exits (its child goes on as a worker), so processes
            // come and go as fast as the cgroup's pids limit lets them. A
            // worker refused a fork exits instead: workers that all waited for
            // a free pid would hold every pid of the limit and stall the bomb.
            // This process (a container's init) reaps the orphans.
            let ms: u64 = arg(2).parse().unwrap_or(5000);
            let end = Instant::now() + Duration::from_millis(ms);
            let worker = move || -> ! {
                while Instant::now() < end {
                    // SAFETY: single-threaded; the bomb's processes only fork and _exit.
                    match unsafe { fork() } {
                        Ok(ForkResult::Child) => {}
                        Ok(ForkResult::Parent { .. }) | Err(_) => unsafe { libc::_exit(0) },
                    }
                }
                unsafe { libc::_exit(0) }
            };
            // SAFETY: as above.
            match unsafe { fork() }.expect("fork") {
                ForkResult::Child => {
                    // The grower's children are reaped by the kernel (SIGCHLD
                    // ignored): waited for by nobody, they would hold the
                    // limit's pids as zombies.
                    // SAFETY: setting a disposition, no handler.
                    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
                    while Instant::now() < end {
                        match unsafe { fork() } {
                            Ok(ForkResult::Child) => worker(),
                            Ok(ForkResult::Parent { .. }) => {}
                            Err(_) => std::thread::yield_now(),
                        }
                    }
                    unsafe { libc::_exit(0) }
                }
                ForkResult::Parent { .. } => {
                    say("bombing", ms);
                    while Instant::now() < end + Duration::from_secs(1) {
                        if waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)).is_err() {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    // What is left: reaped until none is.
                    while waitpid(Pid::from_raw(-1), None).is_ok() {}
                }
            }
        }
        "bound-hold" => {
            // bound-hold: bind 127.0.0.1:0 (the kernel picks the port), never
            // listen; hold it until stdin closes.
            let s = tcp4();
            socket::bind(s.as_raw_fd(), &v4(0, [127, 0, 0, 1])).expect("bind");
            let bound: SockaddrIn = socket::getsockname(s.as_raw_fd()).expect("getsockname");
            say("port", bound.port());
            let mut buf = String::new();
            let _ = std::io::stdin().read_line(&mut buf);
        }
        "linger-hold" => {
            // linger-hold: bind a socket to a free 127.0.0.1 port (asked by
            // number), connect it to a listener of its own and close it first
            // (its port stays in TIME_WAIT, no socket of this process holds
            // it), then stay alive until stdin closes.
            let port = {
                let probe = tcp4();
                socket::bind(probe.as_raw_fd(), &v4(0, [127, 0, 0, 1])).expect("bind");
                let a: SockaddrIn = socket::getsockname(probe.as_raw_fd()).expect("getsockname");
                a.port()
            };
            let l = TcpListener::bind("127.0.0.1:0").expect("listen");
            let c = tcp4();
            socket::bind(c.as_raw_fd(), &v4(port, [127, 0, 0, 1])).expect("bind the asked port");
            let to = l.local_addr().expect("addr").port();
            socket::connect(c.as_raw_fd(), &v4(to, [127, 0, 0, 1])).expect("connect");
            let (mut srv, _) = l.accept().expect("accept");
            drop(c);
            // The server reads the client's FIN, then closes: the client's
            // side goes to TIME_WAIT.
            let mut rest = Vec::new();
            let _ = std::io::Read::read_to_end(&mut srv, &mut rest);
            drop(srv);
            // (Said once the kernel lists the port in TIME_WAIT: the client's
            // socket itself is gone by then.)
            let local = format!("0100007F:{port:04X}");
            let time_wait = || {
                std::fs::read_to_string("/proc/net/tcp")
                    .unwrap_or_default()
                    .lines()
                    .any(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"06")
                    })
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while !time_wait() {
                assert!(Instant::now() < deadline, "no TIME_WAIT on port {port}");
                std::thread::sleep(Duration::from_millis(5));
            }
            say("port", port);
            let mut buf = String::new();
            let _ = std::io::stdin().read_line(&mut buf);
        }
        "listen-port" => {
            let port: u16 = arg(2).parse().expect("port");
            let l = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).expect("listen");
            say("port", l.local_addr().expect("addr").port());
        }
        other => {
            eprintln!("actor: unknown action `{other}`");
            exit(2);
        }
    }
}

mod exec {
    use std::{ffi::CString, os::unix::ffi::OsStrExt, path::Path};

    pub fn execvp(path: &Path, argv: &[&str]) -> nix::Error {
        let p = CString::new(path.as_os_str().as_bytes()).expect("path");
        let a: Vec<CString> = argv
            .iter()
            .map(|s| CString::new(*s).expect("arg"))
            .collect();
        nix::unistd::execv(&p, &a).expect_err("execv returns only on error")
    }
}
