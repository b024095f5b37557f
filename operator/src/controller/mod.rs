//! The IpfsImage controller: a kube-runtime `Controller` whose reconcile imports (or adopts) an
//! image into the operator's IPFS daemon, pins it, reports status, Events and metrics, and
//! unpins on delete.
//!
//! Layout (after kube-rs's controller-rs): [`reconcile`] holds the reconcile logic, [`error`]
//! the errors and their condition reasons, [`metrics`] the Prometheus metrics, [`server`] the
//! HTTP endpoints, [`leader`] the Lease-based leader election and [`app`] the wiring of `run`.
//! Beside [`reconcile`]'s decisions, `status` builds the statuses it writes, `context` holds what
//! reconciles share and makes their API writes, `secrets` reads pull credentials and `watch`
//! runs the `Controller`.

pub mod app;
mod config;
mod context;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod nodes;
pub mod orphans;
pub mod peer;
pub mod reconcile;
mod secrets;
pub mod server;
mod status;
mod watch;

pub use config::Config;
pub use context::Context;
pub use error::{Error, Result};
pub use metrics::Metrics;
pub use reconcile::{error_policy, reconcile};
pub use watch::{relevant_change, run};

/// Name of the controller in Events (`reportingController`) and logs.
pub const CONTROLLER_NAME: &str = "ipfs-image-operator";
