//! The mirror catalog from the cluster: the `{spec.source, status.cid}` of every Ready
//! `IpfsImage` with `spec.mirror` on and a `spec.source`, merged with the standalone file.

use std::sync::Arc;
use std::time::Duration;

use ipfs_image_api::{IpfsImage, Phase};
use kube::ResourceExt;

use super::images::ImagesRx;
use super::{Report, Reporter};
use crate::catalog::{Catalog, CatalogEntry};

/// How often the file catalog is checked for a reload (it is polled by its own watcher too).
const FILE_POLL: Duration = Duration::from_secs(2);

/// The catalog entries the objects give: Ready, mirrored, with a source and a CID. Objects
/// whose source or CID does not parse are skipped (and logged): one bad object must not empty
/// the mirror for everyone. Sorted and without duplicates, so equal inputs give equal outputs.
pub fn catalog_entries<'a>(objects: impl IntoIterator<Item = &'a IpfsImage>) -> Vec<CatalogEntry> {
    let mut entries: Vec<CatalogEntry> = Vec::new();
    for obj in objects {
        let Some(status) = &obj.status else { continue };
        if status.phase != Some(Phase::Ready) || !obj.spec.mirror {
            continue;
        }
        let (Some(source), Some(cid)) = (&obj.spec.source, &status.cid) else {
            continue;
        };
        match CatalogEntry::new(source, cid) {
            Ok(e) => entries.push(e),
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
                    let entries = catalog_entries(objects.values());
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
