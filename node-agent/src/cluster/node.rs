//! This node's labels, which decide what it prefetches.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::watch;

pub type Labels = BTreeMap<String, String>;

/// `None` until the Node has been read once.
pub type LabelsRx = watch::Receiver<Option<Labels>>;

/// Whether `labels` carry every key/value of `selector` (a Pod `nodeSelector`; empty matches all).
pub fn matches(selector: &BTreeMap<String, String>, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Read `nodes/<name>` (list + watch with a field selector on the name) and follow its labels.
/// A Node that is gone (or not yet there) has no labels: nothing matches, so nothing is kept.
pub async fn run(api: Api<Node>, name: String, tx: watch::Sender<Option<Labels>>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut listed: Option<Labels> = None;
    let mut seen = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => {
                listed = None;
                seen = false;
            }
            Ok(watcher::Event::InitApply(node)) if node.name_any() == name => {
                listed = Some(node.labels().clone());
                seen = true;
            }
            Ok(watcher::Event::InitDone) => {
                if !seen {
                    tracing::warn!(node = %name, "Node not found: prefetching nothing");
                }
                set(&tx, listed.take().unwrap_or_default());
            }
            Ok(watcher::Event::Apply(node)) if node.name_any() == name => {
                set(&tx, node.labels().clone());
            }
            Ok(watcher::Event::Delete(node)) if node.name_any() == name => {
                set(&tx, Labels::new());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, node = %name, "Node watch failed; retrying"),
        }
        if tx.is_closed() {
            return;
        }
    }
}

fn set(tx: &watch::Sender<Option<Labels>>, labels: Labels) {
    tx.send_if_modified(|current| {
        if current.as_ref() == Some(&labels) {
            false
        } else {
            *current = Some(labels);
            true
        }
    });
}
