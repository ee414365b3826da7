//! Command lines read from `/proc/<pid>/cmdline`, for processes watcher did
//! not see start (the table's seed at start, a socket's holder). A process
//! that starts while watcher runs has its command line in its exec record:
//! the kernel side copies it from the new program's memory, up to
//! `--args-bytes` (4 KiB by default), and nothing is read from `/proc` for it.

/// What a command line is, when it is not all of it: the argument vector
/// and whether it was cut at [`COMMAND_LINE_MAX`].
pub(crate) type Args = (Vec<String>, bool);

/// Most bytes of a command line read from `/proc` (a local user's 2 MiB
/// argument vector is not read, kept or written whole; what is kept of
/// it says it was cut).
pub(crate) const COMMAND_LINE_MAX: usize = 4096;

/// `/proc/<pid>/cmdline`, at most [`COMMAND_LINE_MAX`] bytes of it.
pub(crate) fn read(pid: u32) -> Option<Args> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
