//! A small reader of kernel BTF (`/sys/kernel/btf/vmlinux`): just enough to
//! find the byte offset of a struct member, following anonymous structs and
//! unions. aya-obj parses BTF too but keeps its type accessors crate-private.
//!
//! Format: Documentation/bpf/btf.rst (header, type section, string section).
use std::collections::HashMap;

use crate::kernel::error::SetupError;

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Offset in bits.
    bit_offset: u32,
    /// Bitfield size in bits (0: not a bitfield).
    bitfield_size: u32,
}

#[derive(Clone, Debug)]
struct Type {
    name_off: u32,
    kind: u32,
    /// Size (struct/union/int) or referenced type id (ptr/typedef/modifiers).
    size_or_type: u32,
    members: Vec<Member>,
    /// Parameters of a function prototype.
    params: u32,
}

/// Parsed BTF: types by id (index 0 is `void`) and the string section.
pub(crate) struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    by_name: HashMap<String, Vec<u32>>,
    /// The typedefs `btf_trace_<tracepoint>`: a raw tracepoint's prototype.
    raw_tracepoints: HashMap<String, u32>,
}

fn err(why: impl Into<String>) -> SetupError {
    SetupError::Btf { why: why.into() }
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, SetupError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| err(format!("truncated at byte {at}")))
}

impl Btf {
    /// Read the running kernel's BTF.
    pub(crate) fn from_sys_fs() -> Result<Btf, SetupError> {
        const PATH: &str = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(PATH).map_err(|e| {
            err(format!(
                "cannot read {PATH}: {e} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)"
            ))
        })?;
        Btf::parse(&data)
    }

