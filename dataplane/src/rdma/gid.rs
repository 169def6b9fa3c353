//! Choosing the GID a queue pair is addressed by, when `AUTOLOC_RDMA_GID_INDEX` does not say.
//!
//! On RoCE every address of the port's netdev appears in the GID table, once per RoCE version:
//! typically the IPv6 link-local address (as RoCE v1 and v2), then the IPv4-mapped one
//! (`::ffff:a.b.c.d`, again as v1 and v2). Only RoCE v2 is routed (UDP/IP), and a link-local
//! GID cannot be routed at all: Soft-RoCE given index 0 (the link-local v1 GID) never gets its
//! queue pair past `ibv_modify_qp(RTR)` (ETIMEDOUT). So the default is a RoCE v2 GID whose
//! netdev is up, the IPv4-mapped one first, then a global IPv6 one, a link-local one last.
//!
//! The table is read from sysfs (`/sys/class/infiniband/<dev>/ports/<port>/gids/<i>`,
//! `gid_attrs/types/<i>`, `gid_attrs/ndevs/<i>`, and `/sys/class/net/<netdev>/flags`), which
//! every kernel with RDMA support has; the choice itself is [`choose_gid`], a pure function.

use std::fmt;
use std::net::Ipv6Addr;
use std::path::Path;

/// The kind of a GID table entry (`gid_attrs/types/<i>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GidKind {
    /// `RoCE v2`: routed over UDP/IP.
    RoceV2,
    /// `IB/RoCE v1`: InfiniBand, or RoCE v1 (Ethernet, not routed).
    IbOrRoceV1,
    /// Anything else the kernel reports.
    Other(String),
}

impl GidKind {
    /// The kind named by the text of `gid_attrs/types/<i>`.
    pub fn parse(text: &str) -> Self {
        match text.trim() {
            "RoCE v2" => GidKind::RoceV2,
            "IB/RoCE v1" => GidKind::IbOrRoceV1,
            other => GidKind::Other(other.to_string()),
        }
    }
}

impl fmt::Display for GidKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GidKind::RoceV2 => f.write_str("RoCE v2"),
            GidKind::IbOrRoceV1 => f.write_str("IB/RoCE v1"),
            GidKind::Other(s) => f.write_str(s),
        }
    }
}

/// One valid entry of a port's GID table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GidCandidate {
    /// Index in the table (what `sgid_index` takes).
    pub index: u8,
    /// The GID, network byte order.
    pub gid: [u8; 16],
    pub kind: GidKind,
    /// The netdev the entry belongs to (`None`: the kernel names none).
    pub netdev: Option<String>,
    /// Whether that netdev is administratively up.
    pub netdev_up: bool,
}

impl GidCandidate {
    /// Whether the GID is an IPv4-mapped address (`::ffff:a.b.c.d`).
    pub fn is_ipv4_mapped(&self) -> bool {
        self.gid[..10].iter().all(|&b| b == 0) && self.gid[10..12] == [0xff, 0xff]
    }

    /// Whether the GID is an IPv6 link-local address (`fe80::/10`).
    pub fn is_link_local(&self) -> bool {
        self.gid[0] == 0xfe && self.gid[1] & 0xc0 == 0x80
    }
}

impl fmt::Display for GidCandidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.index,
            self.kind,
            Ipv6Addr::from(self.gid)
        )?;
        match &self.netdev {
            Some(n) => write!(
                f,
                " on {n} ({})",
                if self.netdev_up { "up" } else { "down" }
            ),
            None => f.write_str(" on no netdev"),
        }
    }
}

/// The GID index to use among `candidates` (one port's valid entries): a RoCE v2 GID whose
/// netdev is up, the IPv4-mapped one first, then a global IPv6 one, then a link-local one; the
/// lowest index among equals. `Err` says why none fits, naming every candidate.
pub fn choose_gid(candidates: &[GidCandidate]) -> Result<u8, String> {
    let rank = |c: &GidCandidate| {
        if c.is_ipv4_mapped() {
            0
        } else if !c.is_link_local() {
            1
        } else {
            2
        }
    };
    candidates
        .iter()
        .filter(|c| c.kind == GidKind::RoceV2 && c.netdev_up && c.gid != [0; 16])
        .min_by_key(|c| (rank(c), c.index))
        .map(|c| c.index)
        .ok_or_else(|| {
            if candidates.is_empty() {
                "no RoCE v2 GID whose netdev is up: the GID table is empty (does the port's \
                 netdev have an address?)"
                    .to_string()
            } else {
                let list: Vec<String> = candidates.iter().map(ToString::to_string).collect();
                format!(
                    "no RoCE v2 GID whose netdev is up (candidates: {})",
                    list.join("; ")
                )
            }
        })
}

