//! Command-line interface. Every flag also reads an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipfs_image_api::peer::PeerInfo;
use ipfs_image_process::{GlobalArgs, duration};

#[derive(Debug, Parser)]
#[command(
    name = "ipfs-image-agent",
    version,
    about = "A read-only registry and containerd mirror backed by IPFS"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the registry (`/v2/ipfs/<CID>/…` and mirror mode).
    Serve(ServeArgs),
    /// Write containerd hosts.toml files: the local `ipfs/<CID>` host and a mirror entry per registry.
    ConfigureContainerd(ConfigureArgs),
    /// Write a registries.conf.d drop-in for CRI-O and podman: the agent as the mirror of each
    /// registry, at a path that names the upstream (`127.0.0.1:5050/docker.io`).
    ConfigureRegistries(ConfigureRegistriesArgs),
    /// Remove the hosts.toml files (and drop-in) this agent wrote and restore the ones it replaced.
    Cleanup(CleanupArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the registry. containerd reaches it over the node's loopback.
    #[arg(long, env = "AGENT_LISTEN", default_value = "127.0.0.1:5050")]
    pub listen: SocketAddr,

    /// Address of /metrics, /healthz and /readyz (disabled when not given).
    #[arg(long, env = "AGENT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Standalone mirror catalog: a YAML list of `{source: <image reference>, cid: <CID>}`,
    /// reloaded when the file changes.
    #[arg(long, env = "AGENT_IMAGES")]
    pub images: Option<PathBuf>,

    /// Longest time to resolve an image before answering an error (so containerd can fall back).
    #[arg(long, env = "AGENT_RESOLVE_TIMEOUT", default_value = "5s", value_parser = duration::parse)]
    pub resolve_timeout: Duration,

    /// Longest wait for IPFS to start sending a blob, and the longest silence while it streams.
    #[arg(long, env = "AGENT_IPFS_TIMEOUT", default_value = "10s", value_parser = duration::parse)]
    pub ipfs_timeout: Duration,

    /// Concurrent GETs of one blob share one IPFS stream. A client that falls this far behind the
    /// fastest one continues on its own stream, and a GET arriving once a shared stream has sent
    /// more than this opens a new one: memory per shared stream stays near this value plus
    /// 512 KiB of read-ahead, whatever the number of clients. Bytes, or with KiB/MiB/GiB.
    #[arg(long, env = "AGENT_BLOB_SHARE_WINDOW", default_value = "4MiB", value_parser = parse_size)]
    pub blob_share_window: u64,

    /// Where blob bytes are read: `auto` (Kubo's own HTTP gateway when it listens on loopback,
    /// as the chart configures it, found through the RPC API and looked up again if it goes
    /// away; otherwise RPC `cat`), `rpc` (always RPC `cat`), or the gateway's loopback URL.
    #[arg(long, env = "AGENT_IPFS_GATEWAY", default_value = "auto")]
    pub ipfs_gateway: String,

    /// Resolved images kept in memory.
    #[arg(long, env = "AGENT_CACHE_ENTRIES", default_value_t = 4096)]
    pub cache_entries: usize,

    /// Run inside a Kubernetes cluster: mirror catalog from IpfsImage objects, prefetch pins,
    /// this node's status entries, peering. Default: on when `KUBERNETES_SERVICE_HOST` is set.
    #[arg(long, env = "AGENT_KUBERNETES", num_args = 0..=1, default_missing_value = "true")]
    pub kubernetes: Option<bool>,

    /// Name of this node (from the downward API `spec.nodeName`); required with `--kubernetes`.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// Directory of the agent's own state (the record of the pins it made).
    #[arg(
        long,
        env = "AGENT_STATE_DIR",
        default_value = "/var/lib/ipfs-image-agent"
    )]
    pub state_dir: PathBuf,

    /// Least time between two writes of this node's status entry on the same IpfsImage.
    #[arg(long, env = "AGENT_STATUS_INTERVAL", default_value = "30s", value_parser = duration::parse)]
    pub status_interval: Duration,

    /// Label selector of the agent Pods (in this Pod's namespace) whose IPFS peers to connect to,
    /// e.g. `app.kubernetes.io/name=ipfs-image,app.kubernetes.io/component=agent`.
    #[arg(long, env = "AGENT_PEER_SELECTOR")]
    pub peer_selector: Option<String>,

    /// An IPFS peer to keep connected, as a multiaddr ending in `/p2p/<peer ID>` (for example
    /// another machine's daemon, or a seed). Works with and without Kubernetes. Repeat (or
    /// separate with commas) for several.
    #[arg(long = "peer", env = "AGENT_PEERS", value_delimiter = ',', value_parser = parse_peer)]
    pub peers: Vec<PeerInfo>,

    /// How often to reconnect to every known peer (re-peers a restarted IPFS daemon).
    #[arg(long, env = "AGENT_PEER_INTERVAL", default_value = "30s", value_parser = duration::parse)]
    pub peer_interval: Duration,

    /// How often to read the IPFS repository's size for the `ipfs_repo_*_bytes` gauges; `0s`
    /// never asks.
    #[arg(long, env = "AGENT_REPO_STAT_INTERVAL", default_value = "30s", value_parser = duration::parse)]
    pub repo_stat_interval: Duration,

    /// Namespaces whose IpfsImages may answer original references (`docker.io/library/nginx:1`)
    /// on this node; objects elsewhere are served only as `ipfs/<CID>`. Repeat (or separate
    /// with commas) for several; `*` allows every namespace. Default: this Pod's namespace.
    #[arg(
        long = "mirror-namespace",
        env = "AGENT_MIRROR_NAMESPACES",
        value_delimiter = ','
    )]
    pub mirror_namespaces: Vec<String>,

    /// The most bytes of prefetched images (`spec.prefetch`) this node holds, each image counted
    /// once by its `status.size`; images that would exceed it are not pinned (oldest object
    /// first, so a new object never pushes out what the node holds) and their node entry says
    /// so. Bytes, or with KiB/MiB/GiB/TiB; `0` turns the limit off.
    #[arg(long, env = "AGENT_PREFETCH_BUDGET", default_value = "10GiB", value_parser = parse_size)]
    pub prefetch_budget: u64,

    /// Let IpfsImages imported with `imagePullSecrets` answer their original references too.
    /// Off by default: the mirror asks no credentials, so every Pod naming such an image would
    /// get it (they are served as `ipfs/<CID>` either way).
    #[arg(long, env = "AGENT_MIRROR_PRIVATE_IMAGES")]
    pub mirror_private_images: bool,

    /// This agent's Pod name (downward API), where it publishes its IPFS peer.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// This agent's Pod namespace (downward API).
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,

    #[command(flatten)]
    pub containerd: ContainerdArgs,
}

