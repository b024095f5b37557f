//! A small tmpfs of the test's own, to run a daemon out of disk for real (`ENOSPC` from the
//! kernel, not a simulated error). Unmounted when dropped, also when the test panics; whatever
//! uses it must be stopped first.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

pub struct Tmpfs {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl Tmpfs {
    /// Mount a tmpfs of `bytes` on a new temporary directory (needs root, as the netns tests).
    pub fn mount(bytes: u64) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("testkit-tmpfs-")
            .tempdir()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .status()
            .context("running mount")?;
        ensure!(status.success(), "mount -t tmpfs failed: {status}");
        Ok(Self { dir, mounted: true })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the tmpfs.
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.mounted {
            // Lazy: a file still open must not leave the mount (and the test's directory) behind.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
            self.mounted = false;
        }
    }
}
