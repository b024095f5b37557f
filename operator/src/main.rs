//! `ipfs-image-operator`: the IpfsImage controller, plus the one-shot `convert` (like
//! `nerdctl push ipfs://`) and `crd` subcommands.

mod cli;
mod convert_cmd;
mod convert_progress;
mod telemetry;

use clap::Parser;
use ipfs_image_operator::controller;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    telemetry::init(cli.global.log_format);
    ipfs_oci::install_crypto_provider();
    ipfs_oci::fault::setup();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            cli::Command::Convert(args) => convert_cmd::run(&cli.global.ipfs_api, args).await,
            cli::Command::Crd => {
                print!("{}", ipfs_image_api::crd_yaml());
                Ok(())
            }
            cli::Command::Run(args) => {
                let (config, options) = run_options(&cli.global.ipfs_api, args)?;
                controller::app::run(config, options).await
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The controller's configuration and run options from `run`'s flags, refusing combinations
/// that cannot work.
fn run_options(
    ipfs_api: &str,
    args: cli::RunArgs,
) -> anyhow::Result<(controller::Config, controller::app::RunOptions)> {
    if args.leader_elect && args.lease_renew_interval >= args.lease_duration {
        anyhow::bail!("--lease-renew-interval must be shorter than --lease-duration");
    }
    if args.error_backoff.is_zero() {
        anyhow::bail!("--error-backoff must be more than 0s: failures must never be retried hot");
    }
    let instance = args
        .pod_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|s| !s.is_empty());
    let config = controller::Config {
        mirror_host: args.mirror_host,
        recheck_interval: args.recheck_interval,
        plain_http_registries: args.plain_http_registries,
        insecure_registries: args.insecure_registries,
        backoff_base: args.error_backoff,
        backoff_max: args.max_backoff,
        instance: instance.clone(),
        max_image_size: (args.max_image_size > 0).then_some(args.max_image_size),
        import_timeout: (!args.import_timeout.is_zero()).then_some(args.import_timeout),
        refused_networks: args.refused_networks,
        allowed_registries: args.allowed_registries,
        orphan_sweep_interval: (!args.orphan_sweep_interval.is_zero())
            .then_some(args.orphan_sweep_interval),
    };
    let peer = match (&args.pod_name, &args.lease_namespace) {
        (Some(pod), Some(namespace)) if args.publish_peer => {
            Some(controller::peer::PeerPublishing {
                namespace: namespace.clone(),
                pod: pod.clone(),
                interval: args.peer_interval,
            })
        }
        _ => None,
    };
    let lease = args.leader_elect.then(|| controller::app::LeaseOptions {
        name: args.lease_name,
        namespace: args.lease_namespace,
        identity: instance.unwrap_or_else(|| format!("ipfs-image-operator-{}", std::process::id())),
        duration: args.lease_duration,
        renew_interval: args.lease_renew_interval,
    });
    let options = controller::app::RunOptions {
        ipfs_api: ipfs_api.to_owned(),
        namespace: args.namespace,
        metrics_listen: args.metrics_listen,
        concurrency: args.concurrency,
        lease,
        peer,
    };
    Ok((config, options))
}
