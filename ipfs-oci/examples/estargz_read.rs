//! Read one file out of an eStargz layer served by a registry (the node agent), with Range
//! requests only, and print what it cost as JSON — the lazy reader as a command-line tool.
//!
//! usage: estargz_read REGISTRY_URL REPOSITORY LAYER_DIGEST PATH [TOC_DIGEST] > file-stats.json
//! e.g.   estargz_read http://127.0.0.1:5050 ipfs/bafk… sha256:… etc/motd sha256:…

use std::time::Instant;

use ipfs_oci::digest::Digest;
use ipfs_oci::estargz::lazy::read_file;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(4..=5).contains(&args.len()) {
        eprintln!("usage: estargz_read REGISTRY_URL REPOSITORY LAYER_DIGEST PATH [TOC_DIGEST]");
        std::process::exit(2);
    }
    let digest: Digest = args[2].parse()?;
    let toc: Option<Digest> = args.get(4).map(|d| d.parse()).transpose()?;
    ipfs_oci::install_crypto_provider();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let read = read_file(&client, &args[0], &args[1], &digest, None, toc, &args[3]).await?;
    let elapsed = started.elapsed();
    println!(
        "{}",
        serde_json::json!({
            "path": args[3],
            "file_bytes": read.bytes.len(),
            "file_digest": Digest::of(&read.bytes).to_string(),
            "transferred": read.transferred,
            "requests": read.requests,
            "layer_size": read.layer_size,
            "toc_digest": read.toc_digest.to_string(),
            "seconds": elapsed.as_secs_f64(),
        })
    );
    Ok(())
}
