//! Command-line interface. Every flag also reads an environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(name = "ipfs-image-operator", version, about = "Imports container images into IPFS and keeps them pinned")]
pub struct Cli {
    /// Kubo RPC API of the IPFS daemon that stores and pins images (keep it on 127.0.0.1).
    #[arg(long, env = "IPFS_API", default_value = "http://127.0.0.1:5001", global = true)]
    pub ipfs_api: String,

    /// Log format on stderr.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

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

    /// Convert gzip layers to eStargz for lazy pulling (not available yet).
    #[arg(long, env = "CONVERT_ESTARGZ")]
    pub estargz: bool,

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
pub struct RunArgs {}