    /// Parse little-endian BTF bytes. Never panics on malformed input.
    pub(crate) fn parse(data: &[u8]) -> Result<Btf, SetupError> {
        if data.len() < 24 {
            return Err(err("shorter than a BTF header"));
        }
        let magic = u16::from_le_bytes([data[0], data[1]]);
        if magic != MAGIC {
            return Err(err(format!("bad magic {magic:#x} (not little-endian BTF)")));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_start = hdr_len
            .checked_add(type_off)
            .ok_or_else(|| err("type offset overflows"))?;
        let types_end = types_start
            .checked_add(type_len)
            .ok_or_else(|| err("type length overflows"))?;
        let str_start = hdr_len
            .checked_add(str_off)
            .ok_or_else(|| err("string offset overflows"))?;
        let str_end = str_start
            .checked_add(str_len)
            .ok_or_else(|| err("string length overflows"))?;
        let tsec = data
            .get(types_start..types_end)
            .ok_or_else(|| err("type section out of bounds"))?;
        let strings = data
            .get(str_start..str_end)
            .ok_or_else(|| err("string section out of bounds"))?
            .to_vec();

        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            size_or_type: 0,
            members: Vec::new(),
            params: 0,
        }];
        let mut at = 0usize;
        while at < tsec.len() {
            let name_off = u32_at(tsec, at)?;
            let info = u32_at(tsec, at + 4)?;
            let size_or_type = u32_at(tsec, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let off = u32_at(tsec, m + 8)?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (off & 0x00ff_ffff, off >> 24)
                        } else {
                            (off, 0)
                        };
                        members.push(Member {
                            name_off: u32_at(tsec, m)?,
                            type_id: u32_at(tsec, m + 4)?,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    vlen * 12
                }
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                other => {
                    return Err(err(format!(
                        "unknown BTF kind {other} (newer kernel than this reader?)"
                    )))
                }
            };
            at += extra;
            types.push(Type {
                name_off,
                kind,
                size_or_type,
                members,
                params: if kind == KIND_FUNC_PROTO {
                    vlen as u32
                } else {
                    0
                },
            });
        }
        let mut btf = Btf {
            types,
            strings,
            by_name: HashMap::new(),
            raw_tracepoints: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if (t.kind == KIND_STRUCT || t.kind == KIND_UNION) && t.name_off != 0 {
                let name = btf.str_at(t.name_off).to_owned();
                btf.by_name.entry(name).or_default().push(id as u32);
            }
            if t.kind == KIND_TYPEDEF {
                if let Some(tp) = btf.str_at(t.name_off).strip_prefix("btf_trace_") {
                    btf.raw_tracepoints.insert(tp.to_owned(), id as u32);
                }
            }
        }
        Ok(btf)
    }

    fn str_at(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Follow typedefs and modifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type;
                }
                _ => break,
            }
        }
        id
    }

    /// Bit offset, bitfield size and type of `member` in the struct/union with
    /// id `id`, searching anonymous members.
    fn find_in(&self, id: u32, member: &str, depth: u32) -> Option<(u32, u32, u32)> {
        if depth > 8 {
            return None;
        }
        let t = self.types.get(id as usize)?;
        for m in &t.members {
            if m.name_off != 0 && self.str_at(m.name_off) == member {
                return Some((m.bit_offset, m.bitfield_size, m.type_id));
            }
        }
        for m in &t.members {
            if m.name_off == 0 {
                let inner = self.resolve(m.type_id);
                if let Some((off, bits, ty)) = self.find_in(inner, member, depth + 1) {
                    return Some((m.bit_offset + off, bits, ty));
                }
            }
        }
        None
    }

    /// Size in bytes of a value of type `id` (typedefs and modifiers followed;
    /// pointers are 8 bytes on the 64-bit kernels watcher runs on).
    fn size_of(&self, id: u32) -> Option<u32> {
        let t = self.types.get(self.resolve(id) as usize)?;
        match t.kind {
            KIND_PTR => Some(8),
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                Some(t.size_or_type)
            }
            _ => None,
        }
    }

    /// Byte offset of `strukt.member` (e.g. `task_struct`, `exit_code`).
    pub(crate) fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, SetupError> {
        self.member(strukt, member).map(|(off, _)| off)
    }

    /// Byte offset and size (`None` for arrays and other sizeless kinds) of
    /// `strukt.member`; `member` may be a dotted path through nested structs
    /// (`__sk_common.skc_net`), whose offsets add up.
    pub(crate) fn member(
        &self,
        strukt: &str,
        member: &str,
    ) -> Result<(u32, Option<u32>), SetupError> {
        let ids = self
            .by_name
            .get(strukt)
            .ok_or_else(|| err(format!("no struct {strukt} in kernel BTF")))?;
        'candidates: for &id in ids {
            let mut at = id;
            let mut bits_total = 0u32;
            let mut last_ty = 0;
            for part in member.split('.') {
                let Some((bits, bitfield, ty)) = self.find_in(at, part, 0) else {
                    continue 'candidates;
                };
                if bitfield != 0 || bits % 8 != 0 {
                    return Err(err(format!("{strukt}.{member} is a bitfield")));
                }
                bits_total += bits;
                last_ty = ty;
                at = self.resolve(ty);
            }
            return Ok((bits_total / 8, self.size_of(last_ty)));
        }
        Err(err(format!(
            "struct {strukt} has no member {member} in kernel BTF"
        )))
    }

    /// A one-bit bitfield `strukt.member` (e.g. `signal_struct`,
    /// `is_child_subreaper`): the byte offset of the aligned 32-bit word
    /// that holds it, and its bit in that word (little-endian).
    pub(crate) fn flag_bit(&self, strukt: &str, member: &str) -> Result<(u32, u32), SetupError> {
        let ids = self
            .by_name
            .get(strukt)
            .ok_or_else(|| err(format!("no struct {strukt} in kernel BTF")))?;
        for &id in ids {
            if let Some((bits, size, _)) = self.find_in(id, member, 0) {
                if size != 1 {
                    return Err(err(format!("{strukt}.{member} is not a one-bit flag")));
                }
                return Ok(((bits / 32) * 4, bits % 32));
            }
        }
        Err(err(format!(
            "struct {strukt} has no member {member} in kernel BTF"
        )))
    }

    /// How many arguments the raw tracepoint `tp` passes its programs (its
    /// `TP_PROTO`), from the kernel's `btf_trace_<tp>` typedef: a pointer to
    /// a function whose first parameter is the tracepoint's private data.
    pub(crate) fn raw_tracepoint_args(&self, tp: &str) -> Result<u32, SetupError> {
        let id = *self
            .raw_tracepoints
            .get(tp)
            .ok_or_else(|| err(format!("no raw tracepoint {tp} in kernel BTF")))?;
        let ptr = self.resolve(id);
        let proto = self
            .types
            .get(ptr as usize)
            .filter(|t| t.kind == KIND_PTR)
            .map(|t| self.resolve(t.size_or_type))
            .and_then(|p| self.types.get(p as usize))
            .filter(|t| t.kind == KIND_FUNC_PROTO && t.params >= 1)
            .ok_or_else(|| err(format!("btf_trace_{tp} is not a pointer to a prototype")))?;
        Ok(proto.params - 1)
    }

    /// How many parameters the kernel function `name` takes (its `FUNC`'s
    /// prototype), and whether it returns a value: what an fentry/fexit
    /// program of it is given. Looked up by a scan: a few calls at load.
    pub(crate) fn function_params(&self, name: &str) -> Result<(u32, bool), SetupError> {
        let func = self
            .types
            .iter()
            .find(|t| t.kind == KIND_FUNC && self.str_at(t.name_off) == name)
            .ok_or_else(|| err(format!("no function {name} in kernel BTF")))?;
        let proto = self
            .types
            .get(func.size_or_type as usize)
            .filter(|t| t.kind == KIND_FUNC_PROTO)
            .ok_or_else(|| err(format!("{name} has no prototype in kernel BTF")))?;
        Ok((proto.params, proto.size_or_type != 0))
    }

    /// Size in bytes of `struct strukt`.
    pub(crate) fn struct_size(&self, strukt: &str) -> Result<u32, SetupError> {
        let ids = self
            .by_name
            .get(strukt)
            .ok_or_else(|| err(format!("no struct {strukt} in kernel BTF")))?;
        ids.iter()
            .filter_map(|&id| self.types.get(id as usize))
            .find(|t| t.kind == KIND_STRUCT && t.size_or_type > 0)
            .map(|t| t.size_or_type)
            .ok_or_else(|| err(format!("struct {strukt} has no size in kernel BTF")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build a BTF blob: `struct outer { int a; union { int b; struct { int c; }; }; }`
    /// plus a typedef, to exercise anonymous members.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0".to_vec();
        // string offsets: int=1 outer=5 a=11 b=13 c=15
        let mut t = Vec::new();
        let mut push = |v: u32| t.extend_from_slice(&v.to_le_bytes());
        // 1: int (size 4) + int data
        push(1);
        push(KIND_INT << 24);
        push(4);
        push(32);
        // 2: anonymous struct { int c @0 }
        push(0);
        push((KIND_STRUCT << 24) | 1);
        push(4);
        push(15);
        push(1);
        push(0);
        // 3: anonymous union { int b @0; struct 2 @0 }
        push(0);
        push((KIND_UNION << 24) | 2);
        push(4);
        push(13);
        push(1);
        push(0);
        push(0);
        push(2);
        push(0);
        // 4: typedef of 3 (anonymous)
        push(0);
        push(KIND_TYPEDEF << 24);
        push(3);
        // 5: struct outer { int a @0; <typedef 4> @64 bits }
        push(5);
        push((KIND_STRUCT << 24) | 2);
        push(12);
        push(11);
        push(1);
        push(0);
        push(0);
        push(4);
        push(64);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.push(1);
        out.push(0);
        out.extend_from_slice(&24u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        out.extend_from_slice(&t);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn finds_members_through_anonymous_unions() {
        let btf = Btf::parse(&blob()).expect("parse");
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "b").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "c").unwrap(), 8);
        assert_eq!(btf.struct_size("outer").unwrap(), 12);
        assert!(btf.member_offset("outer", "d").is_err());
        assert!(btf.member_offset("nope", "a").is_err());
    }

    #[test]
    fn never_panics_on_truncated_or_garbage_input() {
        let b = blob();
        for n in 0..b.len() {
            let _ = Btf::parse(&b[..n]);
        }
        let mut seed = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut g = b.clone();
            for byte in g.iter_mut().skip(4) {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if seed >> 28 == 0 {
                    *byte = (seed >> 16) as u8;
                }
            }
            let _ = Btf::parse(&g).map(|btf| btf.member_offset("outer", "c"));
        }
    }

    #[test]
    fn reads_the_running_kernels_raw_tracepoint_prototypes() {
        let Ok(btf) = Btf::from_sys_fs() else {
            panic!("/sys/kernel/btf/vmlinux is not readable: watcher needs a kernel with BTF");
        };
        // TP_PROTO(struct task_struct *task, unsigned long clone_flags)
        assert_eq!(btf.raw_tracepoint_args("task_newtask").unwrap(), 2);
        // TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
        assert_eq!(btf.raw_tracepoint_args("sched_process_exec").unwrap(), 3);
        // TP_PROTO(struct task_struct *p), and `bool group_dead` from 6.16 on:
        // as many as its tracefs record has a group_dead field or not.
        let exit = btf.raw_tracepoint_args("sched_process_exit").unwrap();
        let format = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .iter()
            .find_map(|t| {
                std::fs::read_to_string(format!("{t}/events/sched/sched_process_exit/format")).ok()
            });
        match format {
            Some(f) => assert_eq!(exit, 1 + f.contains("group_dead") as u32, "{f}"),
            None => assert!(exit == 1 || exit == 2, "{exit}"),
        }
        assert!(btf.raw_tracepoint_args("no_such_tracepoint").is_err());
    }

    #[test]
    fn reads_the_running_kernels_function_prototypes() {
        let Ok(btf) = Btf::from_sys_fs() else {
            panic!("/sys/kernel/btf/vmlinux is not readable: watcher needs a kernel with BTF");
        };
        // What the fentry/fexit programs are given (6.1 through 6.18 alike).
        for (function, params) in [
            ("__sys_bind", 3),
            ("__sys_connect", 3),
            ("kernel_wait4", 4),
            ("kernel_waitid", 5),
        ] {
            assert_eq!(
                btf.function_params(function).unwrap(),
                (params, true),
                "{function}"
            );
        }
        assert!(btf.function_params("no_such_function").is_err());
    }

    #[test]
    fn reads_the_running_kernels_task_struct() {
        // /sys/kernel/btf/vmlinux is world-readable; every machine this runs on has it.
        let Ok(btf) = Btf::from_sys_fs() else {
            panic!("/sys/kernel/btf/vmlinux is not readable: watcher needs a kernel with BTF");
        };
        let exit_code = btf
            .member_offset("task_struct", "exit_code")
            .expect("exit_code");
        let files = btf.member_offset("task_struct", "files").expect("files");
        assert!(exit_code > 0 && files > 0 && exit_code != files);
        btf.member_offset("mm_struct", "arg_start")
            .expect("mm_struct.arg_start");
        // Sizes through typedefs (pid_t), wrappers (atomic_t is a struct of one int) and pointers.
        assert_eq!(btf.member("task_struct", "tgid").expect("tgid").1, Some(4));
        assert_eq!(
            btf.member("signal_struct", "live").expect("live").1,
            Some(4)
        );
        assert_eq!(
            btf.member("task_struct", "real_parent")
                .expect("real_parent")
                .1,
            Some(8)
        );
        assert_eq!(btf.member("socket", "type").expect("type").1, Some(2));
        // An array has no plain size: never read as a value.
        assert_eq!(btf.member("task_struct", "comm").expect("comm").1, None);
        // Dotted paths add the nested offsets: sock.__sk_common.skc_net is a possible_net_t (one pointer).
        let (common, _) = btf.member("sock", "__sk_common").expect("__sk_common");
        let (net, _) = btf.member("sock_common", "skc_net").expect("skc_net");
        assert_eq!(
            btf.member("sock", "__sk_common.skc_net").expect("path"),
            (common + net, Some(8))
        );
        assert_eq!(
            btf.member("net", "ns.inum").expect("net.ns.inum").1,
            Some(4)
        );
        assert_eq!(btf.struct_size("upid").expect("struct upid"), 16);
        // One-bit flags: the word that holds them and their bit; two
        // neighbouring flags are one bit apart in the same word.
        let (w1, b1) = btf
            .flag_bit("signal_struct", "is_child_subreaper")
            .expect("is_child_subreaper");
        let (w2, b2) = btf
            .flag_bit("signal_struct", "has_child_subreaper")
            .expect("has_child_subreaper");
        assert_eq!(w1 % 4, 0);
        assert_eq!((w2 * 8 + b2) - (w1 * 8 + b1), 1);
        assert!(btf.flag_bit("task_struct", "tgid").is_err(), "not a flag");
        assert!(
            btf.member("signal_struct", "is_child_subreaper").is_err(),
            "a bitfield is never read as a value"
        );
    }
}
