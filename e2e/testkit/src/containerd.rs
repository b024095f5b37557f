//! A private containerd: own root, state, socket and registry `config_path`, no TCP listeners.
//! `ctr` talks to it through the socket. Which containerd is the environment's choice, so the
//! same tests run on both: Debian's 1.6 (the default) or, with `TESTKIT_CONTAINERD=2`, the
//! 2.x that `e2e/deps.sh` builds (with its own runc shim; its CRI pulls through the transfer
//! service).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::{Daemon, wait_until};

/// The containerd release line a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerdLine {
    /// Debian 12's containerd 1.6 (`/usr/bin/containerd`, `ctr`).
    V1,
    /// containerd 2.x built from its Go module (`e2e/.deps/bin/containerd2`, `ctr2`).
    V2,
}

impl ContainerdLine {
    /// `TESTKIT_CONTAINERD`: unset or `1` for 1.6, `2` for 2.x; anything else is an error,
    /// so a typo never silently tests the default.
    pub fn from_env() -> Self {
        match std::env::var("TESTKIT_CONTAINERD").as_deref() {
            Err(_) | Ok("") | Ok("1") => Self::V1,
            Ok("2") => Self::V2,
            Ok(other) => panic!("TESTKIT_CONTAINERD={other:?}: expected 1 or 2"),
        }
    }

    fn daemon(self) -> PathBuf {
        match self {
            Self::V1 => PathBuf::from("containerd"),
            // The real file: containerd finds its shim next to its own binary.
            Self::V2 => std::fs::canonicalize(crate::deps_binary("containerd2"))
                .expect("resolving containerd2"),
        }
    }

    fn ctr(self) -> PathBuf {
        match self {
            Self::V1 => PathBuf::from("ctr"),
            Self::V2 => crate::deps_binary("ctr2"),
        }
    }

    /// The config file: 1.6 reads version 2 (CRI in `io.containerd.grpc.v1.cri`), 2.x version 3
    /// (registry settings in `io.containerd.cri.v1.images`).
    fn config(self, root: &Path, state: &Path, sock: &Path, hosts: &str) -> String {
        let (root, state, sock) = (root.display(), state.display(), sock.display());
        let common = format!(
            "root = \"{root}\"\nstate = \"{state}\"\n[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n"
        );
        match self {
            Self::V1 => format!(
                "version = 2\n{common}[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"{hosts}\"\n"
            ),
            Self::V2 => format!(
                "version = 3\n{common}[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"{hosts}\"\n"
            ),
        }
    }

    /// `containerd --version` of this line's binary, e.g. `v2.4.2` or `1.6.20~ds1`.
    pub fn version(self) -> String {
        let out = Command::new(self.daemon())
            .arg("--version")
            .output()
            .expect("running containerd --version");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace().nth(2).unwrap_or(&text).to_owned()
    }
}

