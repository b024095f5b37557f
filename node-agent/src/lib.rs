//! The node agent as a library: the `ipfs-image-agent` binary is a thin CLI over these modules,
//! and the integration tests (here and under `e2e/`) drive the same code in-process.

pub mod cache;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod containerd_hosts;
pub mod managed_file;
pub mod metrics;
pub mod registries_conf;
pub mod registry;
pub mod repo_watch;
pub mod runtime_check;
pub mod runtime_watch;
pub mod serve;
