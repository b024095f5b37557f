//! Kubo, the IPFS daemon the chart ships, built by `e2e/deps.sh` from its Go module at the
//! chart's version (`e2e/.deps/bin/ipfs`). Every test daemon is configured by the chart's own
//! `kubo-init` script (`charts/ipfs-image/files/configure-kubo.sh`): API on 127.0.0.1, swarm
//! on 127.0.0.1 (or a node's veth address in a multi-node test), empty Bootstrap, MDNS off, no
//! routing, no AutoConf, and it runs with the chart's daemon flags, GC enabled.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::process::{Daemon, free_port, log_tail as tail, wait_until};

/// The chart's Kubo daemon flags (`ipfs-image.kuboContainer` in `_helpers.tpl`).
pub const KUBO_DAEMON_ARGS: &[&str] = &[
    "daemon",
    "--migrate=true",
    "--enable-gc",
    "--agent-version-suffix=ipfs-image",
];

/// The `ipfs` binary: `$IPFS_BIN`, else the one `e2e/deps.sh` built. Panics when there is none:
/// a test that needs IPFS fails, it does not pass vacuously.
pub fn kubo_binary() -> PathBuf {
    let path = std::env::var_os("IPFS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("e2e/.deps/bin/ipfs"));
    assert!(
        path.exists(),
        "no Kubo at {}: run `bash e2e/deps.sh` (it builds Kubo from e2e/tools/kubo)",
        path.display()
    );
    path
}

/// `ipfs version` of [`kubo_binary`], asked once per test process.
pub fn kubo_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let out = Command::new(kubo_binary())
            .arg("version")
            .output()
            .expect("run ipfs version");
        assert!(out.status.success(), "ipfs version failed");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
}

/// The chart's repo configuration script, run on every test repo as the kubo-init container runs it.
fn configure_script() -> PathBuf {
    crate::workspace_root().join("charts/ipfs-image/files/configure-kubo.sh")
}

/// Where a daemon listens. The API is always on 127.0.0.1 (of the namespace it runs in); the
/// swarm on `swarm_ip` (a node's veth address in a multi-node test). Ports default to free ones;
/// give the old ones to restart a daemon where its agent and peers expect it.
#[derive(Debug, Clone, Copy)]
pub struct IpfsNet {
    pub swarm_ip: Ipv4Addr,
    pub api_port: Option<u16>,
    pub swarm_port: Option<u16>,
    /// The HTTP gateway on 127.0.0.1, as the chart gives the agents' Kubo (the agent reads blobs
    /// there).
    pub gateway_port: Option<u16>,
    /// A private network: the pre-shared key installed as `swarm.key` in the repo, as the chart
    /// does; the daemon then runs under `LIBP2P_FORCE_PNET`. Kept on restarts.
    pub swarm_key: Option<[u8; 32]>,
}

