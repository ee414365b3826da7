//! An argument vector as the kernel hands it over at exec (and `/proc`
//! shows it): its bytes, the arguments separated by NUL. One allocation per
//! exec, shared by the process table, split and read as text only where it
//! is read — an exec with a 3 KB command line had ~30 % of the pipeline's
//! time in splitting it into a checked `String` per argument (the split,
//! the UTF-8 checks, the allocations and copies), for detectors that only
//! hash it and records that are rarely written.
use std::{borrow::Cow, sync::Arc};

/// An argument vector (none: no arguments), as bytes: read as text (lossy)
/// only where it is shown; hashed as it is.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Argv(Option<Arc<[u8]>>);

impl Argv {
    /// From the bytes the kernel copied from `arg_start..arg_end` (or
    /// `/proc/<pid>/cmdline`): arguments each ended by a NUL (the last
    /// one's may be missing).
    pub fn from_bytes(b: &[u8]) -> Argv {
        let b = b.strip_suffix(&[0]).unwrap_or(b);
        Argv((!b.is_empty()).then(|| b.into()))
    }

    /// From arguments (none of them holding a NUL).
    pub fn from_args<S: AsRef<str>>(args: impl IntoIterator<Item = S>) -> Argv {
        let mut text = Vec::new();
        for (i, a) in args.into_iter().enumerate() {
            if i > 0 {
                text.push(0);
            }
            text.extend_from_slice(a.as_ref().as_bytes());
        }
        Argv((!text.is_empty()).then(|| text.into()))
    }

    /// The arguments' bytes, in order.
    pub fn raw(&self) -> impl Iterator<Item = &[u8]> + Clone {
        // (Split with memchr, word- or SIMD-wide, not a byte at a time.)
        let mut rest = self.0.as_deref();
        std::iter::from_fn(move || {
            let t = rest?;
            match memchr::memchr(0, t) {
                Some(i) => {
                    rest = Some(&t[i + 1..]);
                    Some(&t[..i])
                }
                None => {
                    rest = None;
                    Some(t)
                }
            }
        })
    }

    /// The arguments as text (what is not UTF-8 replaced by U+FFFD).
    pub fn iter(&self) -> impl Iterator<Item = Cow<'_, str>> + Clone {
        self.raw().map(String::from_utf8_lossy)
    }

    /// `argv[0]`: how the program was called.
    pub fn first(&self) -> Option<Cow<'_, str>> {
        self.iter().next()
    }

    /// `argv[i]`.
    pub fn get(&self, i: usize) -> Option<Cow<'_, str>> {
        self.iter().nth(i)
    }

    pub fn len(&self) -> usize {
        self.0
            .as_deref()
            .map_or(0, |t| memchr::memchr_iter(0, t).count() + 1)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The arguments joined by spaces (a command line to read).
    pub fn joined(&self) -> String {
        self.0
            .as_deref()
            .map(|t| String::from_utf8_lossy(t).replace('\0', " "))
            .unwrap_or_default()
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(Cow::into_owned).collect()
    }
}

impl std::fmt::Debug for Argv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Argv;

    #[test]
    fn an_argument_vector_reads_as_the_kernel_separates_it() {
        // (What a split into one `String` per argument gave.)
        let old = |a: &[u8]| -> Vec<String> {
            let a = a.strip_suffix(&[0]).unwrap_or(a);
            if a.is_empty() {
                return Vec::new();
            }
            a.split(|&b| b == 0)
                .map(|x| String::from_utf8_lossy(x).into_owned())
                .collect()
        };
        for a in [
            &b"sh"[..],
            b"sh\0-c\0sleep 1\0",
            b"sh\0-c\0sleep 1",
            b"a\0\0b",
            b"\0",
            b"\0\0",
            b"x\0",
            b"caf\xc3\xa9\0\xff\xfe",
            b"",
        ] {
            let v = Argv::from_bytes(a);
            let want = old(a);
            assert_eq!(v.to_vec(), want, "{a:?}");
            assert_eq!(v.len(), want.len(), "{a:?}");
            assert_eq!(v.is_empty(), want.is_empty(), "{a:?}");
            assert_eq!(
                v.first().as_deref(),
                want.first().map(|s| s.as_str()),
                "{a:?}"
            );
            assert_eq!(
                v.get(1).as_deref(),
                want.get(1).map(|s| s.as_str()),
                "{a:?}"
            );
            assert_eq!(v.joined(), want.join(" "), "{a:?}");
            if std::str::from_utf8(a).is_ok() {
                assert_eq!(Argv::from_args(&want), v, "{a:?}");
            }
        }
    }
}
