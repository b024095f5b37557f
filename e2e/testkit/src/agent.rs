//! The node agent binary (`ipfs-image-agent serve`) on free loopback ports.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::process::{Daemon, free_port, wait_until};

pub struct Agent {
    /// `127.0.0.1:<port>` of the registry.
    pub addr: String,
    /// `127.0.0.1:<port>` of /metrics, /healthz, /readyz.
    pub metrics_addr: String,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Start `bin serve` against `ipfs_api` on free ports, with an optional mirror catalog file.
    pub fn start(
        bin: &Path,
        ipfs_api: &str,
        images: Option<&Path>,
        extra: &[&str],
    ) -> Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            match Self::start_on(
                bin,
                ipfs_api,
                &format!("127.0.0.1:{}", free_port()),
                images,
                extra,
            ) {
                Ok(a) => return Ok(a),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried"))
    }

    /// Start on a given registry address (metrics on a free port).
    pub fn start_on(
        bin: &Path,
        ipfs_api: &str,
        addr: &str,
        images: Option<&Path>,
        extra: &[&str],
    ) -> Result<Self> {
        Self::start_env(bin, ipfs_api, addr, images, extra, &[])
    }

    /// In a cluster: `serve --kubernetes` as the identity of `kubeconfig` (on free ports).
    pub fn start_in_cluster(
        bin: &Path,
        ipfs_api: &str,
        kubeconfig: &Path,
        extra: &[&str],
    ) -> Result<Self> {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["--kubernetes"];
        args.extend(extra);
        let env = [("KUBECONFIG", kubeconfig.as_os_str())];
        Self::start_env(bin, ipfs_api, &addr, None, &args, &env)
    }

    fn start_env(
        bin: &Path,
        ipfs_api: &str,
        addr: &str,
        images: Option<&Path>,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("testkit-agent-")
            .tempdir()?;
        let mut last = None;
        for _ in 0..3 {
            let addr = addr.to_owned();
            let metrics_addr = format!("127.0.0.1:{}", free_port());
            let mut cmd = Command::new(bin);
            cmd.args([
                "--ipfs-api",
                ipfs_api,
                "serve",
                "--listen",
                &addr,
                "--metrics-listen",
                &metrics_addr,
            ])
            .args(extra);
            if let Some(images) = images {
                cmd.arg("--images").arg(images);
            }
            cmd.env("RUST_LOG", "info").envs(env.iter().copied());
            let log = dir.path().join("agent.log");
            let mut daemon = Daemon::spawn("ipfs-image-agent", cmd, &log)?;
            let http = crate::http_client(Duration::from_secs(2));
            let url = format!("http://{addr}/v2/");
            let ready = wait_until("ipfs-image-agent", Duration::from_secs(20), || {
                if !daemon.is_running() {
                    bail!(
                        "agent exited: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                Ok(http
                    .get(&url)
                    .send()
                    .map(|r| r.status().is_success())
                    .unwrap_or(false))
            });
            match ready {
                Ok(()) => {
                    return Ok(Self {
                        addr,
                        metrics_addr,
                        daemon,
                        _dir: dir,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried"))
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("agent.log")).unwrap_or_default()
    }

    /// The Prometheus text exposition.
    pub fn metrics(&self) -> String {
        crate::http_client(Duration::from_secs(5))
            .get(format!("http://{}/metrics", self.metrics_addr))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default()
    }

    /// Sum of a metric's samples whose label set contains every `label="value"` given.
    pub fn metric_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        sum_metric(&self.metrics(), name, labels)
    }

    pub fn stop(&mut self) {
        self.daemon.stop();
    }
}

/// Sum the samples of `name` in a Prometheus text exposition that carry all `labels`.
pub fn sum_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")));
            if all { value.parse::<f64>().ok() } else { None }
        })
        .sum()
}
