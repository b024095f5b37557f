//! This node's entry of `status.nodes`, and nothing else, written with server-side apply.
//!
//! Write rate. Each agent applies an object's status only when *its own* entry changes (pinned
//! or not, bytes, message — in practice twice per image: "pinning failed"/"pinned"), never on a
//! timer, and never twice within `--status-interval` for the same object (later changes are
//! coalesced into one write when the interval is up). Only nodes selected by the image's
//! `spec.prefetch` write at all. So with a thousand matching nodes an object receives at most
//! 1000 writes per interval (33/s at the 30s default) while they all pin it, and none once they
//! have: the load is bounded by nodes × changes, not by time. And the writes never fight: each
//! is a server-side apply of one list-map entry (keyed by `node`) under a field manager of its
//! own, forced, without a resourceVersion precondition, so there are no 409 conflicts and no
//! read-modify-write retries, however many agents write at once.

use std::collections::BTreeMap;
use std::time::Duration;

use ipfs_image_api::names::agent_field_manager;
use ipfs_image_api::{IpfsImage, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde_json::json;
use tokio::time::Instant;

use super::{Report, Reporter};

type Key = (String, String);

#[derive(Debug, Default)]
struct Slot {
    /// What this node's entry should be (`None`: no entry).
    desired: Option<NodeStatus>,
    /// What we last applied, or else what the object showed when we first saw it.
    baseline: Option<NodeStatus>,
    last_write: Option<Instant>,
}

impl Slot {
    fn pending(&self) -> bool {
        !same(self.desired.as_ref(), self.baseline.as_ref())
    }
}

/// Equal but for `lastTransitionTime`.
fn same(a: Option<&NodeStatus>, b: Option<&NodeStatus>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            (&a.node, &a.cid, a.pinned, a.bytes, &a.message)
                == (&b.node, &b.cid, b.pinned, b.bytes, &b.message)
        }
        _ => false,
    }
}

pub struct StatusWriter {
    client: Client,
    node: String,
    interval: Duration,
    reporter: Reporter,
    slots: BTreeMap<Key, Slot>,
}

impl StatusWriter {
    pub fn new(client: Client, node: String, interval: Duration, reporter: Reporter) -> Self {
        Self {
            client,
            node,
            interval,
            reporter,
            slots: BTreeMap::new(),
        }
    }

    /// The entry this node wants on `obj` (`None`: none). `lastTransitionTime` is filled here.
    pub fn want(&mut self, key: Key, obj: &IpfsImage, mut desired: Option<NodeStatus>) {
        let observed = obj
            .status
            .as_ref()
            .and_then(|s| s.nodes.iter().find(|n| n.node == self.node))
            .cloned();
        let slot = self.slots.entry(key).or_default();
        if slot.last_write.is_none() {
            // Never written by this process: what the object shows is the baseline (so a
            // restarted agent does not rewrite entries that are already right).
            slot.baseline = observed;
        }
        if let Some(d) = desired.as_mut() {
            d.last_transition_time = match &slot.baseline {
                Some(b) if b.pinned == d.pinned && b.last_transition_time.is_some() => {
                    b.last_transition_time.clone()
                }
                _ => Some(Time(Timestamp::now())),
            };
        }
        slot.desired = desired;
    }

    /// Forget objects that are gone (nothing to write on a deleted object).
    pub fn retain(&mut self, exists: impl Fn(&Key) -> bool) {
        self.slots.retain(|k, _| exists(k));
    }

    /// When the next rate-limited write is due, if any is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter(|s| s.pending())
            .map(|s| {
                s.last_write
                    .map_or_else(Instant::now, |t| t + self.interval)
            })
            .min()
    }

    /// Apply every changed entry whose object was not written within the interval.
    pub async fn flush(&mut self) {
        let now = Instant::now();
        let due: Vec<Key> = self
            .slots
            .iter()
            .filter(|(_, s)| s.pending() && s.last_write.is_none_or(|t| now >= t + self.interval))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let slot = self.slots.get_mut(&key).expect("listed above");
            let result = apply(&self.client, &self.node, &key, slot.desired.as_ref()).await;
            slot.last_write = Some(Instant::now());
            match result {
                Ok(()) => {
                    slot.baseline = slot.desired.clone();
                    tracing::debug!(namespace = %key.0, name = %key.1, "node status applied");
                    self.reporter
                        .send(Report::StatusApplied(format!("{}/{}", key.0, key.1)));
                }
                Err(e) => tracing::warn!(
                    namespace = %key.0, name = %key.1, error = %e,
                    "node status not written; retrying after the status interval"
                ),
            }
        }
    }
}

/// The apply body: this node's entry only, or, to release it, no `status` at all. (An empty
/// `status: {}` would not do: the API server then records the manager as owning `.status`
/// itself, and keeps its managedFields entry forever.)
pub fn apply_body(name: &str, namespace: &str, entry: Option<&NodeStatus>) -> serde_json::Value {
    let mut body = json!({
        "apiVersion": IpfsImage::api_version(&()),
        "kind": IpfsImage::kind(&()),
        "metadata": { "name": name, "namespace": namespace },
    });
    if let Some(e) = entry {
        body["status"] = json!({ "nodes": [e] });
    }
    body
}

async fn apply(
    client: &Client,
    node: &str,
    (namespace, name): &Key,
    entry: Option<&NodeStatus>,
) -> Result<(), kube::Error> {
    let api = Api::<IpfsImage>::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(&agent_field_manager(node)).force();
    api.patch_status(
        name,
        &params,
        &Patch::Apply(apply_body(name, namespace, entry)),
    )
    .await?;
    Ok(())
}
