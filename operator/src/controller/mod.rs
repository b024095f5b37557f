//! The IpfsImage controller: a kube-runtime `Controller` whose reconcile imports (or adopts) an
//! image into the operator's IPFS daemon, pins it, reports status, Events and metrics, and
//! unpins on delete.
//!
//! Layout (after kube-rs's controller-rs): [`reconcile`] holds the reconcile logic, [`error`]
//! the errors and their condition reasons, [`metrics`] the Prometheus metrics, [`server`] the
//! HTTP endpoints, [`leader`] the Lease-based leader election and [`app`] the wiring of `run`.

pub mod app;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod nodes;
pub mod orphans;
pub mod peer;
pub mod reconcile;
pub mod server;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use ipfs_image_api::IpfsImage;
use ipfs_image_api::names::annotations;
use ipfs_oci::ipfs::{IpfsStore, KuboClient};
use ipfs_oci::source::{Credentials, SourceOptions};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};

pub use error::{Error, Result};
pub use metrics::Metrics;
pub use reconcile::{error_policy, reconcile};

/// Name of the controller in Events (`reportingController`) and logs.
pub const CONTROLLER_NAME: &str = "ipfs-image-operator";

/// Operator-wide settings (from the `run` flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// Host and port of the node agents' registry, for `status.image`.
    pub mirror_host: String,
    /// Re-check interval of tags when `spec.recheckInterval` is unset; also how often a Ready
    /// image's pin is verified. Zero turns default re-checks off.
    pub recheck_interval: Duration,
    /// Registries (host[:port]) talked to over plain HTTP.
    pub plain_http_registries: Vec<String>,
    /// Registries (host[:port]) whose TLS certificates are not verified.
    pub insecure_registries: Vec<String>,
    /// First retry delay after a failure; doubles with each consecutive failure of an object.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// `reportingInstance` of Events (the Pod name).
    pub instance: Option<String>,
    /// Largest image (declared blob sizes) an import accepts; `None`: no limit.
    pub max_image_size: Option<u64>,
    /// Longest time one import may take; `None`: no deadline.
    pub import_timeout: Option<Duration>,
    /// Networks (besides loopback and link-local) a registry's auth realm or redirect may not
    /// point at: the cluster's own pod and service ranges.
    pub refused_networks: Vec<ipfs_oci::address::Network>,
    /// Registries `spec.source` may name (`host[:port]` or `*.domain`); empty: every registry.
    pub allowed_registries: Vec<String>,
    /// How often pins the operator made, whose image no object holds any more, are removed
    /// (`None`: never).
    pub orphan_sweep_interval: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mirror_host: ipfs_image_api::DEFAULT_MIRROR_HOST.to_owned(),
            recheck_interval: Duration::from_secs(3600),
            plain_http_registries: Vec::new(),
            insecure_registries: Vec::new(),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            instance: None,
            max_image_size: Some(20 << 30),
            import_timeout: Some(Duration::from_secs(3600)),
            refused_networks: Vec::new(),
            allowed_registries: Vec::new(),
            orphan_sweep_interval: Some(Duration::from_secs(600)),
        }
    }
}

impl Config {
    /// How to talk to `registry` (host[:port] of a reference), with `credentials`.
    pub fn source_options(
        &self,
        registry: &str,
        credentials: Option<Credentials>,
    ) -> SourceOptions {
        let listed = |list: &[String]| list.iter().any(|r| r.eq_ignore_ascii_case(registry));
        SourceOptions {
            plain_http: listed(&self.plain_http_registries),
            insecure: listed(&self.insecure_registries),
            credentials,
            addresses: ipfs_oci::address::AddressPolicy {
                refuse_local: true,
                refused: self.refused_networks.clone(),
            },
        }
    }

    /// Whether `spec.source` may name `registry` (host[:port] of a reference).
    pub fn allows_registry(&self, registry: &str) -> bool {
        self.allowed_registries.is_empty()
            || self.allowed_registries.iter().any(|allowed| {
                match allowed.strip_prefix("*.") {
                    // A subdomain, at any depth, never the domain itself nor a look-alike suffix.
                    Some(domain) => {
                        let host = registry.rsplit_once(':').map_or(registry, |(h, p)| {
                            if p.chars().all(|c| c.is_ascii_digit()) {
                                h
                            } else {
                                registry
                            }
                        });
                        host.len() > domain.len() + 1
                            && host
                                .to_ascii_lowercase()
                                .ends_with(&format!(".{}", domain.to_ascii_lowercase()))
                    }
                    None => allowed.eq_ignore_ascii_case(registry),
                }
            })
    }

    /// Delay before retry number `failures` (1-based): base · 2^(failures-1), capped.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// Everything a reconcile needs. Generic over the IPFS client so tests can observe its calls.
pub struct Context<S = KuboClient> {
    pub client: Client,
    pub ipfs: S,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub config: Config,
    /// Which Nodes exist (unknown unless `run` watches them).
    pub nodes: nodes::ClusterNodes,
    /// Held (shared) by every reconcile, and exclusively by the orphan-pin sweep.
    pub pins: tokio::sync::RwLock<()>,
    /// Held while deciding who holds a layout: by a delete's list-and-unpin, and by an
    /// import's pin check and status write.
    pub holders: tokio::sync::Mutex<()>,
    /// Consecutive failures per object (`namespace/name`), for the exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl<S: IpfsStore> Context<S> {
    pub fn new(client: Client, ipfs: S, config: Config, metrics: Metrics) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: config.instance.clone(),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            ipfs,
            recorder,
            metrics,
            config,
            nodes: nodes::ClusterNodes::default(),
            pins: tokio::sync::RwLock::new(()),
            holders: tokio::sync::Mutex::new(()),
            failures: Mutex::default(),
        }
    }

    /// Count a failure of `key` and return how long to wait before retrying it.
    pub fn next_backoff(&self, key: &str) -> Duration {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        self.config.backoff(*n)
    }

    /// Forget the failures of `key` after a successful reconcile.
    pub fn reset_backoff(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

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
        orphans::AbortOnDrop(tokio::spawn(orphans::run(
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

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn the_registry_allow_list_matches_hosts_and_subdomains_only() {
        let open = Config::default();
        assert!(open.allows_registry("anything.example:5000"), "empty: all");
        let config = Config {
            allowed_registries: vec!["docker.io".into(), "*.corp.example".into()],
            ..Config::default()
        };
        for allowed in [
            "docker.io",
            "DOCKER.io",
            "registry.corp.example",
            "a.b.corp.example:5000",
        ] {
            assert!(config.allows_registry(allowed), "{allowed}");
        }
        for refused in [
            "ghcr.io",
            "docker.io:5000",
            "corp.example",
            "evilcorp.example",
            "corp.example.evil",
            ".corp.example",
            "127.0.0.1:5000",
        ] {
            assert!(!config.allows_registry(refused), "{refused}");
        }
    }
}
