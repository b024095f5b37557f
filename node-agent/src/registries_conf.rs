//! CRI-O and podman registry configuration: one `registries.conf.d` drop-in (containers-image's
//! format) that makes the agent the mirror of each registry. Neither reads `hosts.toml`, and
//! neither sends containerd's `?ns=`, so each mirror location names its upstream in the path:
//! `127.0.0.1:5050/docker.io` (see `registry::paths::registry_segment`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::managed_file::{has_marker, write_atomically};

use crate::registry::paths::registry_segment;

/// First line of the drop-in; how `cleanup` recognises ours.
pub const MARKER: &str = "# Managed by ipfs-image-agent; `ipfs-image-agent cleanup --registries-dir DIR` removes this file.";
/// Drop-ins are read in name order and later ones win: late, so a mirrored registry uses us.
pub const FILE_NAME: &str = "90-ipfs-image-agent.conf";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryMirror {
    /// The registry as images name it (`docker.io`, `registry.example:5000`).
    pub prefix: String,
    /// Where it really is, without a scheme (`prefix` itself unless given).
    pub location: String,
    /// The upstream is plain HTTP (`HOST=http://…`).
    pub insecure: bool,
}

impl RegistryMirror {
    /// `HOST` or `HOST=UPSTREAM_URL`, as `configure-containerd` takes them.
    pub fn parse(spec: &str) -> Result<Self> {
        let (prefix, upstream) = match spec.split_once('=') {
            Some((h, u)) => (h.trim(), Some(u.trim())),
            None => (spec.trim(), None),
        };
        if prefix == "_default" {
            bail!(
                "registries.conf has no catch-all mirror: name each registry to mirror (--registry HOST)"
            );
        }
        if registry_segment(prefix).is_none() {
            bail!("invalid registry host {prefix:?} (lower-case host[:port])");
        }
        let (location, insecure) = match upstream {
            None => (prefix.to_owned(), false),
            Some(u) => {
                let (rest, insecure) = if let Some(r) = u.strip_prefix("http://") {
                    (r, true)
                } else if let Some(r) = u.strip_prefix("https://") {
                    (r, false)
                } else {
                    bail!("upstream {u:?} must be an http:// or https:// URL");
                };
                (rest.trim_end_matches('/').to_owned(), insecure)
            }
        };
        Ok(Self {
            prefix: prefix.to_owned(),
            location,
            insecure,
        })
    }
}

pub struct DropIn {
    pub config_dir: PathBuf,
    /// The name pods use for `ipfs/<CID>` images, e.g. `localhost:5050`.
    pub local_host: String,
    /// The agent's registry as the runtime reaches it, e.g. `http://127.0.0.1:5050`.
    pub mirror_endpoint: String,
}

impl DropIn {
    pub fn render(&self, registries: &[RegistryMirror]) -> Result<String> {
        let (endpoint, endpoint_insecure) = match self.mirror_endpoint.split_once("://") {
            Some(("http", rest)) => (rest.trim_end_matches('/'), true),
            Some(("https", rest)) => (rest.trim_end_matches('/'), false),
            _ => bail!(
                "mirror endpoint {:?} must be an http:// or https:// URL",
                self.mirror_endpoint
            ),
        };
        let mut s = format!(
            "{MARKER}\n\n# IPFS images: {local}/ipfs/<CID> (plain HTTP on the node's loopback).\n\
             [[registry]]\nlocation = \"{local}\"\ninsecure = true\n",
            local = self.local_host
        );
        for r in registries {
            let segment = registry_segment(&r.prefix).expect("validated by parse");
            s.push_str(&format!(
                "\n[[registry]]\nprefix = \"{}\"\nlocation = \"{}\"\n",
                r.prefix, r.location
            ));
            if r.insecure {
                s.push_str("insecure = true\n");
            }
            s.push_str(&format!(
                "[[registry.mirror]]\nlocation = \"{endpoint}/{segment}\"\ninsecure = {endpoint_insecure}\n"
            ));
        }
        Ok(s)
    }

    /// Write (or replace) the drop-in; never touches another file.
    pub fn write(&self, registries: &[RegistryMirror]) -> Result<PathBuf> {
        let contents = self.render(registries)?;
        std::fs::create_dir_all(&self.config_dir)
            .with_context(|| format!("creating {}", self.config_dir.display()))?;
        let file = self.config_dir.join(FILE_NAME);
        if file.exists() && !is_ours(&file) {
            bail!(
                "{} exists and was not written by ipfs-image-agent; not replacing it",
                file.display()
            );
        }
        write_atomically(&file, &contents)?;
        Ok(file)
    }
}

fn is_ours(file: &Path) -> bool {
    has_marker(file, MARKER)
}

/// Remove our drop-in (only if it is ours). Returns what changed.
pub fn cleanup(config_dir: &Path) -> Result<Vec<String>> {
    let file = config_dir.join(FILE_NAME);
    if file.exists() && is_ours(&file) {
        std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
        return Ok(vec![format!("removed {}", file.display())]);
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_mirror_per_registry_and_removes_only_its_own_file() {
        let d = tempfile::tempdir().unwrap();
        let drop_in = DropIn {
            config_dir: d.path().join("registries.conf.d"),
            local_host: "localhost:5050".into(),
            mirror_endpoint: "http://127.0.0.1:5050".into(),
        };
        let regs = [
            RegistryMirror::parse("docker.io").unwrap(),
            RegistryMirror::parse("registry.test:5000=http://127.0.0.1:5000").unwrap(),
        ];
        let file = drop_in.write(&regs).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed: toml::Table = text.parse().unwrap();
        let registries = parsed["registry"].as_array().unwrap();
        assert_eq!(registries.len(), 3);
        assert_eq!(registries[0]["location"].as_str(), Some("localhost:5050"));
        assert_eq!(registries[1]["prefix"].as_str(), Some("docker.io"));
        assert_eq!(
            registries[1]["mirror"][0]["location"].as_str(),
            Some("127.0.0.1:5050/docker.io")
        );
        assert_eq!(registries[2]["location"].as_str(), Some("127.0.0.1:5000"));
        assert_eq!(registries[2]["insecure"].as_bool(), Some(true));
        assert_eq!(
            registries[2]["mirror"][0]["location"].as_str(),
            Some("127.0.0.1:5050/registry.test_5000")
        );
        drop_in.write(&regs).unwrap(); // idempotent

        std::fs::write(d.path().join("registries.conf.d/10-mine.conf"), "x").unwrap();
        assert_eq!(cleanup(&drop_in.config_dir).unwrap().len(), 1);
        assert!(!file.exists());
        assert!(d.path().join("registries.conf.d/10-mine.conf").exists());
        // A file of that name that is not ours is neither replaced nor removed.
        std::fs::write(&file, "mine").unwrap();
        assert!(drop_in.write(&regs).is_err());
        assert!(cleanup(&drop_in.config_dir).unwrap().is_empty());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    }

    #[test]
    fn refuses_what_registries_conf_cannot_express() {
        for bad in ["_default", "[::1]:5000", "x=ftp://y", "UPPER.io"] {
            assert!(RegistryMirror::parse(bad).is_err(), "{bad}");
        }
    }
}
