//! Whole command lines. The kernel side copies the first 512 bytes of a new
//! program's argument vector into its exec record; when that was not all,
//! the rest is read from `/proc/<pid>/cmdline` by a thread of its own (the
//! detectors' thread only waits a short deadline for it), so that two
//! programs whose command lines differ after 512 bytes (`java -cp <long
//! classpath> A` and `… B`) are two programs. An answer that does not begin
//! with what the kernel captured (the process exec'd again, or exited and its
//! pid was reused) is not used.
use std::{
    sync::mpsc::{sync_channel, Receiver, SyncSender},
    time::Duration,
};

/// What a command line is, when it is not all of it: the argument vector
/// and whether it was cut at [`COMMAND_LINE_MAX`].
pub type Args = (Vec<String>, bool);

type Question = (u32, SyncSender<Option<Args>>);

/// Most bytes of a command line read from `/proc` (a local user's 2 MiB
/// argument vector is not read, kept or written whole; what is kept of
/// it says it was cut).
pub const COMMAND_LINE_MAX: usize = 4096;

pub struct Cmdlines {
    tx: Option<SyncSender<Question>>,
    wait: Duration,
    /// Command lines completed from `/proc`, and those that could not be.
    pub completed: u64,
    pub failed: u64,
}

/// `/proc/<pid>/cmdline`, at most [`COMMAND_LINE_MAX`] bytes of it.
pub fn read(pid: u32) -> Option<Args> {
    use std::io::Read as _;
    let mut raw = Vec::with_capacity(1024);
    std::fs::File::open(format!("/proc/{pid}/cmdline"))
        .ok()?
        .take(COMMAND_LINE_MAX as u64 + 1)
        .read_to_end(&mut raw)
        .ok()?;
    let cut = raw.len() > COMMAND_LINE_MAX;
    raw.truncate(COMMAND_LINE_MAX);
    let raw = raw.strip_suffix(&[0]).unwrap_or(&raw);
    if raw.is_empty() {
        return None;
    }
    Some((
        raw.split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
        cut,
    ))
}

fn serve(rx: Receiver<Question>) {
    while let Ok((pid, reply)) = rx.recv() {
        let _ = reply.try_send(read(pid));
    }
}

/// Whether `full` begins with the kernel's truncated capture (whose last
/// argument may be cut short).
pub fn extends(full: &[String], captured: &[String]) -> bool {
    let Some((last, whole)) = captured.split_last() else {
        return !full.is_empty();
    };
    full.len() >= captured.len()
        && full[..whole.len()] == *whole
        && full[whole.len()].starts_with(last.as_str())
}

impl Cmdlines {
    pub fn new(wait: Duration) -> Cmdlines {
        let (tx, rx) = sync_channel::<Question>(64);
        let tx = std::thread::Builder::new()
            .name("watcher-cmdline".into())
            .spawn(move || serve(rx))
            .ok()
            .map(|_| tx);
        Cmdlines {
            tx,
            wait,
            completed: 0,
            failed: 0,
        }
    }

    /// The whole argument vector of `pid`, whose exec record captured
    /// `captured` (truncated); `None` when it cannot be had within the wait.
    pub fn complete(&mut self, pid: u32, captured: &[String]) -> Option<Args> {
        let answer = (|| {
            let (reply, rx) = sync_channel(1);
            self.tx.as_ref()?.try_send((pid, reply)).ok()?;
            rx.recv_timeout(self.wait).ok().flatten()
        })()
        .filter(|(full, _)| extends(full, captured));
        match &answer {
            Some(_) => self.completed += 1,
            None => self.failed += 1,
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rest_of_a_long_command_line_comes_from_proc() {
        let long = format!("{}A", "x".repeat(600));
        // (The long argument is the shell's $0: it runs `sleep 5`.)
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5", &long])
            .spawn()
            .expect("sh");
        // Until its exec is done (the forked child runs this test's binary before).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while read(child.id()).is_none_or(|(a, _)| a[0] != "sh") {
            assert!(std::time::Instant::now() < deadline, "sh did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        // What the kernel would have captured: 512 bytes, the last argument cut.
        let captured = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "sleep 5".to_owned(),
            "x".repeat(497),
        ];
        let mut c = Cmdlines::new(Duration::from_secs(2));
        let (full, cut) = c.complete(child.id(), &captured).expect("read from /proc");
        assert_eq!(
            full,
            vec!["sh".to_owned(), "-c".to_owned(), "sleep 5".to_owned(), long]
        );
        assert!(!cut);
        // Another program's command line is not taken for this one.
        assert!(c
            .complete(child.id(), &["python3".to_owned(), "x".to_owned()])
            .is_none());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!((c.completed, c.failed), (1, 1));
    }

    #[test]
    fn a_huge_command_line_is_read_only_up_to_the_cap() {
        // 100 KiB in one argument: what is read stops at the cap, and says so.
        let huge = "y".repeat(100 * 1024);
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5", &huge])
            .spawn()
            .expect("sh");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let (args, cut) = loop {
            match read(child.id()) {
                Some((a, cut)) if a[0] == "sh" => break (a, cut),
                _ => {}
            }
            assert!(std::time::Instant::now() < deadline, "sh did not start");
            std::thread::sleep(Duration::from_millis(5));
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(cut);
        let bytes: usize = args.iter().map(|a| a.len() + 1).sum();
        assert!(bytes <= COMMAND_LINE_MAX + 1, "{bytes} bytes kept");
        assert_eq!(args[..3], ["sh", "-c", "sleep 5"]);
        assert!(args[3].starts_with("yyyy"));
    }
}
