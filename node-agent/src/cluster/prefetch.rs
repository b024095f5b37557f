//! Prefetch: pin `status.layoutCid` of every image whose `spec.prefetch.nodeSelector` matches
//! this node, within the node's prefetch budget; unpin (only what this agent pinned) when the
//! object goes or stops matching; and report the outcome as this node's status entry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ipfs_image_api::{IpfsImage, NodeStatus};
use ipfs_oci::content_id::{parse_cid, to_base32};
use ipfs_oci::ipfs::IpfsStore;
use tokio::time::Instant;

use super::images::{Images, ImagesRx};
use super::node::{Labels, LabelsRx, matches};
use super::pin_state::PinState;
use super::status::StatusWriter;
use super::{Report, Reporter};
use crate::metrics::PinGauges;

/// A failed pin or unpin is tried again after this long (or on the next change).
const RETRY: Duration = Duration::from_secs(60);

/// The images this node should hold: object key → layout CID (base32), or why it cannot.
pub fn wanted(
    images: &Images,
    labels: &Labels,
) -> BTreeMap<(String, String), Result<String, String>> {
    images
        .iter()
        .filter(|(_, obj)| {
            obj.spec
                .prefetch
                .as_ref()
                .is_some_and(|p| matches(&p.node_selector, labels))
        })
        .map(|(k, obj)| {
            let layout = obj.status.as_ref().and_then(|s| s.layout_cid.as_deref());
            let want = match layout {
                None => Err("waiting for the image to be imported".to_owned()),
                Some(s) => parse_cid(s)
                    .map(|c| to_base32(&c))
                    .map_err(|e| format!("invalid status.layoutCid: {e}")),
            };
            (k.clone(), want)
        })
        .collect()
}

/// Keep to `budget` bytes (`status.size`, each image counted once): what this agent already
/// pinned first, then the oldest objects, so a new object can never push out what the node holds
/// for others; the ones that do not fit are not pinned and say why.
fn within_budget(
    wanted: &mut BTreeMap<(String, String), Result<String, String>>,
    images: &Images,
    budget: u64,
    pinned: &BTreeSet<String>,
) {
    let mut order: Vec<&(String, String)> = wanted.keys().collect();
    order.sort_by_key(|k| {
        let held = matches!(&wanted[*k], Ok(cid) if pinned.contains(cid));
        let created = images[*k].metadata.creation_timestamp.clone().map(|t| t.0);
        (!held, created, *k)
    });
    let order: Vec<(String, String)> = order.into_iter().cloned().collect();
    let mut held: BTreeMap<String, u64> = BTreeMap::new();
    for key in order {
        let Some(Ok(cid)) = wanted.get(&key) else {
            continue;
        };
        if held.contains_key(cid) {
            continue;
        }
        let used: u64 = held.values().sum();
        let verdict = match images[&key].status.as_ref().and_then(|s| s.size) {
            None => Err(
                "waiting for the image's size (status.size), which the prefetch budget needs"
                    .to_owned(),
            ),
            Some(size) if used.saturating_add(size.max(0) as u64) > budget => Err(format!(
                "not prefetched: this node's prefetch budget is {budget} bytes, {used} are held for earlier images and this one needs {size}; raise the agent's --prefetch-budget (chart agent.prefetchBudget)"
            )),
            Some(size) => {
                held.insert(cid.clone(), size.max(0) as u64);
                Ok(())
            }
        };
        if let Err(why) = verdict {
            wanted.insert(key, Err(why));
        }
    }
}

/// The node a prefetch loop pins for, and the gauges it keeps.
pub struct Node {
    pub name: String,
    pub gauges: PinGauges,
    /// The most bytes of prefetched images this node holds (`None`: no limit).
    pub budget: Option<u64>,
}

