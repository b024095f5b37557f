//! The `Controller`: which changes of which objects start a reconcile, and its run loop.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ipfs_image_api::IpfsImage;
use ipfs_image_api::names::annotations;
use ipfs_oci::ipfs::IpfsStore;
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Api, ResourceExt};

use super::{Context, error_policy, nodes, orphans, reconcile};

/// What of an object is worth a reconcile: spec (generation), deletion, finalizers, the
/// re-check annotation and the node agents' pin reports. The operator's own status writes are
/// left out, so they never trigger a reconcile (no write → watch event → write loop).
pub fn relevant_change(obj: &IpfsImage) -> Option<u64> {
    let mut h = DefaultHasher::new();
    obj.metadata.generation.hash(&mut h);
    obj.metadata.deletion_timestamp.is_some().hash(&mut h);
    obj.finalizers().hash(&mut h);
    obj.annotations().get(annotations::RECHECK).hash(&mut h);
    if let Some(status) = &obj.status {
        for n in &status.nodes {
            (&n.node, &n.cid, n.pinned).hash(&mut h);
        }
    }
    Some(h.finish())
}

/// Run the controller until `shutdown` resolves (then finish the reconciles in flight).
pub async fn run<S>(
    ctx: Arc<Context<S>>,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) where
    S: IpfsStore + 'static,
{
    let api: Api<IpfsImage> = match &namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(relevant_change, PredicateConfig::default());
    // A deleted Node's entries are dropped by the reconciles of the objects that hold one.
    let deleted_nodes = ctx
        .nodes
        .watch(ctx.client.clone(), reader.clone(), Duration::from_secs(10))
        .await;
    let _sweep = ctx.config.orphan_sweep_interval.map(|every| {
        ipfs_image_process::AbortOnDrop(tokio::spawn(orphans::run(
            ctx.clone(),
            reader.clone(),
            every,
        )))
    });
    Controller::for_stream(stream, reader)
        .reconcile_on(nodes::stream(deleted_nodes))
        .with_config(kube::runtime::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile failed"),
            }
        })
        .await;
}
