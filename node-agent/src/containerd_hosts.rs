//! containerd registry configuration: `hosts.toml` files under containerd's `config_path`
//! (never containerd's own config.toml). Files we replace are backed up and restored by
//! `cleanup`; files we did not write are never deleted.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::managed_file::{has_marker, write_atomically};

/// First line of every file we write; how `cleanup` recognises ours.
pub const MARKER: &str =
    "# Managed by ipfs-image-agent; `ipfs-image-agent cleanup` restores the previous file.";
const BACKUP: &str = "hosts.toml.ipfs-image-agent.bak";
const CREATED: &str = ".created-by-ipfs-image-agent";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirroredRegistry {
    /// Directory name under config_path: a host (`docker.io`, `registry:5000`) or `_default`.
    pub host: String,
    /// Where containerd goes when the mirror answers 404; `None` for `_default` (the requested host).
    pub upstream: Option<String>,
}

impl MirroredRegistry {
    /// `HOST` or `HOST=UPSTREAM_URL`.
    pub fn parse(spec: &str) -> Result<Self> {
        let (host, upstream) = match spec.split_once('=') {
            Some((h, u)) => (h.trim(), Some(u.trim().to_owned())),
            None => (spec.trim(), None),
        };
        let host_ok = !host.is_empty()
            && host != "."
            && host != ".."
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_' | b'[' | b']')
            });
        if !host_ok {
            bail!("invalid registry host {host:?}");
        }
        if let Some(u) = &upstream
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            bail!("upstream {u:?} must be an http:// or https:// URL");
        }
        let upstream = match (host, upstream) {
            ("_default", u) => u,
            (_, Some(u)) => Some(u),
            ("docker.io", None) => Some("https://registry-1.docker.io".to_owned()),
            (h, None) => Some(format!("https://{h}")),
        };
        Ok(Self {
            host: host.to_owned(),
            upstream,
        })
    }
}

pub struct HostsConfig {
    pub config_path: PathBuf,
    /// The name pods use for `ipfs/<CID>` images, e.g. `localhost:5050`.
    pub local_host: String,
    /// The agent's address as containerd reaches it, e.g. `http://127.0.0.1:5050`.
    pub mirror_endpoint: String,
    /// How long containerd may take to connect to the mirror before trying the next host.
    pub dial_timeout: Option<String>,
}

impl HostsConfig {
    fn local_file(&self) -> String {
        // containerd 1.6 rejects a hosts.toml without a `host` table ("invalid `host` tree").
        let e = &self.mirror_endpoint;
        format!(
            "{MARKER}\nserver = \"{e}\"\n\n[host.\"{e}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        )
    }

    fn mirror_file(&self, registry: &MirroredRegistry) -> String {
        let mut s = format!("{MARKER}\n");
        if let Some(u) = &registry.upstream {
            s.push_str(&format!("server = \"{u}\"\n"));
        }
        s.push_str(&format!(
            "\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            self.mirror_endpoint
        ));
        if let Some(t) = &self.dial_timeout {
            s.push_str(&format!("  dial_timeout = \"{t}\"\n"));
        }
        s
    }

    /// Write the local `ipfs/<CID>` host and one mirror file per registry.
    pub fn write(&self, registries: &[MirroredRegistry]) -> Result<Vec<PathBuf>> {
        let mut written = vec![write_one(
            &self.config_path,
            &self.local_host,
            &self.local_file(),
        )?];
        for r in registries {
            written.push(write_one(&self.config_path, &r.host, &self.mirror_file(r))?);
        }
        Ok(written)
    }
}

fn write_one(config_path: &Path, host: &str, contents: &str) -> Result<PathBuf> {
    let dir = config_path.join(host);
    if !dir.exists() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join(CREATED), "")?;
    }
    let file = dir.join("hosts.toml");
    if file.exists() && !is_ours(&file) && !dir.join(BACKUP).exists() {
        std::fs::rename(&file, dir.join(BACKUP))
            .with_context(|| format!("backing up {}", file.display()))?;
    }
    write_atomically(&file, contents)?;
    Ok(file)
}

fn is_ours(file: &Path) -> bool {
    has_marker(file, MARKER)
}

/// Remove our files, restore backups, remove directories we created. Returns what changed.
pub fn cleanup(config_path: &Path) -> Result<Vec<String>> {
    let mut changed = Vec::new();
    let Ok(dirs) = std::fs::read_dir(config_path) else {
        return Ok(changed);
    };
    for dir in dirs.flatten().map(|d| d.path()).filter(|p| p.is_dir()) {
        let file = dir.join("hosts.toml");
        if file.exists() && is_ours(&file) {
            std::fs::remove_file(&file)?;
            changed.push(format!("removed {}", file.display()));
        }
        if dir.join(BACKUP).exists() && !file.exists() {
            std::fs::rename(dir.join(BACKUP), &file)?;
            changed.push(format!("restored {}", file.display()));
        }
        if dir.join(CREATED).exists() {
            std::fs::remove_file(dir.join(CREATED))?;
            if std::fs::read_dir(&dir)?.next().is_none() {
                std::fs::remove_dir(&dir)?;
                changed.push(format!("removed {}", dir.display()));
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> HostsConfig {
        HostsConfig {
            config_path: dir.to_owned(),
            local_host: "localhost:5050".into(),
            mirror_endpoint: "http://127.0.0.1:5050".into(),
            dial_timeout: Some("200ms".into()),
        }
    }

    #[test]
    fn writes_backs_up_and_restores() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("docker.io")).unwrap();
        std::fs::write(
            d.path().join("docker.io/hosts.toml"),
            "server = \"https://mine\"\n",
        )
        .unwrap();
        let regs = vec![
            MirroredRegistry::parse("docker.io").unwrap(),
            MirroredRegistry::parse("_default").unwrap(),
        ];
        config(d.path()).write(&regs).unwrap();
        config(d.path()).write(&regs).unwrap(); // twice: the backup must still be the user's file
        let docker = std::fs::read_to_string(d.path().join("docker.io/hosts.toml")).unwrap();
        assert!(docker.contains("server = \"https://registry-1.docker.io\""));
        assert!(docker.contains("[host.\"http://127.0.0.1:5050\"]\n  capabilities = [\"pull\", \"resolve\"]\n  dial_timeout = \"200ms\""));
        let default = std::fs::read_to_string(d.path().join("_default/hosts.toml")).unwrap();
        assert!(
            !default.contains("server ="),
            "_default falls back to the requested host"
        );
        assert!(
            std::fs::read_to_string(d.path().join("localhost:5050/hosts.toml"))
                .unwrap()
                .contains("server = \"http://127.0.0.1:5050\"")
        );

        cleanup(d.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("docker.io/hosts.toml")).unwrap(),
            "server = \"https://mine\"\n"
        );
        assert!(!d.path().join("_default").exists());
        assert!(!d.path().join("localhost:5050").exists());
    }

    #[test]
    fn parses_registry_specs() {
        assert_eq!(
            MirroredRegistry::parse("127.0.0.1:5000=http://127.0.0.1:5000")
                .unwrap()
                .upstream
                .as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(
            MirroredRegistry::parse("ghcr.io")
                .unwrap()
                .upstream
                .as_deref(),
            Some("https://ghcr.io")
        );
        for bad in ["", "../etc", "a/b", "x=ftp://y"] {
            assert!(MirroredRegistry::parse(bad).is_err(), "{bad}");
        }
    }
}
