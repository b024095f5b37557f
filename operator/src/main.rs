//! `ipfs-image-operator`: the IpfsImage controller, plus the one-shot `convert` (like
//! `nerdctl push ipfs://`) and `crd` subcommands.

mod cli;
mod convert_cmd;
mod telemetry;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    telemetry::init(cli.log_format);
    ipfs_oci::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            cli::Command::Convert(args) => convert_cmd::run(&cli.ipfs_api, args).await,
            cli::Command::Crd => {
                print!("{}", ipfs_image_api::crd_yaml());
                Ok(())
            }
            cli::Command::Run(_) => anyhow::bail!("the in-cluster controller is not built yet (see issue 4); use `convert`"),
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
