//! The mirror catalog from the cluster: the `{spec.source, status.cid}` of every Ready
//! `IpfsImage` with `spec.mirror` on and a `spec.source`, in a namespace the administrator lets
//! answer original references, imported without pull Secrets unless the administrator allows
//! those too, merged with the standalone file.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ipfs_image_api::{IpfsImage, Phase};
use kube::ResourceExt;

use super::images::ImagesRx;
use super::{Report, Reporter};
use crate::catalog::{Catalog, CatalogEntry};

/// How often the file catalog is checked for a reload (it is polled by its own watcher too).
const FILE_POLL: Duration = Duration::from_secs(2);

/// The namespaces whose IpfsImages may answer original references on every node. What a
/// reference means cluster-wide is an administrator's decision, so this is a flag the chart
/// sets (its release namespace by default), never something an object can claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorNamespaces {
    /// `*`: every namespace (an explicit opt-in, for clusters with a single tenant).
    All,
    Only(BTreeSet<String>),
}

impl MirrorNamespaces {
    /// From the flag's values: `*` alone means all; an empty list allows none.
    pub fn from_flags(values: &[String]) -> Self {
        if values.iter().any(|v| v == "*") {
            return Self::All;
        }
        Self::Only(values.iter().filter(|v| !v.is_empty()).cloned().collect())
    }

    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(namespace),
        }
    }
}

/// Which objects may answer original references on every node: the administrator's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorPolicy {
    pub namespaces: MirrorNamespaces,
    /// Also images imported with `imagePullSecrets`. Off by default: the mirror asks a Pod for
    /// no credentials, so a private image would reach every Pod that names it.
    pub private_images: bool,
}

impl MirrorPolicy {
    /// `namespaces`, private images left out (the default).
    pub fn namespaces(namespaces: MirrorNamespaces) -> Self {
        Self {
            namespaces,
            private_images: false,
        }
    }

    fn allows(&self, obj: &IpfsImage) -> bool {
        self.namespaces.allows(&obj.namespace().unwrap_or_default())
            && (self.private_images || obj.spec.image_pull_secrets.is_empty())
    }
}

/// The catalog entries the objects give: Ready, mirrored, with a source and a CID, allowed by
/// the policy. Objects whose source or CID does not parse are skipped (and logged): one
/// bad object must not empty the mirror for everyone. Sorted and without duplicates, so equal
/// inputs give equal outputs.
pub fn catalog_entries<'a>(
    objects: impl IntoIterator<Item = &'a IpfsImage>,
    policy: &MirrorPolicy,
) -> Vec<CatalogEntry> {
    let mut entries: Vec<CatalogEntry> = Vec::new();
    for obj in objects {
        let Some(status) = &obj.status else { continue };
        if status.phase != Some(Phase::Ready) || !obj.spec.mirror {
            continue;
        }
        // Objects left out still serve as `ipfs/<CID>`; they just never answer a reference.
        if !policy.allows(obj) {
            continue;
        }
        let (Some(source), Some(cid)) = (&obj.spec.source, &status.cid) else {
            continue;
        };
        match CatalogEntry::new(source, cid) {
            Ok(mut e) => {
                if let Some(d) = status.source_digest.as_deref().and_then(|d| d.parse().ok()) {
                    e.source_digest = Some(d);
                }
                e.checked = checked_at(obj);
                entries.push(e)
            }
            Err(e) => tracing::warn!(
                namespace = obj.namespace().unwrap_or_default(),
                name = obj.name_any(),
                error = %format!("{e:#}"),
                "IpfsImage left out of the mirror catalog"
            ),
        }
    }
    entries.sort_by(|a, b| (&a.source, a.cid).cmp(&(&b.source, b.cid)));
    entries.dedup();
    entries
}

/// When the import was last checked: `status.lastCheckTime`, else when it became Imported.
fn checked_at(obj: &IpfsImage) -> Option<i64> {
    let status = obj.status.as_ref()?;
    let time = status.last_check_time.as_ref().or_else(|| {
        ipfs_image_api::find_condition(
            &status.conditions,
            ipfs_image_api::conditions::types::IMPORTED,
        )
        .map(|c| &c.last_transition_time)
    })?;
    Some(time.0.as_second())
}

/// The union of two entry lists (file first), without duplicates.
pub fn union(file: &[CatalogEntry], cluster: &[CatalogEntry]) -> Vec<CatalogEntry> {
    let mut out = file.to_vec();
    for e in cluster {
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    out
}

/// Keep `catalog` equal to the cluster's entries plus the file catalog's.
pub async fn run(
    mut images: ImagesRx,
    catalog: Arc<Catalog>,
    file: Option<Arc<Catalog>>,
    policy: MirrorPolicy,
    reporter: Reporter,
) {
    let mut cluster: Option<Vec<CatalogEntry>> = None;
    let mut file_seen = file.as_ref().map(|f| f.snapshot());
    let mut tick = tokio::time::interval(FILE_POLL);
    loop {
        let mut changed = false;
        tokio::select! {
            r = images.changed() => {
                if r.is_err() {
                    return;
                }
                let snapshot = images.borrow_and_update().clone();
                if let Some(objects) = snapshot {
                    let entries = catalog_entries(objects.values(), &policy);
                    if cluster.as_ref() != Some(&entries) {
                        cluster = Some(entries);
                        changed = true;
                    }
                }
            }
            _ = tick.tick() => {
                if let (Some(f), Some(seen)) = (&file, &file_seen) {
                    let now = f.snapshot();
                    if !Arc::ptr_eq(&now, seen) {
                        file_seen = Some(now);
                        changed = true;
                    }
                }
            }
        }
        // Until the first list the file alone is served (it was loaded before this started).
        let Some(cluster) = &cluster else { continue };
        if changed {
            let entries = match &file_seen {
                Some(f) => union(f, cluster),
                None => cluster.clone(),
            };
            let n = entries.len();
            catalog.replace(entries);
            tracing::info!(images = n, "mirror catalog updated from the cluster");
            reporter.send(Report::Catalog(n));
        }
    }
}
