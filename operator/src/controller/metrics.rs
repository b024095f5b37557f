//! Prometheus metrics of the controller, in a registry of their own.

use std::time::{Duration, Instant};

use ipfs_image_api::Reason;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Every reconcile started (apply and cleanup).
    pub reconciles: IntCounter,
    /// Failed reconciles, by condition reason (or `KubernetesApi`).
    pub failures: IntCounterVec,
    /// Wall time of successful imports and adoptions.
    pub import_duration: Histogram,
    /// Bytes of the images imported or adopted.
    pub import_bytes: IntCounter,
    /// Reconciles running right now.
    pub in_flight: IntGauge,
    /// Wall time of every reconcile, whatever its outcome.
    pub reconcile_duration: Histogram,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounter::new(
            "ipfs_image_operator_reconcile_total",
            "Reconciles of IpfsImage objects",
        )
        .expect("valid metric");
        let failures = IntCounterVec::new(
            Opts::new(
                "ipfs_image_operator_reconcile_failures_total",
                "Failed reconciles, by condition reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let import_duration = Histogram::with_opts(
            HistogramOpts::new(
                "ipfs_image_operator_import_duration_seconds",
                "Duration of successful imports and adoptions",
            )
            .buckets(vec![0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0]),
        )
        .expect("valid metric");
        let import_bytes = IntCounter::new(
            "ipfs_image_operator_import_bytes_total",
            "Bytes of images imported or adopted",
        )
        .expect("valid metric");
        let in_flight = IntGauge::new(
            "ipfs_image_operator_reconciles_in_flight",
            "Reconciles running now",
        )
        .expect("valid metric");
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "ipfs_image_operator_reconcile_duration_seconds",
                "Duration of reconciles (apply and cleanup), successful or not",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0,
            ]),
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "ipfs_image_operator_leader",
            "1 while this replica is the leader",
        )
        .expect("valid metric");
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(import_duration.clone()),
            Box::new(import_bytes.clone()),
            Box::new(in_flight.clone()),
            Box::new(reconcile_duration.clone()),
            Box::new(leader.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        // Pre-register every failure reason so dashboards see zeros rather than gaps.
        for reason in Reason::ALL.into_iter().filter(|r| r.is_failure()) {
            failures.with_label_values(&[reason.as_str()]);
        }
        failures.with_label_values(&["KubernetesApi"]);
        Self {
            registry,
            reconciles,
            failures,
            import_duration,
            import_bytes,
            in_flight,
            reconcile_duration,
            leader,
        }
    }

    /// Count a reconcile that starts now; it is in flight, and timed, until the guard drops
    /// (also when the reconcile fails or is cancelled).
    pub fn reconcile_started(&self) -> ReconcileGuard {
        self.reconciles.inc();
        self.in_flight.inc();
        ReconcileGuard {
            in_flight: self.in_flight.clone(),
            duration: self.reconcile_duration.clone(),
            started: Instant::now(),
        }
    }

    pub fn observe_import(&self, elapsed: Duration, bytes: u64) {
        self.import_duration.observe(elapsed.as_secs_f64());
        self.import_bytes.inc_by(bytes);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding never fails");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

/// A reconcile in flight (see [`Metrics::reconcile_started`]).
pub struct ReconcileGuard {
    in_flight: IntGauge,
    duration: Histogram,
    started: Instant,
}

impl Drop for ReconcileGuard {
    fn drop(&mut self) {
        self.in_flight.dec();
        self.duration.observe(self.started.elapsed().as_secs_f64());
    }
}
