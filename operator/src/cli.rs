//! Command-line interface. Every flag also reads an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use ipfs_image_process::{GlobalArgs, duration};

#[derive(Debug, Parser)]
#[command(
    name = "ipfs-image-operator",
    version,
    about = "Imports container images into IPFS and keeps them pinned"
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
    /// Convert IMAGE to the IPFS-enabled format, add and pin it; print its CID as the last line
    /// of stdout (like `nerdctl push ipfs://IMAGE`).
    Convert(ConvertArgs),
    /// Run the IpfsImage controller (in a cluster).
    Run(RunArgs),
    /// Print the IpfsImage CustomResourceDefinition as YAML.
    Crd,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Image reference, e.g. docker.io/library/busybox:1.36 or registry:5000/app@sha256:…
    pub image: String,

    /// Keep only this platform (os/arch[/variant]); repeat for several. Default: all platforms.
    #[arg(long = "platform", env = "CONVERT_PLATFORMS", value_delimiter = ',')]
    pub platforms: Vec<String>,

    /// Talk plain HTTP to the source registry.
    #[arg(long, env = "CONVERT_PLAIN_HTTP")]
    pub plain_http: bool,

    /// Accept invalid TLS certificates from the source registry.
    #[arg(long, env = "CONVERT_INSECURE")]
    pub insecure: bool,

    /// Convert gzip layers to eStargz for lazy pulling (stargz-snapshotter).
    #[arg(long, env = "CONVERT_ESTARGZ")]
    pub estargz: bool,

    /// Blobs of a manifest fetched and added at a time.
    #[arg(long, env = "CONVERT_BLOB_CONCURRENCY",
          default_value_t = ipfs_oci::convert::BLOB_CONCURRENCY as u16,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub blob_concurrency: u16,

    /// Registry user name (the password is read from stdin, see --password-stdin).
    #[arg(long, env = "REGISTRY_USERNAME", requires = "password_stdin")]
    pub username: Option<String>,

    /// Read the registry password from stdin.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,

    /// Docker config JSON with credentials (~/.docker/config.json or a dockerconfigjson Secret's data).
    #[arg(long, env = "REGISTRY_AUTH_FILE", conflicts_with = "username")]
    pub auth_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Watch IpfsImages in this namespace only. Default: all namespaces.
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Host and port of the node agents' registry, as Pods reference it; `status.image` is
    /// `<mirror-host>/ipfs/<cid>`.
    #[arg(long, env = "MIRROR_HOST", default_value = ipfs_image_api::DEFAULT_MIRROR_HOST)]
    pub mirror_host: String,

    /// How often tags in `spec.source` are resolved again when `spec.recheckInterval` is unset
    /// (a moved tag is re-imported); also how often a Ready image's pin is verified. `0s` turns
    /// default re-checks off.
    #[arg(long, env = "RECHECK_INTERVAL", default_value = "1h", value_parser = duration::parse)]
    pub recheck_interval: Duration,

    /// Talk plain HTTP to this registry (host[:port], as in image references); repeat or
    /// separate with commas.
    #[arg(
        long = "plain-http-registry",
        value_name = "HOST",
        env = "PLAIN_HTTP_REGISTRIES",
        value_delimiter = ','
    )]
    pub plain_http_registries: Vec<String>,

    /// Accept invalid TLS certificates from this registry (host[:port]); repeat or separate
    /// with commas.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST",
        env = "INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,

    /// Refuse images whose blobs, as their manifests declare them, add up to more than this
    /// (reason `ImageTooLarge`, before the blobs are downloaded). Bytes, or with KiB/MiB/GiB/TiB;
    /// `0` turns the limit off.
    #[arg(long, env = "MAX_IMAGE_SIZE", default_value = "20GiB", value_parser = parse_size)]
    pub max_image_size: u64,

    /// Longest time one import (registry to IPFS) may take; a slower one stops with reason
    /// `ImportTimedOut`, frees its reconcile slot and is retried with backoff, resuming from
    /// the blobs it stored. `0s` turns the deadline off.
    #[arg(long, env = "IMPORT_TIMEOUT", default_value = "1h", value_parser = duration::parse)]
    pub import_timeout: Duration,

    /// A network (CIDR) a registry's auth realm or redirect may not send the operator to, in
    /// addition to loopback and link-local addresses, which are always refused (reason
    /// `AddressRefused`; the registry's own host is exempt). List the cluster's pod and service
    /// ranges. Repeat or separate with commas.
    #[arg(
        long = "refuse-network",
        value_name = "CIDR",
        env = "REFUSED_NETWORKS",
        value_delimiter = ','
    )]
    pub refused_networks: Vec<ipfs_oci::address::Network>,

    /// A registry (`host[:port]`, or `*.example.com` for every host below example.com) that
    /// `spec.source` may name; any other stops with reason `RegistryNotAllowed` before a request
    /// is sent. Repeat or separate with commas. Empty (the default): every registry.
    #[arg(
        long = "allowed-registry",
        value_name = "HOST",
        env = "ALLOWED_REGISTRIES",
        value_delimiter = ','
    )]
    pub allowed_registries: Vec<String>,

    /// How often layout pins the operator made whose image no IpfsImage holds any more (a
    /// status write that failed, a finalizer removed by hand) are removed; `0s` never.
    #[arg(long, env = "ORPHAN_SWEEP_INTERVAL", default_value = "10m", value_parser = duration::parse)]
    pub orphan_sweep_interval: Duration,

    /// Address of the HTTP server with /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, env = "METRICS_LISTEN", default_value = "0.0.0.0:8080")]
    pub metrics_listen: SocketAddr,

    /// Reconcile at most this many IpfsImages at once.
    #[arg(long, env = "RECONCILE_CONCURRENCY", default_value_t = 4)]
    pub concurrency: u16,

    /// First retry delay after a failed reconcile; it doubles with each consecutive failure of
    /// the same object, up to --max-backoff.
    #[arg(long, env = "ERROR_BACKOFF", default_value = "5s", value_parser = duration::parse)]
    pub error_backoff: Duration,

    /// Longest retry delay after failed reconciles.
    #[arg(long, env = "MAX_BACKOFF", default_value = "5m", value_parser = duration::parse)]
    pub max_backoff: Duration,

    /// Elect a leader with a coordination.k8s.io Lease, so that only one replica reconciles.
    /// `--leader-elect=false` for a single replica run outside the cluster.
    #[arg(long, env = "LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub leader_elect: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "ipfs-image-operator")]
    pub lease_name: String,

    /// Namespace of the leader-election Lease. Default: the operator's own namespace (the
    /// service account's, or the kubeconfig context's).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// How long a leader's Lease stays valid without renewal.
    #[arg(long, env = "LEASE_DURATION", default_value = "15s", value_parser = duration::parse)]
    pub lease_duration: Duration,

    /// How often the leader renews its Lease (and others try to take it over).
    #[arg(long, env = "LEASE_RENEW_INTERVAL", default_value = "5s", value_parser = duration::parse)]
    pub lease_renew_interval: Duration,

    /// This replica's name: the Lease holder identity and the Events' reportingInstance.
    /// Default: $HOSTNAME (the Pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Publish the IPFS daemon's peer (ID, swarm addresses) as the `ipfsimage.dev/peer`
    /// annotation of this Pod, so the agents connect to it. Needs `--pod-name` and the Pod's
    /// namespace (`POD_NAMESPACE`).
    #[arg(long, env = "PUBLISH_PEER", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub publish_peer: bool,

    /// How often the IPFS daemon's identity is read again to republish it when it changed.
    #[arg(long, env = "PEER_INTERVAL", default_value = "30s", value_parser = duration::parse)]
    pub peer_interval: Duration,
}

/// `1073741824`, `512MiB`, `20GiB`, `1TiB` (`K`/`M`/`G`/`T` and `KB`… as powers of 1024 too).
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 20GiB)"))?;
    let shift = match unit
        .trim()
        .to_ascii_lowercase()
        .trim_end_matches("ib")
        .trim_end_matches('b')
    {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
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
