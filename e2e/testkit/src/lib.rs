//! Real daemons for tests: Kubo (built by `e2e/deps.sh` at the chart's version), the Debian `docker-registry`, containerd and podman. Each starts on free loopback ports in
//! its own temporary directory and is stopped (by PID) when dropped — also when a test panics —
//! and, through `PR_SET_PDEATHSIG`, when the test process dies. Nothing here dials out: every
//! IPFS node has an empty Bootstrap list, no MDNS and no routing.

mod agent;
mod containerd;
pub mod fake_api;
mod images;
mod ipfs;
mod kube_api;
pub mod kube_world;
mod netns;
mod podman;
mod process;
mod proxy;
mod registry;
mod tmpfs;

pub use agent::{Agent, sum_metric};
pub use containerd::{Containerd, ContainerdLine};
pub use images::{
    PushFormat, TestImage, add_noise_layers, build_busybox_layout, noise, push_layout,
    registry_with_busybox,
};
pub use ipfs::{IpfsDaemon, IpfsNet, KUBO_DAEMON_ARGS, kubo_binary, kubo_version};
pub use kube_api::{KubeApi, deps_binary, kube_apiserver_version};
pub use netns::{NetNode, Netns, TestNet};
pub use podman::Podman;
pub use process::{Daemon, free_port, settled, wait_until, wait_until_async};
pub use proxy::{Answer, Gate, HttpProxy};
pub use registry::Registry;
pub use tmpfs::Tmpfs;

use std::path::PathBuf;

/// The workspace root (for `e2e/.deps`, built binaries and fixtures).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}

/// Path of a binary of this workspace, built by cargo for the current profile.
pub fn workspace_binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let path = target.join(profile).join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// Run async test code on a fresh multi-threaded runtime. Daemons are started outside it
/// (their readiness checks block).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// reqwest needs a TLS crypto provider even for plain HTTP; install ring's once.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A blocking HTTP client (plain HTTP and HTTPS) with `timeout`.
/// The OCI image manifest a registry at `addr` (plain HTTP) serves for `repo:tag`.
pub fn oci_manifest(addr: &str, repo: &str, tag: &str) -> serde_json::Value {
    http_client(std::time::Duration::from_secs(10))
        .get(format!("http://{addr}/v2/{repo}/manifests/{tag}"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("manifest {repo}:{tag} from {addr}: {e}"))
}

pub fn http_client(timeout: std::time::Duration) -> reqwest::blocking::Client {
    install_crypto_provider();
    reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .expect("http client")
}
