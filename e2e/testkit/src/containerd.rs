//! A private containerd (Debian `containerd` + `runc`): own root, state, socket and registry
//! `config_path`, no TCP listeners. `ctr` talks to it through the socket.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::{Daemon, wait_until};

pub struct Containerd {
    pub socket: PathBuf,
    /// The CRI plugin's registry `config_path` (where `hosts.toml` files go).
    pub hosts_dir: PathBuf,
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Containerd {
    pub fn start() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("testkit-ctd-").tempdir()?;
        let socket = dir.path().join("containerd.sock");
        let hosts_dir = dir.path().join("certs.d");
        std::fs::create_dir_all(&hosts_dir)?;
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "{hosts}"
"#,
            root = dir.path().join("root").display(),
            state = dir.path().join("state").display(),
            sock = socket.display(),
            hosts = hosts_dir.display(),
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config)?;
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(&config_path);
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
            Ok(Command::new("ctr")
                .arg("-a")
                .arg(&sock)
                .arg("version")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false))
        })?;
        Ok(Self {
            socket,
            hosts_dir,
            daemon,
            dir,
        })
    }

    /// Run `ctr -a <socket> <args>` and return its output (whatever the exit status).
    pub fn ctr(&self, args: &[&str]) -> Result<Output> {
        Command::new("ctr")
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
        let mut all = vec!["run", "--rm", image, &id];
        all.extend_from_slice(args);
        self.ctr_ok(&all)
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
