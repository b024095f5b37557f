//! `ipfs-image-agent`: the node agent. Serves IPFS-enabled images to containerd over a
//! read-only registry on 127.0.0.1:5050 and configures containerd to use it as a mirror.

use anyhow::Result;
use clap::Parser;
use ipfs_image_agent::{
    cli, containerd_hosts, registries_conf, runtime_check, runtime_watch, serve,
};
fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    ipfs_image_process::logging::init(cli.global.log_format, std::io::stderr);
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
        cli::Command::Serve(args) => serve::run(&cli.global.ipfs_api, args).await,
        cli::Command::ConfigureContainerd(args) => configure_containerd(args),
        cli::Command::ConfigureRegistries(args) => {
            let registries = args
                .registries
                .iter()
                .map(|r| registries_conf::RegistryMirror::parse(r))
                .collect::<Result<Vec<_>>>()?;
            let drop_in = registries_conf::DropIn {
                config_dir: args.config_dir,
                local_host: args.endpoints.local_host,
                mirror_endpoint: args.endpoints.mirror_endpoint,
            };
            println!("wrote {}", drop_in.write(&registries)?.display());
            Ok(())
        }
        cli::Command::Cleanup(args) => {
            let mut changes = containerd_hosts::cleanup(&args.config_path)?;
            if let Some(dir) = &args.registries_dir {
                changes.extend(registries_conf::cleanup(dir)?);
            }
            for change in changes {
                println!("{change}");
            }
            Ok(())
        }
    }
}

/// Write the hosts.toml files, then check that containerd reads them: a misconfigured node is
/// reported here, at the top of the agent Pod's log, not only by `/readyz` later.
fn configure_containerd(args: cli::ConfigureArgs) -> Result<()> {
    let registries = args
        .registries
        .iter()
        .map(|r| containerd_hosts::MirroredRegistry::parse(r))
        .collect::<Result<Vec<_>>>()?;
    let config = containerd_hosts::HostsConfig {
        config_path: args.containerd.config_path.clone(),
        local_host: args.endpoints.local_host,
        mirror_endpoint: args.endpoints.mirror_endpoint,
        dial_timeout: Some(args.dial_timeout).filter(|t| !t.is_empty()),
    };
    for file in config.write(&registries)? {
        println!("wrote {}", file.display());
    }
    if let Some(file) = &args.containerd.containerd_config {
        let report = runtime_check::check(file, &args.containerd.config_path);
        runtime_watch::log_report(&report, &file.display().to_string());
        // Not an error: the agent still serves `ipfs/<CID>` images; its /readyz stays false.
        for problem in report.problems() {
            println!("MIRROR NOT USED: {}", problem.message);
        }
    }
    Ok(())
}
