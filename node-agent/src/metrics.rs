//! Prometheus metrics of the registry, served on their own port with the health endpoints.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// By route (`ipfs`/`mirror`/`base`), kind (`manifest`/`blob`), method and status.
    pub requests: IntCounterVec,
    pub bytes_served: IntCounterVec,
    pub cache: IntCounterVec,
    pub resolve_duration: Histogram,
    /// IPFS failures by kind (`timeout`, `unreachable`, `invalid`, `other`).
    pub ipfs_errors: IntCounterVec,
    /// Blobs whose bytes did not match their digest (the response was aborted).
    pub verification_failures: IntCounterVec,
    /// Mirror lookups by registry and result (`hit`/`miss`).
    pub mirror: IntCounterVec,
    pub inflight: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(format!("ipfs_image_agent_{name}"), help), labels)
                .expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let requests = counter(
            "requests_total",
            "Registry requests by route, kind, method and status",
            &["route", "kind", "method", "status"],
        );
        let bytes_served = counter(
            "bytes_served_total",
            "Body bytes sent, by route and kind",
            &["route", "kind"],
        );
        let cache = counter(
            "dag_cache_total",
            "Resolved-image cache lookups",
            &["result"],
        );
        let ipfs_errors = counter(
            "ipfs_errors_total",
            "Failed calls to the IPFS daemon",
            &["kind"],
        );
        let verification_failures = counter(
            "verification_failures_total",
            "Content that failed digest verification",
            &["kind"],
        );
        let mirror = counter(
            "mirror_requests_total",
            "Mirror-mode lookups by upstream registry and result",
            &["registry", "result"],
        );
        let resolve_duration = Histogram::with_opts(
            HistogramOpts::new(
                "ipfs_image_agent_resolve_duration_seconds",
                "Time to resolve an image DAG (cache misses)",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("valid histogram");
        registry
            .register(Box::new(resolve_duration.clone()))
            .expect("unique metric");
        let inflight = IntGauge::new(
            "ipfs_image_agent_inflight_requests",
            "Requests being served",
        )
        .expect("valid gauge");
        registry
            .register(Box::new(inflight.clone()))
            .expect("unique metric");
        Self {
            registry,
            requests,
            bytes_served,
            cache,
            resolve_duration,
            ipfs_errors,
            verification_failures,
            mirror,
            inflight,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("text encoding");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
