//! tracefs: finding (and if needed mounting) it, and parsing tracepoint `format` files.
//!
//! Offsets differ between kernels (e.g. `sched_process_fork`'s comms became
//! `__data_loc` on 6.x), so every offset the kernel programs use is read here
//! at load time.
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use crate::kernel::error::SetupError;

/// Where tracefs is mounted by convention; the first that has `events/` wins.
pub(crate) const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs mount in use, mounting it on `/sys/kernel/tracing` when it is
/// missing (aya caches the lookup, so this must happen before the first attach).
pub(crate) fn ensure_mounted() -> Result<PathBuf, SetupError> {
    if let Some(p) = find() {
        return Ok(p);
    }
    let target = Path::new(CANDIDATES[0]);
    if !target.is_dir() {
        return Err(SetupError::TracefsMissing {
            why: format!("{} does not exist (is sysfs mounted?)", target.display()),
        });
    }
    nix::mount::mount(
        Some("tracefs"),
        target,
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| SetupError::TracefsMissing {
        why: format!("mounting tracefs on {} failed: {e}", target.display()),
    })?;
    find().ok_or_else(|| SetupError::TracefsMissing {
        why: format!(
            "mounted tracefs on {} but it has no events/ directory",
            target.display()
        ),
    })
}

/// The tracefs mount, if one is mounted.
pub(crate) fn find() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// One field of a tracepoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Field {
    pub name: String,
    /// The C declaration without the name, e.g. `pid_t`, `__data_loc char[]`, `char[16]`.
    pub ty: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

/// A parsed `events/<category>/<name>/format` file.
#[derive(Clone, Debug, Default)]
pub(crate) struct Format {
    pub id: Option<u32>,
    pub fields: HashMap<String, Field>,
}

impl Format {
    /// Parse the text of a format file. Lines that are not field lines are ignored.
    pub(crate) fn parse(text: &str) -> Format {
        let mut f = Format::default();
        for line in text.lines() {
            let line = line.trim();
            if let Some(id) = line.strip_prefix("ID:") {
                f.id = id.trim().parse().ok();
                continue;
            }
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            let mut signed = false;
            for part in rest.split(';') {
                let part = part.trim();
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.trim().parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.trim().parse().ok();
                } else if let Some(v) = part.strip_prefix("signed:") {
                    signed = v.trim() == "1";
                } else if decl.is_none() && !part.is_empty() {
                    decl = Some(part.to_owned());
                }
            }
            let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
                continue;
            };
            if let Some((ty, name)) = split_decl(&decl) {
                f.fields.insert(
                    name.clone(),
                    Field {
                        name,
                        ty,
                        offset,
                        size,
                        signed,
                    },
                );
            }
        }
        f
    }

    pub(crate) fn field(&self, name: &str) -> Option<&Field> {
        self.fields.get(name)
    }
}

/// `char comm[16]` → (`char[16]`, `comm`); `__data_loc char[] filename` → (`__data_loc char[]`, `filename`).
fn split_decl(decl: &str) -> Option<(String, String)> {
    let decl = decl.trim();
    let (head, array) = match decl.find('[') {
        // `__data_loc char[] name`: the brackets belong to the type, the name follows.
        Some(i)
            if decl[i..]
                .find(']')
                .map(|j| i + j + 1 == decl.len())
                .unwrap_or(false) =>
        {
            (&decl[..i], &decl[i..])
        }
        _ => (decl, ""),
    };
    let head = head.trim_end();
    let split = head.rfind(|c: char| c.is_whitespace() || c == '*')?;
    let name = head[split + 1..].trim();
    let ty = format!("{}{}", head[..=split].trim(), array);
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    Some((ty, name.to_owned()))
}

/// Read the format of `category/name` from the tracefs at `root`.
pub(crate) fn read_format(root: &Path, category: &str, name: &str) -> Result<Format, SetupError> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = fs::read_to_string(&path).map_err(|e| SetupError::TracepointMissing {
        tracepoint: format!("{category}/{name}"),
        why: format!("{}: {e}", path.display()),
    })?;
    Ok(Format::parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORK_618: &str = "name: sched_process_fork
ID: 312
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;
\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;

print fmt: \"comm=%s pid=%d child_comm=%s child_pid=%d\", __get_str(parent_comm), REC->parent_pid, __get_str(child_comm), REC->child_pid
";

    const FORK_61: &str = "
\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;
\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;
\tfield:struct sockaddr * umyaddr;\toffset:24;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
";

    #[test]
    fn parses_data_loc_fields_of_6_18() {
        let f = Format::parse(FORK_618);
        assert_eq!(f.id, Some(312));
        let c = f.field("child_comm").expect("child_comm");
        assert_eq!(
            (c.offset, c.size, c.ty.as_str()),
            (16, 4, "__data_loc char[]")
        );
        assert_eq!(f.field("child_pid").map(|x| x.offset), Some(20));
        assert_eq!(
            f.field("common_pid").map(|x| (x.offset, x.signed)),
            Some((4, true))
        );
    }

    #[test]
    fn parses_arrays_and_pointers_of_6_1() {
        let f = Format::parse(FORK_61);
        let c = f.field("child_comm").expect("child_comm");
        assert_eq!((c.offset, c.size, c.ty.as_str()), (28, 16, "char[16]"));
        assert_eq!(f.field("child_pid").map(|x| x.offset), Some(44));
        assert_eq!(
            f.field("umyaddr").map(|x| x.ty.as_str()),
            Some("struct sockaddr *")
        );
        assert_eq!(f.field("skaddr").map(|x| x.size), Some(8));
    }

    #[test]
    fn ignores_garbage() {
        let f =
            Format::parse("field:;\nfield:int;offset:x;size:4;\n\u{0}\u{1}field:int a;offset:1;");
        assert!(f.fields.is_empty());
    }
}