pub async fn run<S: IpfsStore>(
    ipfs: Arc<S>,
    mut images: ImagesRx,
    mut labels: LabelsRx,
    mut pins: PinState,
    mut writer: StatusWriter,
    node: Node,
    reporter: Reporter,
) {
    let mut retry_at: Option<Instant> = None;
    let mut dirty = true;
    loop {
        let snapshot = images.borrow_and_update().clone();
        let node_labels = labels.borrow_and_update().clone();
        if let (Some(snapshot), Some(node_labels)) = (snapshot, node_labels) {
            if dirty || retry_at.is_some_and(|t| Instant::now() >= t) {
                let failed = pass(
                    &*ipfs,
                    &snapshot,
                    &node_labels,
                    &mut pins,
                    &mut writer,
                    &node,
                    &reporter,
                )
                .await;
                retry_at = failed.then(|| Instant::now() + RETRY);
            }
            writer.flush().await;
        }
        dirty = false;
        let wake = [retry_at, writer.next_due()].into_iter().flatten().min();
        tokio::select! {
            r = images.changed() => { if r.is_err() { return; } dirty = true; }
            r = labels.changed() => { if r.is_err() { return; } dirty = true; }
            _ = sleep_until(wake) => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One pass: pin what is wanted, unpin what this agent pinned and is no longer wanted, and set
/// the status entries. Returns whether anything failed (to retry later).
async fn pass<S: IpfsStore>(
    ipfs: &S,
    images: &Images,
    labels: &Labels,
    pins: &mut PinState,
    writer: &mut StatusWriter,
    node: &Node,
    reporter: &Reporter,
) -> bool {
    let mut wanted = wanted(images, labels);
    if let Some(budget) = node.budget {
        let ours: BTreeSet<String> = pins.pins().cloned().collect();
        within_budget(&mut wanted, images, budget, &ours);
    }
    let mut failed = false;
    let (mut pinned_now, mut unpinned_now) = (Vec::new(), Vec::new());
    // CID → Ok(()) when the node holds it pinned, Err(message) otherwise.
    let mut outcome: BTreeMap<String, Result<(), String>> = BTreeMap::new();
    for cid in wanted.values().filter_map(|w| w.as_ref().ok()) {
        if outcome.contains_key(cid) {
            continue;
        }
        let result = ensure_pinned(ipfs, pins, cid).await;
        match &result {
            Ok(true) => pinned_now.push(cid.clone()),
            Ok(false) => {}
            Err(e) => {
                failed = true;
                tracing::warn!(cid, error = %e, "prefetch pin failed");
            }
        }
        outcome.insert(cid.clone(), result.map(|_| ()));
    }
    let keep: BTreeSet<&String> = outcome.keys().collect();
    let stale: Vec<String> = pins.pins().filter(|c| !keep.contains(c)).cloned().collect();
    for cid in stale {
        let result = match parse_cid(&cid) {
            Ok(c) => ipfs.pin_rm(&c).await.map_err(|e| e.to_string()),
            Err(_) => Ok(()), // never a pin of ours: drop the bad record
        };
        match result.map(|()| pins.remove(&cid)) {
            Ok(Ok(())) => {
                tracing::info!(cid, "prefetch pin removed");
                unpinned_now.push(cid);
            }
            Ok(Err(e)) => {
                failed = true;
                tracing::warn!(cid, error = %format!("{e:#}"), "pin state not saved");
            }
            Err(e) => {
                failed = true;
                tracing::warn!(cid, error = %e, "prefetch unpin failed");
            }
        }
    }
    let mut held_images = 0;
    let mut held_bytes: BTreeMap<&str, i64> = BTreeMap::new();
    for (k, obj) in images {
        let entry = wanted
            .get(k)
            .map(|w| node_entry(&node.name, obj, w, &outcome));
        if let (Some(Ok(cid)), Some(e)) = (wanted.get(k), &entry)
            && e.pinned
        {
            held_images += 1;
            held_bytes.insert(cid, e.bytes.unwrap_or(0));
        }
        writer.want(k.clone(), obj, entry);
    }
    node.gauges.images.set(held_images);
    node.gauges.bytes.set(held_bytes.values().sum());
    writer.retain(|k| images.contains_key(k));
    reporter.send(Report::Prefetch {
        pinned: pinned_now,
        unpinned: unpinned_now,
    });
    failed
}

/// Make sure `cid` is pinned. `Ok(true)`: this agent pinned it now.
async fn ensure_pinned<S: IpfsStore>(
    ipfs: &S,
    pins: &mut PinState,
    cid: &str,
) -> Result<bool, String> {
    let c = parse_cid(cid).map_err(|e| e.to_string())?;
    if ipfs.is_pinned(&c).await.map_err(|e| e.to_string())? {
        // Ours or someone else's: either way held, and a foreign pin is not recorded as ours.
        return Ok(false);
    }
    // Record first (see pin_state): a crash after this leaves only a harmless record.
    pins.insert(cid).map_err(|e| format!("{e:#}"))?;
    ipfs.pin_add(&c).await.map_err(|e| e.to_string())?;
    tracing::info!(cid, "prefetch pin added");
    Ok(true)
}

fn node_entry(
    node: &str,
    obj: &IpfsImage,
    want: &Result<String, String>,
    outcome: &BTreeMap<String, Result<(), String>>,
) -> NodeStatus {
    let status = obj.status.as_ref();
    let result = match want {
        Ok(cid) => outcome
            .get(cid)
            .cloned()
            .unwrap_or(Err("not pinned yet".into())),
        Err(why) => Err(why.clone()),
    };
    let pinned = result.is_ok();
    NodeStatus {
        node: node.to_owned(),
        cid: status.and_then(|s| s.cid.clone()),
        pinned,
        // The whole DAG is local once the recursive pin holds.
        bytes: if pinned {
            status.and_then(|s| s.size)
        } else {
            None
        },
        message: result.err(),
        last_transition_time: None,
    }
}
