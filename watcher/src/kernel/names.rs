//! Names for numbers: errno, signals, TCP states.

/// `EADDRINUSE` for 98; `E<n>` for numbers nix does not know.
pub(crate) fn errno_name(errno: i32) -> String {
    let e = nix::errno::Errno::from_raw(errno);
    if e == nix::errno::Errno::UnknownErrno {
        format!("E{errno}")
    } else {
        format!("{e:?}")
    }
}

/// Human text of an errno (`Address already in use`).
pub(crate) fn errno_message(errno: i32) -> &'static str {
    nix::errno::Errno::from_raw(errno).desc()
}

/// `SIGKILL` for 9; `SIG<n>` for real-time and unknown signals.
pub(crate) fn signal_name(sig: u32) -> String {
    match nix::sys::signal::Signal::try_from(sig as i32) {
        Ok(s) => s.as_str().to_owned(),
        Err(_) => format!("SIG{sig}"),
    }
}

/// Kernel TCP state names (include/net/tcp_states.h).
pub(crate) fn tcp_state_name(state: u32) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// Decoded `task_struct.exit_code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// exit(code)
    Code(i32),
    /// Terminated by a signal.
    Signal { signal: u32, core_dumped: bool },
    /// The kernel side could not read it.
    Unknown,
}

impl ExitStatus {
    pub fn from_raw(raw: u32) -> ExitStatus {
        if raw == u32::MAX {
            return ExitStatus::Unknown;
        }
        let sig = raw & 0x7f;
        if sig == 0 {
            ExitStatus::Code(((raw >> 8) & 0xff) as i32)
        } else {
            ExitStatus::Signal {
                signal: sig,
                core_dumped: raw & 0x80 != 0,
            }
        }
    }

    /// A non-zero code or a signal.
    pub fn abnormal(self) -> bool {
        !matches!(self, ExitStatus::Code(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(errno_name(98), "EADDRINUSE");
        assert_eq!(errno_name(99), "EADDRNOTAVAIL");
        assert_eq!(errno_name(115), "EINPROGRESS");
        assert_eq!(errno_name(111), "ECONNREFUSED");
        assert_eq!(errno_name(4095), "E4095");
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(40), "SIG40");
        assert_eq!(tcp_state_name(2), "SYN_SENT");
    }

    #[test]
    fn exit_status_matches_the_kernels_encoding() {
        // Measured on 6.18: exit(3) → 0x300, SIGKILL → 0x9.
        assert_eq!(ExitStatus::from_raw(0x300), ExitStatus::Code(3));
        assert_eq!(
            ExitStatus::from_raw(0x9),
            ExitStatus::Signal {
                signal: 9,
                core_dumped: false
            }
        );
        assert_eq!(
            ExitStatus::from_raw(0x86),
            ExitStatus::Signal {
                signal: 6,
                core_dumped: true
            }
        );
        assert_eq!(ExitStatus::from_raw(0), ExitStatus::Code(0));
        assert_eq!(ExitStatus::from_raw(u32::MAX), ExitStatus::Unknown);
        assert!(!ExitStatus::Code(0).abnormal());
        assert!(ExitStatus::Code(1).abnormal());
    }
}
