//! Which images the mirror may serve under their original names: `{source, cid}` pairs. In a
//! cluster they come from Ready IpfsImage objects; standalone, from a YAML file (`--images`).
//! One type, two sources.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use ipfs_oci::Cid;
use ipfs_oci::content_id::parse_cid;
use ipfs_oci::digest::Digest;
use ipfs_oci::source::parse_reference;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// As written by the user, for logs.
    pub source: String,
    /// Normalised registry host (`docker.io` for Docker Hub).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
    pub cid: Cid,
    /// The digest the import recorded for the source (`status.sourceDigest`), when known: lets
    /// a pull by digest pick its candidate without resolving any DAG.
    pub source_digest: Option<Digest>,
    /// When the import was last checked against its registry (Unix seconds): of several
    /// entries for one tag, the most recently checked answers. `None` (file entries) is oldest.
    pub checked: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct FileEntry {
    source: String,
    cid: String,
}

impl CatalogEntry {
    pub fn new(source: &str, cid: &str) -> Result<Self> {
        let reference = parse_reference(source)
            .with_context(|| format!("invalid image reference {source:?}"))?;
        let cid = parse_cid(cid)?;
        let digest = reference.digest().map(str::parse::<Digest>).transpose()?;
        Ok(Self {
            source: source.to_owned(),
            registry: normalize_registry(reference.registry()),
            repository: reference.repository().to_owned(),
            tag: reference.tag().map(str::to_owned),
            source_digest: digest,
            digest,
            cid,
            checked: None,
        })
    }

    /// May this entry answer a pull of `tag`? Only a source that names the tag and no digest:
    /// `repo:tag@sha256:…` was imported by digest and says nothing about where the tag points.
    pub fn answers_tag(&self, tag: &str) -> bool {
        self.digest.is_none() && self.tag.as_deref() == Some(tag)
    }

    /// Does this entry's import start at `digest` (its source digest or its pinned digest)?
    pub fn starts_at(&self, digest: &Digest) -> bool {
        self.source_digest.as_ref() == Some(digest) || self.digest.as_ref() == Some(digest)
    }
}

/// The most recently checked of `entries`; of equal ones, the first (file order).
pub fn most_recent<'a>(
    entries: impl IntoIterator<Item = &'a CatalogEntry>,
) -> Option<&'a CatalogEntry> {
    entries
        .into_iter()
        .fold(None, |best: Option<&CatalogEntry>, e| match best {
            Some(b) if b.checked >= e.checked => Some(b),
            _ => Some(e),
        })
}

/// containerd sends Docker Hub as `ns=docker.io`; references may name it in other ways.
pub fn normalize_registry(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        other => other.to_ascii_lowercase(),
    }
}

#[derive(Default)]
pub struct Catalog {
    entries: RwLock<Arc<Vec<CatalogEntry>>>,
}

impl Catalog {
    pub fn replace(&self, entries: Vec<CatalogEntry>) {
        *self.entries.write().expect("catalog lock") = Arc::new(entries);
    }

    pub fn snapshot(&self) -> Arc<Vec<CatalogEntry>> {
        self.entries.read().expect("catalog lock").clone()
    }

    /// Entries for one repository of one registry.
    pub fn for_repository(&self, registry: &str, repository: &str) -> Vec<CatalogEntry> {
        let registry = normalize_registry(registry);
        self.snapshot()
            .iter()
            .filter(|e| e.registry == registry && e.repository == repository)
            .cloned()
            .collect()
    }
}

/// Parse a catalog file: a YAML list of `{source, cid}`.
pub fn load_file(path: &Path) -> Result<Vec<CatalogEntry>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Parse a catalog file's text (what [`load_file`] reads; the fuzz harness calls it directly).
pub fn parse(text: &str) -> Result<Vec<CatalogEntry>> {
    let raw: Vec<FileEntry> = serde_saphyr::from_str(text)?;
    raw.iter()
        .map(|e| CatalogEntry::new(&e.source, &e.cid))
        .collect()
}

/// Load the file now, then reload it whenever its modification time changes. A broken edit
/// keeps the last good catalog (and logs why).
pub fn watch_file(catalog: Arc<Catalog>, path: PathBuf, every: Duration) -> Result<()> {
    catalog.replace(load_file(&path)?);
    let mut seen = modified(&path);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = modified(&path);
            if now == seen {
                continue;
            }
            seen = now;
            match load_file(&path) {
                Ok(entries) => {
                    tracing::info!(path = %path.display(), images = entries.len(), "catalog reloaded");
                    catalog.replace(entries);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "catalog not reloaded")
                }
            }
        }
    });
    Ok(())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_docker_hub() {
        let e = CatalogEntry::new(
            "nginx:1.25",
            "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4",
        )
        .unwrap();
        assert_eq!(
            (e.registry.as_str(), e.repository.as_str(), e.tag.as_deref()),
            ("docker.io", "library/nginx", Some("1.25"))
        );
        let e = CatalogEntry::new(
            "127.0.0.1:5000/test/busybox:1",
            "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4",
        )
        .unwrap();
        assert_eq!(
            (e.registry.as_str(), e.repository.as_str()),
            ("127.0.0.1:5000", "test/busybox")
        );
        assert!(CatalogEntry::new("nginx:1.25", "not-a-cid").is_err());
    }

    #[test]
    fn tags_answer_from_tag_only_sources_most_recent_first() {
        const A: &str = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
        const B: &str = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";
        let d = "sha256:0123456789012345678901234567890123456789012345678901234567890123";
        let pinned = CatalogEntry::new(&format!("nginx:1.25@{d}"), A).unwrap();
        assert!(
            !pinned.answers_tag("1.25"),
            "tag with digest never answers the tag"
        );
        assert!(pinned.starts_at(&d.parse().unwrap()));
        let mut old = CatalogEntry::new("nginx:1.25", A).unwrap();
        let mut new = CatalogEntry::new("nginx:1.25", B).unwrap();
        assert!(new.answers_tag("1.25") && !new.answers_tag("1.26"));
        // Without times the first wins (a file's order); with times the latest check.
        assert_eq!(most_recent([&old, &new]).unwrap().cid, old.cid);
        old.checked = Some(100);
        new.checked = Some(200);
        assert_eq!(most_recent([&old, &new]).unwrap().cid, new.cid);
        assert_eq!(most_recent([&new, &old]).unwrap().cid, new.cid);
        assert!(most_recent([]).is_none());
    }

    #[test]
    fn loads_yaml_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("images.yaml");
        std::fs::write(&p, "- source: docker.io/library/nginx:1.25\n  cid: bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4\n").unwrap();
        let entries = load_file(&p).unwrap();
        assert_eq!(entries.len(), 1);
        std::fs::write(&p, "- nope: 1\n").unwrap();
        assert!(load_file(&p).is_err());
    }
}
