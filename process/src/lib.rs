//! What the two binaries share as processes, so that both read their flags, log, parse
//! durations and stop the same way: the global flags ([`GlobalArgs`]), the log set-up
//! ([`logging`]), Go-style duration flags ([`duration`]) and shutdown ([`shutdown`]).

pub mod duration;
pub mod logging;
pub mod shutdown;

pub use logging::LogFormat;
pub use shutdown::{AbortOnDrop, shutdown_signal};

/// Flags of every subcommand of both binaries.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Kubo RPC API of this process's IPFS daemon (keep it on 127.0.0.1: it is an admin API).
    #[arg(
        long,
        env = "IPFS_API",
        default_value = "http://127.0.0.1:5001",
        global = true
    )]
    pub ipfs_api: String,

    /// Log format on stderr.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}