pub struct Containerd {
    pub socket: PathBuf,
    /// The CRI plugin's registry `config_path` (where `hosts.toml` files go).
    pub hosts_dir: PathBuf,
    /// Which containerd this is.
    pub line: ContainerdLine,
    /// The `config.toml` it runs with.
    pub config_file: PathBuf,
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Containerd {
    pub fn start() -> Result<Self> {
        Self::start_with_config_path(|hosts| hosts.display().to_string())
    }

    /// Start with the CRI `config_path` that `config_path(hosts_dir)` returns (a list, say),
    /// to see what containerd itself makes of it.
    pub fn start_with_config_path(config_path: impl FnOnce(&Path) -> String) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("testkit-ctd-").tempdir()?;
        let socket = dir.path().join("containerd.sock");
        let hosts_dir = dir.path().join("certs.d");
        std::fs::create_dir_all(&hosts_dir)?;
        let line = ContainerdLine::from_env();
        let config = line.config(
            &dir.path().join("root"),
            &dir.path().join("state"),
            &socket,
            &config_path(&hosts_dir),
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config)?;
        let daemon_bin = line.daemon();
        let mut cmd = Command::new(&daemon_bin);
        cmd.arg("--config").arg(&config_path);
        if let Some(bin_dir) = daemon_bin.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Its own shim before Debian's 1.6 one (a 2.x daemon cannot drive the old shim).
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{}:{path}", bin_dir.display()));
        }
        let log = dir.path().join("containerd.log");
        let mut daemon = Daemon::spawn("containerd", cmd, &log)?;
        let sock = socket.clone();
        wait_until("containerd", Duration::from_secs(30), || {
            if !daemon.is_running() {
                bail!(
                    "containerd exited: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            Ok(Command::new(line.ctr())
                .arg("-a")
                .arg(&sock)
                .arg("version")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false))
        })?;
        eprintln!("testkit: containerd {} ({line:?})", line.version());
        Ok(Self {
            socket,
            hosts_dir,
            config_file: config_path,
            line,
            daemon,
            dir,
        })
    }

    /// Run `ctr -a <socket> <args>` and return its output (whatever the exit status).
    pub fn ctr(&self, args: &[&str]) -> Result<Output> {
        Command::new(self.line.ctr())
            .arg("-a")
            .arg(&self.socket)
            .args(args)
            .output()
            .context("running ctr")
    }

    /// Run `ctr` and fail with its output unless it succeeds; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.ctr(args)?;
        if !out.status.success() {
            bail!(
                "ctr {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ctr images pull --hosts-dir <hosts_dir> <image>` (the pull happens in ctr itself).
    pub fn pull_with_hosts_dir(&self, image: &str) -> Result<String> {
        let hosts = self.hosts_dir.display().to_string();
        self.ctr_ok(&["images", "pull", "--hosts-dir", &hosts, image])
    }

    /// The manifest/index digest containerd recorded for `image`.
    pub fn image_digest(&self, image: &str) -> Result<String> {
        let out = self.ctr_ok(&["images", "ls"])?;
        for line in out.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.first() == Some(&image) {
                return cols
                    .get(2)
                    .map(|s| (*s).to_owned())
                    .context("digest column");
            }
        }
        bail!("image {image} not in `ctr images ls`:\n{out}")
    }

    /// `ctr run --rm <image> <id> <args…>` and return stdout.
    pub fn run(&self, image: &str, args: &[&str]) -> Result<String> {
        let id = format!("testkit-{}-{}", std::process::id(), rand_suffix());
        // The container's stdout goes straight to a file the shim opens (`--log-uri file://`),
        // not through ctr's FIFO copy, which can lose the output of a process that exits at
        // once (seen: an empty `echo` under load).
        let log = self.dir.path().join(format!("{id}.out"));
        let uri = format!("file://{}", log.display());
        let mut all = vec!["run", "--rm", "--log-uri", &uri, image, &id];
        all.extend_from_slice(args);
        let printed = self.ctr_ok(&all)?;
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        Ok(printed + &logged)
    }

    /// Write `<hosts_dir>/<host>/hosts.toml`.
    pub fn write_hosts_toml(&self, host: &str, contents: &str) -> Result<()> {
        let d = self.hosts_dir.join(host);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("hosts.toml"), contents)?;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn stop(&mut self) {
        self.daemon.stop();
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(nanos) ^ (N.fetch_add(1, Ordering::Relaxed) << 32)
}

impl Containerd {
    /// CRI `PullImage`, what kubelet calls: the daemon pulls using its `config_path` hosts.
    /// Returns the image ref containerd reports. Call from synchronous code.
    pub fn cri_pull(&self, image: &str) -> Result<String> {
        use k8s_cri::v1::ImageSpec;
        use k8s_cri::v1::PullImageRequest;
        use k8s_cri::v1::image_service_client::ImageServiceClient;

        let socket = self.socket.clone();
        let image = image.to_owned();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let channel = tonic::transport::Endpoint::try_from("http://localhost")?
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                            tokio::net::UnixStream::connect(socket).await?,
                        ))
                    }
                }))
                .await?;
            let mut client = ImageServiceClient::new(channel);
            let request = PullImageRequest {
                image: Some(ImageSpec {
                    image,
                    ..Default::default()
                }),
                ..Default::default()
            };
            let response =
                tokio::time::timeout(Duration::from_secs(300), client.pull_image(request))
                    .await??;
            Ok(response.into_inner().image_ref)
        })
    }
}