impl Default for IpfsNet {
    fn default() -> Self {
        Self {
            swarm_ip: Ipv4Addr::LOCALHOST,
            api_port: None,
            swarm_port: None,
            gateway_port: None,
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
    /// `http://127.0.0.1:<port>`
    pub api_url: String,
    pub api_port: u16,
    /// `http://127.0.0.1:<port>` of its gateway (loopback only).
    pub gateway_url: String,
    pub gateway_port: u16,
    pub swarm_ip: Ipv4Addr,
    pub swarm_port: u16,
    pub swarm_key: Option<[u8; 32]>,
    pub peer_id: String,
    pub repo: PathBuf,
    daemon: Daemon,
    _dir: Option<tempfile::TempDir>,
}

impl IpfsDaemon {
    pub fn start() -> Result<Self> {
        Self::start_with(IpfsNet::default())
    }

    /// A daemon with its swarm (and ports) as `net` says.
    pub fn start_with(net: IpfsNet) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("testkit-ipfs-").tempdir()?;
        let repo = dir.path().join("repo");
        // A port taken between our probe and the daemon's bind is retried with new ports.
        let mut last = None;
        for _ in 0..3 {
            match Self::start_in_with(&repo, net) {
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
    pub fn start_in(repo: &Path) -> Result<Self> {
        Self::start_in_with(repo, IpfsNet::default())
    }

    /// Start (or restart) a daemon on `repo`, listening as `net` says.
    pub fn start_in_with(repo: &Path, net: IpfsNet) -> Result<Self> {
        let api = net.api_port.unwrap_or_else(free_port);
        let swarm = net.swarm_port.unwrap_or_else(free_port);
        let gateway = net.gateway_port.unwrap_or_else(free_port);
        std::fs::create_dir_all(repo)?;
        configure(
            repo,
            api,
            gateway,
            net.swarm_ip,
            swarm,
            net.swarm_key.as_ref(),
        )?;
        let mut cmd = base_command(repo);
        cmd.args(KUBO_DAEMON_ARGS);
        if net.swarm_key.is_some() {
            // Refuse to run at all without the key (Kubo's own guard).
            cmd.env("LIBP2P_FORCE_PNET", "1");
        }
        eprintln!(
            "testkit: starting {} ({}) on {}",
            kubo_version(),
            kubo_binary().display(),
            repo.display()
        );
        let daemon = Daemon::spawn("ipfs", cmd, &repo.join("daemon.log"))?;
        let config: Value = serde_json::from_slice(&std::fs::read(repo.join("config"))?)?;
        let peer_id = config["Identity"]["PeerID"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut this = Self {
            api_url: format!("http://127.0.0.1:{api}"),
            api_port: api,
            gateway_url: format!("http://127.0.0.1:{gateway}"),
            gateway_port: gateway,
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
            gateway_port: Some(self.gateway_port),
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

    /// Kill the daemon abruptly (SIGKILL), keeping the repo.
    pub fn kill(&mut self) {
        self.daemon.kill();
    }

    /// Take ownership of the repo directory (so a restarted daemon can reuse it).
    pub fn keep_repo(&mut self) -> Option<tempfile::TempDir> {
        self._dir.take()
    }

    /// Remove `dir` (a repo's temporary directory) when this daemon is dropped.
    pub fn adopt_repo_dir(&mut self, dir: Option<tempfile::TempDir>) {
        if dir.is_some() {
            self._dir = dir;
        }
    }
}

fn base_command(repo: &Path) -> Command {
    let mut cmd = Command::new(kubo_binary());
    cmd.env("IPFS_PATH", repo).env("IPFS_TELEMETRY", "off");
    cmd
}

/// A `swarm.key` file as Kubo writes it.
pub fn swarm_key_file(key: &[u8; 32]) -> String {
    format!("/key/swarm/psk/1.0.0/\n/base16/\n{}\n", hex::encode(key))
}

/// Run the chart's kubo-init script on `repo` (creating it when new), with the chart's default
/// values but this test's ports, then check that nothing could reach the internet.
fn configure(
    repo: &Path,
    api: u16,
    gateway: u16,
    swarm_ip: Ipv4Addr,
    swarm: u16,
    swarm_key: Option<&[u8; 32]>,
) -> Result<()> {
    let bin_dir = kubo_binary()
        .parent()
        .expect("binary has a directory")
        .to_owned();
    let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))?;
    let key_file = repo.with_extension("swarm.key");
    let mut cmd = Command::new("sh");
    cmd.arg(configure_script())
        .env("PATH", path)
        .env("IPFS_PATH", repo)
        .env("IPFS_TELEMETRY", "off")
        .env("KUBO_API_PORT", api.to_string())
        .env("KUBO_GATEWAY_PORT", gateway.to_string())
        .env(
            "KUBO_SWARM_ADDRESSES",
            json!([format!("/ip4/{swarm_ip}/tcp/{swarm}")]).to_string(),
        )
        .env("KUBO_STORAGE_MAX", "20GB")
        .env("KUBO_ROUTING_TYPE", "none")
        .env("KUBO_BOOTSTRAP", "[]");
    match swarm_key {
        Some(key) => {
            std::fs::write(&key_file, swarm_key_file(key))?;
            cmd.env("KUBO_PRIVATE_NETWORK", "true")
                .env("KUBO_SWARM_KEY_FILE", &key_file);
        }
        None => {
            cmd.env("KUBO_PRIVATE_NETWORK", "false");
        }
    }
    let out = cmd.output().context("run configure-kubo.sh")?;
    ensure!(
        out.status.success(),
        "configure-kubo.sh failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Refuse to start anything that could reach beyond this machine.
    let c: Value = serde_json::from_slice(&std::fs::read(repo.join("config"))?)?;
    ensure!(c["Bootstrap"] == json!([]), "Bootstrap must be empty");
    ensure!(
        c["Discovery"]["MDNS"]["Enabled"] == json!(false),
        "MDNS must be off"
    );
    ensure!(
        c["Routing"]["Type"] == json!("none"),
        "routing must be none"
    );
    ensure!(
        c["AutoConf"]["Enabled"] == json!(false),
        "AutoConf must be off"
    );
    ensure!(
        c["Addresses"]["API"] == json!(format!("/ip4/127.0.0.1/tcp/{api}")),
        "API must be on loopback: {}",
        c["Addresses"]["API"]
    );
    Ok(())
}
