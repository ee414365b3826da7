//! The kernel's socket tables, read from `/proc/net/{tcp,tcp6,udp,udp6}`,
//! with the processes holding each socket found through `/proc/<pid>/fd`.
//! Used at start (seed) and, for one port at a time, to confirm holders
//! before a port finding names them. Covers watcher's network namespace.
use std::{
    collections::HashMap,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::detect::sockets::KernelSocket;

fn parse_addr(hex: &str) -> Option<(IpAddr, u16)> {
    let (a, p) = hex.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let ip = match a.len() {
        8 => IpAddr::V4(Ipv4Addr::from(u32::from_str_radix(a, 16).ok()?.to_le_bytes())),
        32 => {
            let mut b = [0u8; 16];
            for k in 0..4 {
                let w = u32::from_str_radix(&a[k * 8..k * 8 + 8], 16).ok()?;
                b[k * 4..k * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some((ip, port))
}

/// Parse one `/proc/net/{tcp,udp}{,6}` table.
pub fn parse_table(text: &str, tcp: bool) -> Vec<KernelSocket> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let Some((addr, port)) = parse_addr(f[1]) else { continue };
        let Ok(state) = u32::from_str_radix(f[3], 16) else { continue };
        let uid = f[7].parse().unwrap_or(0);
        let inode = f[9].parse().unwrap_or(0);
        out.push(KernelSocket { tcp, addr, port, state, uid, inode, pids: Vec::new() });
    }
    out
}

fn read_tables(tcp: bool) -> Vec<KernelSocket> {
    let names: [&str; 2] = if tcp { ["tcp", "tcp6"] } else { ["udp", "udp6"] };
    names
        .iter()
        .filter_map(|n| fs::read_to_string(format!("/proc/net/{n}")).ok())
        .flat_map(|t| parse_table(&t, tcp))
        .collect()
}

/// inode → pids, for the given inodes, by scanning `/proc/*/fd`.
fn owners(inodes: &[u64]) -> HashMap<u64, Vec<u32>> {
    let mut out: HashMap<u64, Vec<u32>> = HashMap::new();
    if inodes.is_empty() {
        return out;
    }
    let Ok(procs) = fs::read_dir("/proc") else { return out };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else { continue };
            let t = target.to_string_lossy();
            let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')).and_then(|n| n.parse().ok()) else {
                continue;
            };
            if inodes.contains(&inode) {
                let v = out.entry(inode).or_default();
                if !v.contains(&pid) {
                    v.push(pid);
                }
            }
        }
    }
    out
}

fn with_owners(mut socks: Vec<KernelSocket>) -> Vec<KernelSocket> {
    let inodes: Vec<u64> = socks.iter().filter(|s| s.is_holder() && s.inode != 0).map(|s| s.inode).collect();
    let map = owners(&inodes);
    for s in &mut socks {
        if let Some(p) = map.get(&s.inode) {
            s.pids = p.clone();
        }
    }
    socks
}

/// Every socket on `port` of one transport, holders with their processes.
pub fn port_sockets(tcp: bool, port: u16) -> Vec<KernelSocket> {
    with_owners(read_tables(tcp).into_iter().filter(|s| s.port == port).collect())
}

/// Every holder (TCP listeners, bound UDP sockets), for the start-up seed.
pub fn all_holders() -> Vec<KernelSocket> {
    let mut all: Vec<KernelSocket> = read_tables(true).into_iter().filter(|s| s.is_holder()).collect();
    all.extend(read_tables(false).into_iter().filter(|s| s.port != 0));
    with_owners(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000   998        0 1060 1 00000000a7af8450 100 0 0 10 0
   1: garbage
";
        let s = parse_table(tcp, true);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].addr, s[0].port, s[0].state, s[0].uid, s[0].inode), ("127.0.0.1".parse().unwrap(), 8080, 10, 998, 1060));
        let tcp6 = "hdr
   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:0051 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 78 1 0 100 0 0 10 0
";
        let s = parse_table(tcp6, true);
        assert_eq!(s[0].addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(s[0].port, 80);
        assert_eq!(s[1].addr, "::ffff:127.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn finds_our_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let s = port_sockets(true, port);
        let me = std::process::id();
        assert!(s.iter().any(|k| k.state == 10 && k.pids.contains(&me)), "{s:?}");
    }
}
