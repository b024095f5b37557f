//! containerd registry configuration: `hosts.toml` files under containerd's `config_path`
//! (never containerd's own config.toml). A registry's existing file (an internal pull-through
//! cache, a CA) is merged: the agent's mirror first, then every host it had, with its `server`
//! and settings kept. Files we replace are backed up and restored byte for byte by `cleanup`;
//! files we did not write are never deleted.

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

    fn mirror_file(&self, registry: &MirroredRegistry, previous: Option<&str>) -> String {
        let mut s = format!("{MARKER}\n");
        let theirs = match previous.map(str::parse::<toml::Table>) {
            None => None,
            Some(Ok(table)) => {
                s.push_str(&format!(
                    "# Merged with the file this one replaced ({BACKUP}): this node's mirror first, then its hosts.\n"
                ));
                Some(table)
            }
            Some(Err(e)) => {
                let why = e.message().replace('\n', " ");
                s.push_str(&format!(
                    "# The file this one replaced ({BACKUP}) is not valid TOML ({why}); it is kept there, not merged.\n"
                ));
                None
            }
        };
        let mut table = toml::Table::new();
        // Their upstream, when they named one: this node's own choice for this registry.
        match theirs.as_ref().and_then(|t| t.get("server")) {
            Some(server) => {
                table.insert("server".into(), server.clone());
            }
            None => {
                if let Some(u) = &registry.upstream {
                    table.insert("server".into(), u.clone().into());
                }
            }
        }
        let mut hosts = toml::Table::new();
        let mut mirror = toml::Table::new();
        mirror.insert(
            "capabilities".into(),
            toml::Value::Array(vec!["pull".into(), "resolve".into()]),
        );
        if let Some(t) = &self.dial_timeout {
            mirror.insert("dial_timeout".into(), t.clone().into());
        }
        hosts.insert(self.mirror_endpoint.clone(), mirror.into());
        if let Some(theirs) = &theirs {
            // Their other settings (the server's CA, headers, …) as they were.
            for (key, value) in theirs
                .iter()
                .filter(|(k, _)| *k != "server" && *k != "host")
            {
                table.insert(key.clone(), value.clone());
            }
            if let Some(toml::Value::Table(their_hosts)) = theirs.get("host") {
                for (host, value) in their_hosts
                    .iter()
                    .filter(|(h, _)| **h != self.mirror_endpoint)
                {
                    hosts.insert(host.clone(), value.clone());
                }
            }
        }
        table.insert("host".into(), hosts.into());
        s.push_str(&toml::to_string(&table).expect("a TOML table serialises"));
        s
    }

    /// Write the local `ipfs/<CID>` host and one mirror file per registry.
    pub fn write(&self, registries: &[MirroredRegistry]) -> Result<Vec<PathBuf>> {
        let mut written = vec![write_one(&self.config_path, &self.local_host, |_| {
            self.local_file()
        })?];
        for r in registries {
            written.push(write_one(&self.config_path, &r.host, |previous| {
                self.mirror_file(r, previous)
            })?);
        }
        Ok(written)
    }
}

/// Write `host`'s file with `contents(previous)`, where `previous` is the file ours replaced (the
/// backup, once one exists), so a rewrite merges the user's file, never our own.
fn write_one(
    config_path: &Path,
    host: &str,
    contents: impl FnOnce(Option<&str>) -> String,
) -> Result<PathBuf> {
    let dir = config_path.join(host);
    if !dir.exists() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join(CREATED), "")?;
    }
    let file = dir.join("hosts.toml");
    let backup = dir.join(BACKUP);
    if file.exists() && !is_ours(&file) && !backup.exists() {
        std::fs::rename(&file, &backup)
            .with_context(|| format!("backing up {}", file.display()))?;
    }
    let previous = match std::fs::read_to_string(&backup) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", backup.display())),
    };
    write_atomically(&file, &contents(previous.as_deref()))?;
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
        assert!(docker.starts_with(MARKER), "{docker}");
        assert!(
            docker.contains("server = \"https://mine\""),
            "their upstream is kept: {docker}"
        );
        let table: toml::Table = docker.parse().unwrap();
        assert_eq!(
            table["host"]["http://127.0.0.1:5050"]["dial_timeout"].as_str(),
            Some("200ms")
        );
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

    /// An existing file with its own mirror (a pull-through cache with a CA) and settings: ours
    /// comes first, theirs after in their order, everything of theirs kept; rewriting merges the
    /// backup again (never our own file); cleanup restores it byte for byte.
    #[test]
    fn merges_an_existing_file_with_its_mirror() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("ghcr.io")).unwrap();
        let theirs = "# our pull-through cache\nserver = \"https://ghcr.io\"\nca = \"/etc/ssl/corp.pem\"\n\n[host.\"https://cache-b.corp\"]\n  capabilities = [\"pull\"]\n\n[host.\"https://cache-a.corp\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"/etc/ssl/cache.pem\"\n  [host.\"https://cache-a.corp\".header]\n    x-team = [\"images\"]\n";
        std::fs::write(d.path().join("ghcr.io/hosts.toml"), theirs).unwrap();
        let regs = vec![MirroredRegistry::parse("ghcr.io").unwrap()];
        for _ in 0..2 {
            config(d.path()).write(&regs).unwrap();
            let merged = std::fs::read_to_string(d.path().join("ghcr.io/hosts.toml")).unwrap();
            assert!(merged.starts_with(MARKER));
            let table: toml::Table = merged.parse().unwrap();
            assert_eq!(table["server"].as_str(), Some("https://ghcr.io"));
            assert_eq!(table["ca"].as_str(), Some("/etc/ssl/corp.pem"));
            let hosts: Vec<&String> = table["host"].as_table().unwrap().keys().collect();
            assert_eq!(
                hosts,
                [
                    "http://127.0.0.1:5050",
                    "https://cache-b.corp",
                    "https://cache-a.corp"
                ],
                "{merged}"
            );
            let a = &table["host"]["https://cache-a.corp"];
            assert_eq!(a["ca"].as_str(), Some("/etc/ssl/cache.pem"));
            assert_eq!(a["header"]["x-team"][0].as_str(), Some("images"));
        }
        cleanup(d.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("ghcr.io/hosts.toml")).unwrap(),
            theirs
        );
    }

    #[test]
    fn a_file_that_is_not_toml_is_kept_aside_not_merged() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("quay.io")).unwrap();
        std::fs::write(d.path().join("quay.io/hosts.toml"), "server = [oops\n").unwrap();
        config(d.path())
            .write(&[MirroredRegistry::parse("quay.io").unwrap()])
            .unwrap();
        let ours = std::fs::read_to_string(d.path().join("quay.io/hosts.toml")).unwrap();
        assert!(ours.contains("is not valid TOML"), "{ours}");
        let table: toml::Table = ours.parse().unwrap();
        assert_eq!(table["server"].as_str(), Some("https://quay.io"));
        cleanup(d.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("quay.io/hosts.toml")).unwrap(),
            "server = [oops\n"
        );
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
