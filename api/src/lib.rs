//! The `IpfsImage` Kubernetes API (`ipfsimage.dev/v1alpha1`).
//!
//! This crate is the contract between the operator, the node agents and users: the custom
//! resource's types (whose doc comments become `kubectl explain` text), the condition types
//! and reasons controllers report, and the names (finalizer, field managers, labels) that
//! more than one binary must agree on. It does no I/O.

pub mod conditions;
mod crd;
pub mod names;
pub mod patterns;
pub mod peer;
mod schema_text;
mod spec;
mod status;

pub use conditions::{Reason, condition, find_condition, is_condition_true, set_condition};
pub use crd::{CRD_FILE, crd_yaml};
pub use spec::{
    IpfsImage, IpfsImageSpec, MIN_RECHECK_INTERVAL, Origin, Prefetch, PullSecretReference,
    RecheckIntervalError,
};
pub use status::{
    DEFAULT_MIRROR_HOST, ImportedSpec, IpfsImageStatus, NodeStatus, Phase, StatusSummary,
    human_size, ipfs_image_reference,
};