/// Parses the text of `gids/<i>`: eight groups of four hex digits separated by colons.
pub fn parse_gid(text: &str) -> Option<[u8; 16]> {
    let groups: Vec<&str> = text.trim().split(':').collect();
    if groups.len() != 8 {
        return None;
    }
    let mut gid = [0u8; 16];
    for (out, g) in gid.chunks_exact_mut(2).zip(groups) {
        if g.len() != 4 {
            return None;
        }
        let v = u16::from_str_radix(g, 16).ok()?;
        out.copy_from_slice(&v.to_be_bytes());
    }
    Some(gid)
}

/// The valid entries of the GID table of `port` of device `device`, from sysfs under `sys`
/// (normally `/sys`). Empty entries (all zeroes, or whose type the kernel does not give) are
/// left out. `Err`: the table could not be listed.
pub fn read_gid_table(sys: &Path, device: &str, port: u8) -> Result<Vec<GidCandidate>, String> {
    let port_dir = sys
        .join("class/infiniband")
        .join(device)
        .join("ports")
        .join(port.to_string());
    let gids = port_dir.join("gids");
    let entries =
        std::fs::read_dir(&gids).map_err(|e| format!("cannot list {}: {e}", gids.display()))?;
    let mut indices: Vec<u8> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    indices.sort_unstable();
    let mut table = Vec::new();
    for index in indices {
        let read = |dir: &Path| std::fs::read_to_string(dir.join(index.to_string())).ok();
        let Some(gid) = read(&gids).as_deref().and_then(parse_gid) else {
            continue;
        };
        if gid == [0; 16] {
            continue;
        }
        // An unused entry has no type (reading it fails with EINVAL).
        let Some(kind) = read(&port_dir.join("gid_attrs/types")) else {
            continue;
        };
        let netdev = read(&port_dir.join("gid_attrs/ndevs"))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let netdev_up = netdev.as_deref().is_some_and(|n| netdev_is_up(sys, n));
        table.push(GidCandidate {
            index,
            gid,
            kind: GidKind::parse(&kind),
            netdev,
            netdev_up,
        });
    }
    Ok(table)
}

