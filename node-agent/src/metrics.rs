//! Prometheus metrics of the registry, served on their own port with the health endpoints.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

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
    /// Blob `cat` streams opened against IPFS, by reason: `blob` (a whole-blob GET that opened a
    /// shared stream), `range`, `detached` (a client that fell behind a shared stream), `resumed`
    /// (a stream that broke part-way, reopened from the byte reached).
    pub ipfs_cat_streams: IntCounterVec,
    /// Whole-blob GETs served from a stream another GET had opened (no `cat` of their own).
    pub blob_streams_shared: IntCounter,
    /// Clients detached from a shared stream for falling more than the window behind.
    pub blob_stream_detached: IntCounter,
    /// Bytes the shared blob streams hold in memory for their clients right now.
    pub blob_stream_buffered_bytes: IntGauge,
    /// 1 for each reason containerd's config keeps it from using the mirror (see runtime_check).
    pub runtime_config_problems: IntGaugeVec,
    /// Mirror requests answered "not here" so that the runtime pulls from upstream, by registry
    /// and cause (see [`FallbackCause`]).
    pub mirror_fallbacks: IntCounterVec,
    /// What this node's prefetch pins hold: images (objects) and distinct bytes.
    pub pins: PinGauges,
    /// This node's Kubo repository: bytes stored, and its `Datastore.StorageMax`.
    pub repo_size_bytes: IntGauge,
    pub repo_max_bytes: IntGauge,
}

/// Why a mirror request fell back to the upstream registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FallbackCause {
    /// No allowed IpfsImage holds the reference.
    Miss,
    /// IPFS did not answer within `--resolve-timeout`.
    IpfsTimeout,
    /// The IPFS daemon could not be reached, or no peer had the blocks.
    IpfsUnreachable,
    /// What IPFS holds under the CID is not a usable IPFS-enabled image.
    Invalid,
}

impl FallbackCause {
    pub const ALL: [FallbackCause; 4] = [
        Self::Miss,
        Self::IpfsTimeout,
        Self::IpfsUnreachable,
        Self::Invalid,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Miss => "miss",
            Self::IpfsTimeout => "ipfs_timeout",
            Self::IpfsUnreachable => "ipfs_unreachable",
            Self::Invalid => "invalid",
        }
    }
}

/// The prefetch pins' gauges, handed to the cluster side (unregistered by default, for tests).
#[derive(Clone, Debug)]
pub struct PinGauges {
    pub images: IntGauge,
    pub bytes: IntGauge,
}

impl Default for PinGauges {
    fn default() -> Self {
        Self {
            images: IntGauge::new("pinned_images", "unregistered").expect("valid gauge"),
            bytes: IntGauge::new("pinned_bytes", "unregistered").expect("valid gauge"),
        }
    }
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
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(format!("ipfs_image_agent_{name}"), help).expect("valid gauge");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let inflight = gauge("inflight_requests", "Requests being served");
        let ipfs_cat_streams = counter(
            "ipfs_cat_streams_total",
            "Blob streams opened against IPFS (cat), by reason: blob, range, detached (a client fell behind a shared stream), resumed (a stream broke part-way)",
            &["reason"],
        );
        let plain = |name: &str, help: &str| {
            let c =
                IntCounter::new(format!("ipfs_image_agent_{name}"), help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let blob_streams_shared = plain(
            "blob_streams_shared_total",
            "Whole-blob GETs that joined a blob stream another GET had opened",
        );
        let blob_stream_detached = plain(
            "blob_stream_detached_total",
            "Clients detached from a shared blob stream for falling behind (they continue on their own cat)",
        );
        let blob_stream_buffered_bytes = gauge(
            "blob_stream_buffered_bytes",
            "Bytes held in memory by shared blob streams (bounded by about window + 512 KiB each)",
        );
        let runtime_config_problems = IntGaugeVec::new(
            Opts::new(
                "ipfs_image_agent_runtime_config_problems",
                "1 when containerd's config keeps it from using the mirror, by problem",
            ),
            &["problem"],
        )
        .expect("valid gauge");
        registry
            .register(Box::new(runtime_config_problems.clone()))
            .expect("unique metric");
        let mirror_fallbacks = counter(
            "mirror_fallbacks_total",
            "Mirror requests sent back to the upstream registry, by registry and cause (miss, ipfs_timeout, ipfs_unreachable, invalid)",
            &["registry", "cause"],
        );
        let pins = PinGauges {
            images: gauge(
                "pinned_images",
                "IpfsImages whose image this node holds pinned (prefetch)",
            ),
            bytes: gauge(
                "pinned_bytes",
                "Bytes of the images this node holds pinned (prefetch), each image counted once",
            ),
        };
        let repo_size_bytes = gauge(
            "ipfs_repo_size_bytes",
            "Bytes in this node's Kubo repository (repo/stat RepoSize)",
        );
        let repo_max_bytes = gauge(
            "ipfs_repo_max_bytes",
            "Size limit of this node's Kubo repository (Datastore.StorageMax)",
        );
        // Zero series for every label value the code uses, so dashboards show 0, not "no data".
        verification_failures.with_label_values(&["blob"]);
        for kind in ["timeout", "unreachable", "invalid", "other"] {
            ipfs_errors.with_label_values(&[kind]);
        }
        for reason in ["blob", "range", "detached", "resumed"] {
            ipfs_cat_streams.with_label_values(&[reason]);
        }
        for result in ["hit", "miss"] {
            cache.with_label_values(&[result]);
        }
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
            ipfs_cat_streams,
            blob_streams_shared,
            blob_stream_detached,
            blob_stream_buffered_bytes,
            runtime_config_problems,
            mirror_fallbacks,
            pins,
            repo_size_bytes,
            repo_max_bytes,
        }
    }

    /// Count a fallback, and keep the per-registry hit/miss counter in step.
    pub fn fallback(&self, registry: &str, cause: FallbackCause) {
        self.mirror.with_label_values(&[registry, "miss"]).inc();
        self.mirror_fallbacks
            .with_label_values(&[registry, cause.label()])
            .inc();
    }

    /// Create the hit, miss and fallback series of `registry` at zero (no-op when they exist).
    pub fn register_mirrored(&self, registry: &str) {
        for result in ["hit", "miss"] {
            self.mirror.with_label_values(&[registry, result]);
        }
        for cause in FallbackCause::ALL {
            self.mirror_fallbacks
                .with_label_values(&[registry, cause.label()]);
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
