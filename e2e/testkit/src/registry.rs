//! The Debian `docker-registry` (CNCF distribution 2.8) on a free loopback port, optionally with
//! basic auth. Always started with our own config: the packaged one listens on all interfaces.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::{Daemon, free_port, wait_until};

pub struct Registry {
    /// `127.0.0.1:<port>`
    pub addr: String,
    pub credentials: Option<(String, String)>,
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// With `Some((user, password))`, every request needs HTTP basic auth.
    pub fn start_with(credentials: Option<(&str, &str)>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("testkit-registry-")
            .tempdir()?;
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once(&dir, credentials) {
                Ok((addr, daemon)) => {
                    let credentials = credentials.map(|(u, p)| (u.to_owned(), p.to_owned()));
                    return Ok(Self {
                        addr,
                        credentials,
                        daemon,
                        dir,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried"))
    }

    fn start_once(
        dir: &tempfile::TempDir,
        credentials: Option<(&str, &str)>,
    ) -> Result<(String, Daemon)> {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let mut config = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: {addr}}}\n",
            data.display()
        );
        if let Some((user, password)) = credentials {
            let htpasswd = dir.path().join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .context("htpasswd (apache2-utils)")?;
            if !out.status.success() {
                bail!("htpasswd failed");
            }
            std::fs::write(&htpasswd, out.stdout)?;
            config.push_str(&format!(
                "auth: {{htpasswd: {{realm: testkit, path: {}}}}}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&config_path);
        let mut daemon = Daemon::spawn("docker-registry", cmd, &dir.path().join("registry.log"))?;
        let url = format!("http://{addr}/v2/");
        let http = crate::http_client(Duration::from_secs(2));
        let log = dir.path().join("registry.log");
        wait_until("docker-registry", Duration::from_secs(20), || {
            if !daemon.is_running() {
                bail!(
                    "registry exited: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            // 401 counts as up when auth is on.
            Ok(http
                .get(&url)
                .send()
                .map(|r| r.status().as_u16() == 200 || r.status().as_u16() == 401)
                .unwrap_or(false))
        })?;
        Ok((addr, daemon))
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Stop the registry (to prove that something no longer depends on it).
    pub fn stop(&mut self) {
        self.daemon.stop();
    }

    pub fn is_running(&mut self) -> bool {
        self.daemon.is_running()
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// PUT a manifest or index as it is (blocking: call it outside async code). The registry
    /// checks what it checks on a push (referenced blobs and manifests exist, 4 MiB body limit).
    pub fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<()> {
        let url = format!("http://{}/v2/{repository}/manifests/{reference}", self.addr);
        let mut request = crate::http_client(Duration::from_secs(30))
            .put(&url)
            .header("content-type", media_type)
            .body(bytes.to_vec());
        if let Some((u, p)) = &self.credentials {
            request = request.basic_auth(u, Some(p));
        }
        let response = request.send().with_context(|| format!("PUT {url}"))?;
        let status = response.status();
        if !status.is_success() {
            bail!(
                "PUT {url}: {status}: {}",
                response.text().unwrap_or_default()
            );
        }
        Ok(())
    }

    /// skopeo `--dest-creds`/`--src-creds` value, if auth is on.
    pub fn creds_arg(&self) -> Option<String> {
        self.credentials.as_ref().map(|(u, p)| format!("{u}:{p}"))
    }
}