/// Whether `/sys/class/net/<netdev>/flags` has IFF_UP.
fn netdev_is_up(sys: &Path, netdev: &str) -> bool {
    const IFF_UP: u32 = 0x1;
    std::fs::read_to_string(sys.join("class/net").join(netdev).join("flags"))
        .ok()
        .and_then(|s| u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
        .is_some_and(|flags| flags & IFF_UP != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(index: u8, gid: &str, kind: GidKind, netdev_up: bool) -> GidCandidate {
        GidCandidate {
            index,
            gid: gid.parse::<Ipv6Addr>().unwrap().octets(),
            kind,
            netdev: Some("veth0".into()),
            netdev_up,
        }
    }

    /// The table Soft-RoCE builds for a veth with 192.0.2.1/24 and a link-local address.
    fn rxe_table() -> Vec<GidCandidate> {
        vec![
            c(0, "fe80::1", GidKind::IbOrRoceV1, true),
            c(1, "fe80::1", GidKind::RoceV2, true),
            c(2, "::ffff:192.0.2.1", GidKind::IbOrRoceV1, true),
            c(3, "::ffff:192.0.2.1", GidKind::RoceV2, true),
        ]
    }

    #[test]
    fn prefers_the_ipv4_mapped_roce_v2_gid() {
        assert_eq!(choose_gid(&rxe_table()), Ok(3));
        // Order in the table does not matter.
        let mut t = rxe_table();
        t.reverse();
        assert_eq!(choose_gid(&t), Ok(3));
    }

    #[test]
    fn then_a_global_ipv6_gid_then_a_link_local_one() {
        let mut t = rxe_table();
        t.retain(|c| !c.is_ipv4_mapped());
        assert_eq!(choose_gid(&t), Ok(1), "only link-local v2 left");
        t.push(c(7, "2001:db8::5", GidKind::RoceV2, true));
        assert_eq!(choose_gid(&t), Ok(7));
    }

    #[test]
    fn never_roce_v1_nor_a_netdev_that_is_down() {
        let t = vec![
            c(0, "fe80::1", GidKind::IbOrRoceV1, true),
            c(2, "::ffff:192.0.2.1", GidKind::IbOrRoceV1, true),
            c(3, "::ffff:192.0.2.1", GidKind::RoceV2, false),
            c(
                4,
                "::ffff:198.51.100.1",
                GidKind::Other("weird".into()),
                true,
            ),
        ];
        let e = choose_gid(&t).unwrap_err();
        assert!(e.starts_with("no RoCE v2 GID whose netdev is up"), "{e}");
        // Every candidate is named, with its index, type, address and netdev.
        for part in [
            "0 IB/RoCE v1 fe80::1 on veth0 (up)",
            "2 IB/RoCE v1 ::ffff:192.0.2.1 on veth0 (up)",
            "3 RoCE v2 ::ffff:192.0.2.1 on veth0 (down)",
            "4 weird ::ffff:198.51.100.1 on veth0 (up)",
        ] {
            assert!(e.contains(part), "{part:?} missing from {e}");
        }
        assert!(choose_gid(&[]).unwrap_err().contains("table is empty"));
    }

    #[test]
    fn gid_text_and_kinds_parse() {
        assert_eq!(
            parse_gid("0000:0000:0000:0000:0000:ffff:c000:0201\n"),
            Some("::ffff:192.0.2.1".parse::<Ipv6Addr>().unwrap().octets())
        );
        assert_eq!(parse_gid("fe80::1"), None);
        assert_eq!(parse_gid("0000:0000:0000:0000:0000:ffff:c000:02zz"), None);
        assert_eq!(GidKind::parse("RoCE v2\n"), GidKind::RoceV2);
        assert_eq!(GidKind::parse("IB/RoCE v1"), GidKind::IbOrRoceV1);
    }

    #[test]
    fn reads_a_gid_table_from_sysfs() {
        let sys = std::env::temp_dir().join(format!("autoloc-gid-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&sys);
        let port = sys.join("class/infiniband/rxe0/ports/1");
        for d in ["gids", "gid_attrs/types", "gid_attrs/ndevs"] {
            std::fs::create_dir_all(port.join(d)).unwrap();
        }
        let net = sys.join("class/net/veth0");
        std::fs::create_dir_all(&net).unwrap();
        std::fs::write(net.join("flags"), "0x1003\n").unwrap();
        let entries = [
            (
                "0",
                "fe80:0000:0000:0000:0000:0000:0000:0001",
                Some("IB/RoCE v1"),
            ),
            (
                "1",
                "0000:0000:0000:0000:0000:ffff:c000:0201",
                Some("RoCE v2"),
            ),
            // Unused entries: zero, or without a type.
            (
                "2",
                "0000:0000:0000:0000:0000:0000:0000:0000",
                Some("RoCE v2"),
            ),
            ("3", "0000:0000:0000:0000:0000:ffff:c000:0202", None),
        ];
        for (i, gid, kind) in entries {
            std::fs::write(port.join("gids").join(i), format!("{gid}\n")).unwrap();
            std::fs::write(port.join("gid_attrs/ndevs").join(i), "veth0\n").unwrap();
            if let Some(k) = kind {
                std::fs::write(port.join("gid_attrs/types").join(i), format!("{k}\n")).unwrap();
            }
        }
        let table = read_gid_table(&sys, "rxe0", 1).unwrap();
        assert_eq!(
            table.iter().map(|c| c.index).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert!(table.iter().all(|c| c.netdev_up));
        assert_eq!(choose_gid(&table), Ok(1));
        std::fs::write(net.join("flags"), "0x1002\n").unwrap();
        let down = read_gid_table(&sys, "rxe0", 1).unwrap();
        assert!(choose_gid(&down).unwrap_err().contains("on veth0 (down)"));
        assert!(read_gid_table(&sys, "rxe1", 1)
            .unwrap_err()
            .contains("cannot list"));
        std::fs::remove_dir_all(&sys).unwrap();
    }
}
