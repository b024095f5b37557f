//! Several "nodes" on one machine: network namespaces, each with its own loopback (so its own
//! 127.0.0.1) and one veth into a bridge that lives in a hub namespace this module also creates.
//! The subnet (10.231.x.0/24) exists only between those namespaces: no namespace has a default
//! route and the hub has no uplink, so nothing is routed to the real network, and the root
//! namespace is never touched (each veth is created directly inside its namespaces).
//!
//! Test code joins a node with [`Netns::enter`]: the closure runs on a thread that joined the
//! namespace (`setns` is per thread), so sockets it opens (HTTP clients, `free_port`, a tokio
//! runtime built there) are the node's, and processes it starts are the node's: `Command`
//! children inherit the thread's namespace, and [`crate::Daemon::spawn`] moves its children into
//! it too (like `nsenter --net`, never `ip netns exec`, which remounts /sys and breaks runc).
//! Every testkit daemon (`IpfsDaemon`, `Agent`, `Containerd`, `Registry`) therefore runs inside
//! a node when started inside `enter`.
//!
//! [`TestNet`] deletes every namespace it made when dropped, also when the test panics; names
//! carry the test process's PID and a counter, so runs in parallel never collide, and namespaces
//! left by a test process that was killed are removed by the next run.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

const PREFIX: &str = "iit-";
const NETNS_DIR: &str = "/var/run/netns";

/// A named network namespace (`/var/run/netns/<name>`).
#[derive(Debug, Clone)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Run `f` on a new thread that joined this namespace, and return what it returns (a panic
    /// in `f` is re-raised here).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                let ns =
                    File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
                #[allow(unsafe_code)]
                // SAFETY: setns on an fd we own; it only changes this thread's network namespace.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
                f()
            });
            match handle.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// `ip -n <name> <args…>`, failing with its stderr.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// One node: its namespace and its address on the test subnet.
#[derive(Debug, Clone)]
pub struct NetNode {
    pub netns: Netns,
    pub ip: Ipv4Addr,
}

impl NetNode {
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.netns.enter(f)
    }
}

/// Nodes joined by a bridge in a hub namespace; everything is deleted on drop.
pub struct TestNet {
    pub nodes: Vec<NetNode>,
    hub: Netns,
    /// Every namespace created, deleted in reverse order on drop.
    created: Vec<Netns>,
}

impl TestNet {
    /// One namespace per name in `nodes` (`iit-<pid>-<n>-<name>`), each with `lo` up and
    /// `veth0` at 10.231.<x>.<2+i>/24 on a bridge in `iit-<pid>-<n>-hub`. Needs root.
    pub fn create(nodes: &[&str]) -> Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        remove_stale();
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("{PREFIX}{pid}-{n}");
        // Subnets are private to this net's hub, so collisions could not matter; a per-run third
        // octet only makes addresses in logs distinguishable.
        let octet = ((pid ^ (n << 5)) % 250 + 1) as u8;
        let mut net = Self {
            nodes: Vec::new(),
            hub: Netns {
                name: format!("{base}-hub"),
            },
            created: Vec::new(),
        };
        net.add_netns(net.hub.clone())?;
        net.hub
            .ip(&["link", "add", "br0", "type", "bridge", "stp_state", "0"])?;
        net.hub.ip(&["link", "set", "br0", "up"])?;
        net.hub.ip(&["link", "set", "lo", "up"])?;
        for (i, name) in nodes.iter().enumerate() {
            let ns = Netns {
                name: format!("{base}-{name}"),
            };
            net.add_netns(ns.clone())?;
            let hub_end = format!("p{i}");
            ip(&[
                "link",
                "add",
                "veth0",
                "netns",
                &ns.name,
                "type",
                "veth",
                "peer",
                "name",
                &hub_end,
                "netns",
                &net.hub.name,
            ])?;
            net.hub.ip(&["link", "set", &hub_end, "master", "br0"])?;
            net.hub.ip(&["link", "set", &hub_end, "up"])?;
            let addr = Ipv4Addr::new(10, 231, octet, 2 + i as u8);
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "veth0"])?;
            ns.ip(&["link", "set", "veth0", "up"])?;
            ns.ip(&["link", "set", "lo", "up"])?;
            net.nodes.push(NetNode {
                netns: ns,
                ip: addr,
            });
        }
        Ok(net)
    }

    fn add_netns(&mut self, ns: Netns) -> Result<()> {
        ip(&["netns", "add", &ns.name])?;
        self.created.push(ns);
        Ok(())
    }

    pub fn node(&self, i: usize) -> &NetNode {
        &self.nodes[i]
    }

    /// Shape every node's link to `rate` (`tc` rate syntax, e.g. `1gbit`) both ways: an HTB
    /// class on the hub's port towards the node (its download) and on the node's `veth0` (its
    /// upload). Without it, veths run at memory speed and hide what sharing between nodes saves.
    pub fn shape(&self, rate: &str) -> Result<()> {
        for (i, node) in self.nodes.iter().enumerate() {
            let hub_end = format!("p{i}");
            for (ns, dev) in [(&self.hub, hub_end.as_str()), (&node.netns, "veth0")] {
                tc(&[
                    "-n",
                    ns.name(),
                    "qdisc",
                    "add",
                    "dev",
                    dev,
                    "root",
                    "handle",
                    "1:",
                    "htb",
                    "default",
                    "1",
                ])?;
                tc(&[
                    "-n",
                    ns.name(),
                    "class",
                    "add",
                    "dev",
                    dev,
                    "parent",
                    "1:",
                    "classid",
                    "1:1",
                    "htb",
                    "rate",
                    rate,
                    "ceil",
                    rate,
                ])?;
            }
        }
        Ok(())
    }
}

fn tc(args: &[&str]) -> Result<()> {
    let out = Command::new("tc")
        .args(args)
        .output()
        .context("running `tc` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "tc {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Deleting a namespace frees its veth end, which destroys the pair.
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "delete", &ns.name]) {
                eprintln!("testkit: cannot delete netns {}: {e:#}", ns.name);
            }
        }
    }
}

/// Delete `iit-<pid>-…` namespaces whose test process no longer exists (it was killed before
/// its `TestNet` could clean up). Namespaces of live processes are left alone.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "delete", &name]);
        }
    }
}
