//! A remote compute node on one machine: a network namespace of its own, joined to this one by
//! a veth pair, so that its traffic to Redis crosses a real network stack (two interfaces, ARP,
//! the veth driver) instead of loopback.
//!
//! Addresses are link-local (169.254.0.0/16, one /30 per bench process), never routed. Root
//! creates the namespace and the pair with `ip`; [`Netns`]'s drop deletes them (deleting the
//! namespace deletes the veth pair). [`Netns::enter`] moves the calling thread into the
//! namespace: every thread it spawns after that, and every socket they open, is the compute
//! node's; a process started before (redis-server) stays on the storage side.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;

/// A compute-side network namespace and the veth pair to it.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// The storage side's end of the pair (in this namespace).
    storage_if: String,
    storage_addr: Ipv4Addr,
    compute_addr: Ipv4Addr,
}

/// Runs `ip` with `args`; the error says which command failed and why.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("run `ip`: {e} (iproute2 is needed)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The /30 of process `pid` inside 169.254.1.0 .. 169.254.254.255: (storage, compute) address.
pub fn link_local_pair(pid: u32) -> (Ipv4Addr, Ipv4Addr) {
    let slot = pid % (254 * 64);
    let (third, fourth) = (1 + slot / 64, (slot % 64) * 4);
    (
        Ipv4Addr::new(169, 254, third as u8, fourth as u8 + 1),
        Ipv4Addr::new(169, 254, third as u8, fourth as u8 + 2),
    )
}

impl Netns {
    /// Creates the namespace `autoloc-c<pid>` and the veth pair `al<pid>s` (here) /
    /// `al<pid>c` (there), addressed and up. Fails with the reason (not root, no `ip`, no
    /// namespaces in this kernel), after removing whatever it created.
    pub fn create() -> Result<Netns, String> {
        let pid = std::process::id();
        let (storage_addr, compute_addr) = link_local_pair(pid);
        let ns = Netns {
            name: format!("autoloc-c{pid}"),
            storage_if: format!("al{pid}s"),
            storage_addr,
            compute_addr,
        };
        // From here on, a failure drops `ns`, which deletes what exists of it.
        let compute_if = format!("al{pid}c");
        let (s_cidr, c_cidr) = (format!("{storage_addr}/30"), format!("{compute_addr}/30"));
        ip(&["netns", "add", &ns.name])?;
        ip(&[
            "link",
            "add",
            &ns.storage_if,
            "type",
            "veth",
            "peer",
            "name",
            &compute_if,
            "netns",
            &ns.name,
        ])?;
        ip(&["addr", "add", &s_cidr, "dev", &ns.storage_if])?;
        ip(&["link", "set", &ns.storage_if, "up"])?;
        ip(&["-n", &ns.name, "addr", "add", &c_cidr, "dev", &compute_if])?;
        ip(&["-n", &ns.name, "link", "set", &compute_if, "up"])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (`ip netns exec NAME ...`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The storage side's address (bind Redis and the tcp data plane here).
    pub fn storage_addr(&self) -> Ipv4Addr {
        self.storage_addr
    }

    /// The compute side's address.
    pub fn compute_addr(&self) -> Ipv4Addr {
        self.compute_addr
    }

    /// Moves the calling thread into the namespace (threads spawned by it later start there).
    pub fn enter(&self) -> Result<(), String> {
        let path = format!("/var/run/netns/{}", self.name);
        let f = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
        nix::sched::setns(f.as_raw_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns({path}): {e}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it this end.
        if ip(&["netns", "del", &self.name]).is_err() {
            let _ = ip(&["link", "del", &self.storage_if]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_process_gets_a_link_local_slash_30() {
        for pid in [0, 1, 63, 64, 4_194_304, u32::MAX] {
            let (s, c) = link_local_pair(pid);
            assert!(s.is_link_local() && c.is_link_local(), "{s} {c}");
            let (so, co) = (s.octets(), c.octets());
            assert_eq!(so[..3], co[..3]);
            assert_eq!((so[3] % 4, co[3] % 4), (1, 2), "{s} {c}");
            assert!((1..=254).contains(&so[2]), "{s}");
        }
        assert_ne!(link_local_pair(1), link_local_pair(2));
    }
}
