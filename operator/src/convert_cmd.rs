//! `ipfs-image-operator convert`: one image, registry → IPFS, CID on the last line of stdout.

use std::io::Read;

use anyhow::{Context, Result};
use ipfs_oci::content_id::to_base32;
use ipfs_oci::convert::{ConvertOptions, convert};
use ipfs_oci::format::Platform;
use ipfs_oci::ipfs::{IpfsStore, KuboClient, KuboOptions};
use ipfs_oci::source::{
    Credentials, Reference, SourceOptions, SourceRegistry, credentials_from_docker_config,
    parse_reference,
};

use crate::cli::ConvertArgs;

pub async fn run(ipfs_api: &str, args: ConvertArgs) -> Result<()> {
    let reference = parse_reference(&args.image)
        .with_context(|| format!("invalid image reference {:?}", args.image))?;
    let platforms = args
        .platforms
        .iter()
        .map(|p| p.parse::<Platform>())
        .collect::<Result<Vec<_>, _>>()?;
    let credentials = credentials(&args, &reference)?;
    let ipfs = KuboClient::new(ipfs_api, KuboOptions::default())?;
    let version = ipfs
        .version()
        .await
        .with_context(|| format!("IPFS API at {ipfs_api}"))?;
    tracing::info!(ipfs_api, version, image = %reference.whole(), "converting");
    let source = SourceRegistry::new(&SourceOptions {
        plain_http: args.plain_http,
        insecure: args.insecure,
        credentials,
        ..Default::default()
    });
    let progress = crate::convert_progress::for_stderr();
    let options = ConvertOptions {
        platforms,
        estargz: args.estargz,
        // One-shot: a fresh staging area, removed if the conversion fails.
        staging_key: None,
        max_image_size: None,
        progress: Some(progress.clone()),
        // A user's pin: nothing the operator would ever sweep.
        pin_name: None,
        blob_concurrency: usize::from(args.blob_concurrency),
    };
    let image = convert(&ipfs, &source, &reference, &options).await?;
    progress.finished();
    tracing::info!(
        index = %image.index_digest,
        source_digest = %image.source_digest,
        layout = %to_base32(&image.layout_cid),
        bytes = image.total_size,
        blobs = image.blob_count,
        estargz_layers = image.estargz_layers,
        platforms = ?image.platforms.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "converted"
    );
    println!("{}", to_base32(&image.root_cid));
    Ok(())
}

fn credentials(args: &ConvertArgs, reference: &Reference) -> Result<Option<Credentials>> {
    if let Some(username) = &args.username {
        let mut password = String::new();
        std::io::stdin()
            .read_to_string(&mut password)
            .context("reading the password from stdin")?;
        let password = password.trim_end_matches(['\r', '\n']).to_owned();
        return Ok(Some(Credentials {
            username: username.clone(),
            password,
        }));
    }
    if let Some(path) = &args.auth_file {
        let json = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        return credentials_from_docker_config(&json, reference.registry())
            .map_err(anyhow::Error::msg);
    }
    Ok(None)
}
