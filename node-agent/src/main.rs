//! `ipfs-image-agent`: the node agent. Serves IPFS-enabled images to containerd over a
//! read-only registry on 127.0.0.1:5050 and configures containerd to use it as a mirror.

use anyhow::Result;
use clap::Parser;
use ipfs_image_agent::{cli, containerd_hosts, serve};
use tracing_subscriber::EnvFilter;

fn init_logging(format: cli::LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        cli::LogFormat::Text => builder.init(),
        cli::LogFormat::Json => builder.json().init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.log_format);
    ipfs_oci::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: cli::Cli) -> Result<()> {
    match cli.command {
        cli::Command::Serve(args) => serve::run(&cli.ipfs_api, args).await,
        cli::Command::ConfigureContainerd(args) => {
            let registries = args
                .registries
                .iter()
                .map(|r| containerd_hosts::MirroredRegistry::parse(r))
                .collect::<Result<Vec<_>>>()?;
            let config = containerd_hosts::HostsConfig {
                config_path: args.config_path,
                local_host: args.local_host,
                mirror_endpoint: args.mirror_endpoint,
                dial_timeout: Some(args.dial_timeout).filter(|t| !t.is_empty()),
            };
            for file in config.write(&registries)? {
                println!("wrote {}", file.display());
            }
            Ok(())
        }
        cli::Command::Cleanup(args) => {
            for change in containerd_hosts::cleanup(&args.config_path)? {
                println!("{change}");
            }
            Ok(())
        }
    }
}
