//! The serving agent's view of `runtime_check`: re-read containerd's config whenever readiness is
//! asked (so an edit on the node shows up without a restart), log each change of verdict once,
//! and keep the `runtime_config_problems` gauge current.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::metrics::Metrics;
use crate::runtime_check::{self, FindingKind, Report, Severity};

pub struct RuntimeWatch {
    config_file: PathBuf,
    hosts_dir: PathBuf,
    metrics: Metrics,
    /// The findings last logged, so a probe every 10 s does not repeat them.
    last: Mutex<Option<Report>>,
}

impl RuntimeWatch {
    pub fn new(config_file: PathBuf, hosts_dir: PathBuf, metrics: Metrics) -> Self {
        Self {
            config_file,
            hosts_dir,
            metrics,
            last: Mutex::new(None),
        }
    }

    /// Check now; `Err(summary)` when containerd would not use the mirror.
    pub fn ready(&self) -> Result<(), String> {
        let report = runtime_check::check(&self.config_file, &self.hosts_dir);
        for kind in FindingKind::ALL {
            let hit = report.problems().any(|f| f.kind == kind);
            self.metrics
                .runtime_config_problems
                .with_label_values(&[kind.label()])
                .set(i64::from(hit));
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref() != Some(&report) {
            log_report(&report, &self.config_file.display().to_string());
            *last = Some(report.clone());
        }
        if report.is_ok() {
            Ok(())
        } else {
            Err(format!(
                "containerd does not use the mirror: {}",
                report.summary()
            ))
        }
    }
}

/// Each finding on its own line, problems at error level: they are why pulls skip IPFS.
pub fn log_report(report: &Report, config_file: &str) {
    if report.findings.is_empty() {
        tracing::info!(config = config_file, runtime = %report.runtime, "containerd reads the mirror's hosts.toml");
    }
    for f in &report.findings {
        match f.severity {
            Severity::Problem => tracing::error!(
                config = config_file,
                runtime = %report.runtime,
                problem = f.kind.label(),
                "MIRROR NOT USED: {}",
                f.message
            ),
            Severity::Warning => tracing::warn!(
                config = config_file,
                runtime = %report.runtime,
                problem = f.kind.label(),
                "{}",
                f.message
            ),
        }
    }
}
