//! A private podman (Debian's; rootful, no daemon): its own storage, run root and HOME, so the
//! only registries.conf drop-ins it reads besides the machine's are the ones a test writes into
//! [`Podman::registries_dir`]. podman reads registries.conf through the same library
//! (containers/image) as CRI-O, which is why it stands in for CRI-O here. Storage is `vfs`
//! (plain directories, no mounts left behind) inside a temporary directory removed on drop;
//! containers are run with `--rm`. Nothing global is touched (no `podman system reset`: it
//! would also remove the machine's networks).

use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

pub struct Podman {
    /// `$HOME/.config/containers/registries.conf.d`: podman reads drop-ins here (after the
    /// machine's `/etc/containers/registries.conf.d`).
    pub registries_dir: PathBuf,
    dir: tempfile::TempDir,
}

impl Podman {
    pub fn new() -> Result<Self> {
        let version = Command::new("podman")
            .arg("--version")
            .output()
            .context("podman is not installed (e2e/deps.sh installs Debian's)")?;
        if !version.status.success() {
            bail!("podman --version failed: {version:?}");
        }
        eprintln!(
            "testkit: {}",
            String::from_utf8_lossy(&version.stdout).trim()
        );
        let dir = tempfile::Builder::new()
            .prefix("testkit-podman-")
            .tempdir()?;
        let registries_dir = dir.path().join("home/.config/containers/registries.conf.d");
        std::fs::create_dir_all(&registries_dir)?;
        // Only our own main file: no unqualified-search registries, no short-name aliases.
        std::fs::write(dir.path().join("registries.conf"), "")?;
        Ok(Self {
            registries_dir,
            dir,
        })
    }

    /// `podman <args>` with this instance's storage and configuration.
    pub fn command(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.env("HOME", d.join("home"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env("TMPDIR", d)
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(args);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Result<Output> {
        self.command(args)
            .output()
            .with_context(|| format!("podman {args:?}"))
    }

    /// `podman <args>`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        if !out.status.success() {
            bail!(
                "podman {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `podman run --rm` of `image` with `args`: no network, and low open-file and process
    /// limits. podman's defaults raise both, and on these machines (no CAP_SYS_RESOURCE) runc
    /// may not even set them to the values this process has; it may always lower them.
    pub fn run_container(&self, image: &str, args: &[&str]) -> Result<String> {
        let mut all = vec!["run", "--rm", "--network", "none"];
        all.extend([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            image,
        ]);
        all.extend_from_slice(args);
        self.ok(&all)
    }

    /// The `name@digest` references podman recorded for a pulled image (one per manifest it
    /// was pulled with: an image pulled by CID and by its original name has both).
    pub fn repo_digests(&self, image: &str) -> Result<Vec<String>> {
        let out = self.ok(&[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            image,
        ])?;
        serde_json::from_str(out.trim()).with_context(|| format!("RepoDigests of {image}: {out}"))
    }
}