/// `4194304`, `512KiB`, `4MiB`, `1GiB` (also `K`/`M`/`G`, `KB`/`MB`/`GB` as powers of 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 4MiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use KiB, MiB, GiB or TiB)"
            ));
        }
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Where containerd reads registry hosts, and its own config (to check it really does).
#[derive(Debug, Clone, Args)]
pub struct ContainerdArgs {
    /// containerd's registry `config_path` (CRI `registry.config_path`), where the `hosts.toml`
    /// files go.
    #[arg(
        long,
        env = "CONTAINERD_CONFIG_PATH",
        default_value = "/etc/containerd/certs.d"
    )]
    pub config_path: PathBuf,

    /// containerd's `config.toml`, read (never written) to check that containerd uses
    /// `--config-path`: problems are logged and make `/readyz` fail. Not checked when not given.
    #[arg(long, env = "CONTAINERD_CONFIG")]
    pub containerd_config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ConfigureArgs {
    #[command(flatten)]
    pub containerd: ContainerdArgs,

    /// Registry to mirror: `HOST` (upstream https://HOST) or `HOST=UPSTREAM_URL`; `_default`
    /// mirrors every registry without its own entry. Repeat for several.
    #[arg(long = "registry", env = "MIRROR_REGISTRIES", value_delimiter = ',')]
    pub registries: Vec<String>,

    #[command(flatten)]
    pub endpoints: EndpointArgs,

    /// containerd's connect timeout for the mirror (empty to leave containerd's default).
    #[arg(long, env = "AGENT_DIAL_TIMEOUT", default_value = "200ms")]
    pub dial_timeout: String,
}

/// How the runtime names and reaches the agent's registry.
#[derive(Debug, Clone, Args)]
pub struct EndpointArgs {
    /// Host name pods use for IPFS images (`<local-host>/ipfs/<CID>`).
    #[arg(long, env = "AGENT_LOCAL_HOST", default_value = "localhost:5050")]
    pub local_host: String,

    /// The agent's registry as the runtime reaches it.
    #[arg(
        long,
        env = "AGENT_MIRROR_ENDPOINT",
        default_value = "http://127.0.0.1:5050"
    )]
    pub mirror_endpoint: String,
}

#[derive(Debug, Args)]
pub struct ConfigureRegistriesArgs {
    /// The `registries.conf.d` directory CRI-O and podman read drop-ins from.
    #[arg(
        long,
        env = "REGISTRIES_CONFIG_DIR",
        default_value = "/etc/containers/registries.conf.d"
    )]
    pub config_dir: PathBuf,

    /// Registry to mirror: `HOST` (upstream HOST itself) or `HOST=UPSTREAM_URL`. Repeat for
    /// several. (`_default` does not exist here: registries.conf has no catch-all mirror.)
    #[arg(long = "registry", env = "MIRROR_REGISTRIES", value_delimiter = ',')]
    pub registries: Vec<String>,

    #[command(flatten)]
    pub endpoints: EndpointArgs,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// containerd's registry `config_path`: our `hosts.toml` files are removed, backups restored.
    #[arg(
        long,
        env = "CONTAINERD_CONFIG_PATH",
        default_value = "/etc/containerd/certs.d"
    )]
    pub config_path: PathBuf,

    /// Also remove the drop-in `configure-registries` wrote in this directory (CRI-O, podman).
    #[arg(long, env = "REGISTRIES_CONFIG_DIR")]
    pub registries_dir: Option<PathBuf>,
}

fn parse_peer(s: &str) -> Result<PeerInfo, String> {
    PeerInfo::from_multiaddr(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }
}
