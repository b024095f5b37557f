//! The record of the pins this agent made, so it only ever removes its own.
//!
//! Kubo pins carry no owner: a CID pinned by a user, by the operator (same daemon) or by this
//! agent looks the same. The agent therefore writes down a CID *before* pinning it, and only
//! when the CID was not pinned already; it unpins only CIDs in this record. A crash between
//! the record and the pin leaves a record of a missing pin (unpinning it later is a no-op); a
//! pin that was there first is never recorded, so never removed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

const FILE: &str = "pins.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    /// CIDs (base32 strings) this agent pinned and has not unpinned yet.
    pins: BTreeSet<String>,
}

#[derive(Debug)]
pub struct PinState {
    path: PathBuf,
    pins: BTreeSet<String>,
}

impl PinState {
    /// Load `<dir>/pins.json`, creating `dir` when needed. A missing file is an empty record.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(FILE);
        let pins = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<OnDisk>(&bytes)
                    .with_context(|| format!("parsing {}", path.display()))?
                    .pins
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Self { path, pins })
    }

    #[allow(dead_code)] // for tests and diagnostics
    pub fn contains(&self, cid: &str) -> bool {
        self.pins.contains(cid)
    }

    pub fn pins(&self) -> impl Iterator<Item = &String> {
        self.pins.iter()
    }

    pub fn insert(&mut self, cid: &str) -> Result<()> {
        if self.pins.insert(cid.to_owned()) {
            self.save()?;
        }
        Ok(())
    }

    pub fn remove(&mut self, cid: &str) -> Result<()> {
        if self.pins.remove(cid) {
            self.save()?;
        }
        Ok(())
    }

    /// Write to a temporary file and rename it over the record: never a half-written record.
    fn save(&self) -> Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(&OnDisk {
            pins: self.pins.clone(),
        })?;
        std::fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = PinState::open(&dir.path().join("state")).unwrap();
        s.insert("bafyone").unwrap();
        s.insert("bafytwo").unwrap();
        s.remove("bafyone").unwrap();
        let s = PinState::open(&dir.path().join("state")).unwrap();
        assert!(!s.contains("bafyone"));
        assert!(s.contains("bafytwo"));
    }
}
