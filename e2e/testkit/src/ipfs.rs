//! An IPFS daemon speaking the Kubo RPC API: Kubo (`ipfs` on PATH) when present, else js-ipfs
//! installed by `e2e/deps.sh`. Both are configured the same way: API on 127.0.0.1, swarm on
//! 127.0.0.1 (or a given address: a node's veth in a multi-node test), empty Bootstrap, MDNS off, no routing, no autoconf — nothing dials the internet.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::process::{Daemon, free_port, wait_until};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpfsKind {
    Kubo,
    JsIpfs,
}

fn jsipfs_dir() -> PathBuf {
    std::env::var_os("JSIPFS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("e2e/.deps/jsipfs"))
}

fn jsipfs_bin() -> PathBuf {
    jsipfs_dir().join("node_modules/.bin/jsipfs")
}

fn kubo_on_path() -> bool {
    Command::new("ipfs")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Every daemon kind installed here; the conformance suite runs against each. Panics when there
/// is none: a test that needs IPFS must fail, not pass vacuously.
pub fn available_ipfs_kinds() -> Vec<IpfsKind> {
    let mut kinds = Vec::new();
    if kubo_on_path() {
        kinds.push(IpfsKind::Kubo);
    }
    if jsipfs_bin().exists() {
        kinds.push(IpfsKind::JsIpfs);
    }
    assert!(
        !kinds.is_empty(),
        "no IPFS daemon: install Kubo (`ipfs`) or run `bash e2e/deps.sh` for js-ipfs"
    );
    kinds
}

/// Where a daemon listens. The API is always on 127.0.0.1 (of the namespace it runs in); the
/// swarm on `swarm_ip` (a node's veth address in a multi-node test). Ports default to free ones;
/// give the old ones to restart a daemon where its agent and peers expect it.
#[derive(Debug, Clone, Copy)]
pub struct IpfsNet {
    pub swarm_ip: Ipv4Addr,
    pub api_port: Option<u16>,
    pub swarm_port: Option<u16>,
    /// A private network: the pre-shared key written as `swarm.key` in the repo (Kubo reads it
    /// itself; js-ipfs runs through `e2e/js-ipfs/pnet-daemon.mjs`). Kept on restarts.
    pub swarm_key: Option<[u8; 32]>,
}

impl Default for IpfsNet {
    fn default() -> Self {
        Self {
            swarm_ip: Ipv4Addr::LOCALHOST,
            api_port: None,
            swarm_port: None,
            swarm_key: None,
        }
    }
}

impl IpfsNet {
    pub fn swarm_on(ip: Ipv4Addr) -> Self {
        Self {
            swarm_ip: ip,
            ..Self::default()
        }
    }

    /// The same, in the private network of `key`.
    pub fn private(self, key: [u8; 32]) -> Self {
        Self {
            swarm_key: Some(key),
            ..self
        }
    }
}

pub struct IpfsDaemon {
    pub kind: IpfsKind,
    /// `http://127.0.0.1:<port>`
    pub api_url: String,
    pub api_port: u16,
    pub swarm_ip: Ipv4Addr,
    pub swarm_port: u16,
    pub swarm_key: Option<[u8; 32]>,
    pub peer_id: String,
    pub repo: PathBuf,
    daemon: Daemon,
    _dir: Option<tempfile::TempDir>,
}

impl IpfsDaemon {
    /// The preferred daemon: `IPFS_IMPL=kubo|js` if set, else Kubo when on PATH, else js-ipfs.
    pub fn start() -> Result<Self> {
        Self::start_kind(preferred_kind())
    }

    /// The preferred daemon with its swarm (and ports) as `net` says.
    pub fn start_with(net: IpfsNet) -> Result<Self> {
        Self::start_kind_with(preferred_kind(), net)
    }

    pub fn start_kind(kind: IpfsKind) -> Result<Self> {
        Self::start_kind_with(kind, IpfsNet::default())
    }

    pub fn start_kind_with(kind: IpfsKind, net: IpfsNet) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("testkit-ipfs-").tempdir()?;
        let repo = dir.path().join("repo");
        // A port taken between our probe and the daemon's bind is retried with new ports.
        let mut last = None;
        for _ in 0..3 {
            match Self::start_in_with(kind, &repo, net) {
                Ok(mut d) => {
                    d._dir = Some(dir);
                    return Ok(d);
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&repo);
                    last = Some(e);
                }
            }
        }
        Err(last.expect("tried at least once"))
    }

    /// Start (or restart) a daemon on an existing or new repo at `repo`.
    pub fn start_in(kind: IpfsKind, repo: &Path) -> Result<Self> {
        Self::start_in_with(kind, repo, IpfsNet::default())
    }

    /// Start (or restart) a daemon on `repo`, listening as `net` says.
    pub fn start_in_with(kind: IpfsKind, repo: &Path, net: IpfsNet) -> Result<Self> {
        let api = net.api_port.unwrap_or_else(free_port);
        let swarm = net.swarm_port.unwrap_or_else(free_port);
        let fresh = !repo.join("config").exists();
        if fresh {
            std::fs::create_dir_all(repo)?;
            let status = base_command(kind, repo)
                .args(init_args(kind))
                .output()
                .context("ipfs init")?;
            if !status.status.success() {
                bail!(
                    "ipfs init failed: {}",
                    String::from_utf8_lossy(&status.stderr)
                );
            }
        }
        configure(kind, repo, api, net.swarm_ip, swarm)?;
        let key_file = repo.join("swarm.key");
        let cmd = match net.swarm_key {
            Some(key) => {
                std::fs::write(&key_file, swarm_key_file(&key))?;
                private_daemon_command(kind, repo)?
            }
            None => {
                let _ = std::fs::remove_file(&key_file);
                let mut cmd = base_command(kind, repo);
                cmd.arg("daemon");
                if kind == IpfsKind::JsIpfs {
                    cmd.arg("--enable-preload=false");
                }
                cmd
            }
        };
        let daemon = Daemon::spawn("ipfs", cmd, &repo.join("daemon.log"))?;
        let config: Value = serde_json::from_slice(&std::fs::read(repo.join("config"))?)?;
        let peer_id = config["Identity"]["PeerID"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut this = Self {
            kind,
            api_url: format!("http://127.0.0.1:{api}"),
            api_port: api,
            swarm_ip: net.swarm_ip,
            swarm_port: swarm,
            swarm_key: net.swarm_key,
            peer_id,
            repo: repo.to_owned(),
            daemon,
            _dir: None,
        };
        let http = crate::http_client(Duration::from_secs(2));
        let id_url = format!("{}/api/v0/id", this.api_url);
        // Ready when *this* node answers /id (a stale daemon on the port would have another ID).
        let ready = wait_until("ipfs daemon", Duration::from_secs(60), || {
            if !this.daemon.is_running() {
                bail!("daemon exited: {}", tail(&repo.join("daemon.log")));
            }
            let body = match http.post(&id_url).send() {
                Ok(r) => r.text()?,
                Err(_) => return Ok(false),
            };
            Ok(body.contains(&this.peer_id))
        });
        if let Err(e) = ready {
            this.daemon.stop();
            bail!("{e:#}\n{}", tail(&repo.join("daemon.log")));
        }
        Ok(this)
    }

    /// Multiaddr other nodes dial to reach this one.
    pub fn swarm_multiaddr(&self) -> String {
        format!(
            "/ip4/{}/tcp/{}/p2p/{}",
            self.swarm_ip, self.swarm_port, self.peer_id
        )
    }

    /// Where this daemon listens: give it to `start_in_with` to restart it on the same ports.
    pub fn net(&self) -> IpfsNet {
        IpfsNet {
            swarm_ip: self.swarm_ip,
            api_port: Some(self.api_port),
            swarm_port: Some(self.swarm_port),
            swarm_key: self.swarm_key,
        }
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Stop the daemon (SIGTERM), keeping the repo so it can be restarted with `start_in`.
    pub fn stop(&mut self) {
        self.daemon.stop();
    }

    /// Kill the daemon abruptly. js-ipfs's repo lock (a directory, unlike Kubo's flock) outlives
    /// a killed daemon; the daemon was ours and is reaped, so its lock is removed here, as a
    /// supervisor restarting a crashed node would, so that `start_in` can reuse the repo.
    pub fn kill(&mut self) {
        self.daemon.kill();
        if self.kind == IpfsKind::JsIpfs {
            let _ = std::fs::remove_dir_all(self.repo.join("repo.lock"));
        }
    }

    /// Take ownership of the repo directory (so a restarted daemon can reuse it).
    pub fn keep_repo(&mut self) -> Option<tempfile::TempDir> {
        self._dir.take()
    }
}

fn preferred_kind() -> IpfsKind {
    match std::env::var("IPFS_IMPL").as_deref() {
        Ok("kubo") => IpfsKind::Kubo,
        Ok("js") => IpfsKind::JsIpfs,
        _ => available_ipfs_kinds()[0],
    }
}

fn base_command(kind: IpfsKind, repo: &Path) -> Command {
    let mut cmd = match kind {
        IpfsKind::Kubo => Command::new("ipfs"),
        IpfsKind::JsIpfs => Command::new(jsipfs_bin()),
    };
    cmd.env("IPFS_PATH", repo)
        .env("NODE_ENV", "test")
        .env("IPFS_TELEMETRY", "off");
    cmd
}

/// A `swarm.key` file as Kubo writes it.
pub fn swarm_key_file(key: &[u8; 32]) -> String {
    format!("/key/swarm/psk/1.0.0/\n/base16/\n{}\n", hex::encode(key))
}

/// The daemon of a private network. Kubo reads `swarm.key` from its repo (and refuses to run
/// without one under `LIBP2P_FORCE_PNET`); js-ipfs needs its libp2p built with the key, which
/// `pnet-daemon.mjs` does (copied next to js-ipfs' node_modules so node resolves its imports).
fn private_daemon_command(kind: IpfsKind, repo: &Path) -> Result<Command> {
    let mut cmd = match kind {
        IpfsKind::Kubo => {
            let mut cmd = base_command(kind, repo);
            cmd.arg("daemon").env("LIBP2P_FORCE_PNET", "1");
            cmd
        }
        IpfsKind::JsIpfs => {
            const SCRIPT: &str = include_str!("../../js-ipfs/pnet-daemon.mjs");
            let target = jsipfs_dir().join("pnet-daemon.mjs");
            if std::fs::read_to_string(&target).ok().as_deref() != Some(SCRIPT) {
                // Tests run in parallel: write aside, then rename over.
                let tmp = jsipfs_dir().join(format!("pnet-daemon.{}.tmp", std::process::id()));
                std::fs::write(&tmp, SCRIPT)?;
                std::fs::rename(&tmp, &target)?;
            }
            let mut cmd = Command::new("node");
            cmd.arg(target);
            cmd
        }
    };
    cmd.env("IPFS_PATH", repo)
        .env("NODE_ENV", "test")
        .env("IPFS_TELEMETRY", "off");
    Ok(cmd)
}

fn init_args(kind: IpfsKind) -> &'static [&'static str] {
    match kind {
        IpfsKind::Kubo => &["init", "--profile", "test", "--empty-repo"],
        IpfsKind::JsIpfs => &["init", "--profile", "test", "--emptyRepo"],
    }
}

/// Loopback only, and nothing that could reach the internet.
fn configure(kind: IpfsKind, repo: &Path, api: u16, swarm_ip: Ipv4Addr, swarm: u16) -> Result<()> {
    let path = repo.join("config");
    let mut c: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let addresses = c["Addresses"]
        .as_object_mut()
        .context("config has Addresses")?;
    addresses.insert("API".into(), json!(format!("/ip4/127.0.0.1/tcp/{api}")));
    match kind {
        // Kubo reads an empty string as one (invalid) address; js-ipfs wants a string.
        IpfsKind::Kubo => addresses.insert("Gateway".into(), json!([])),
        IpfsKind::JsIpfs => addresses
            .insert("RPC".into(), json!(""))
            .and(addresses.insert("Gateway".into(), json!(""))),
    };
    addresses.insert(
        "Swarm".into(),
        json!([format!("/ip4/{swarm_ip}/tcp/{swarm}")]),
    );
    addresses.insert("Announce".into(), json!([]));
    addresses.insert("NoAnnounce".into(), json!([]));
    addresses.insert("Delegates".into(), json!([]));
    c["Bootstrap"] = json!([]);
    c["Discovery"] =
        json!({"MDNS": {"Enabled": false, "Interval": 10}, "webRTCStar": {"Enabled": false}});
    c["Routing"] = json!({"Type": "none"});
    c["AutoConf"] = json!({"Enabled": false});
    c["Swarm"]["DisableNatPortMap"] = json!(true);
    // No automatic dialling of remembered peers (js-ipfs dials its peer store while under
    // LowWater connections): every connection is one a test or the agent under test made.
    c["Swarm"]["ConnMgr"]["LowWater"] = json!(0);
    if let Some(p) = c.get_mut("Pubsub") {
        p["Enabled"] = json!(false);
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&c)?)?;
    // Refuse to start anything that could bootstrap into the public network.
    let check: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    assert_eq!(check["Bootstrap"], json!([]), "Bootstrap must be empty");
    Ok(())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
