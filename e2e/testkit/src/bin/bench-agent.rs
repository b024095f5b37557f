//! Benchmark of the agent's registry (not a test; `bash bench/agent.sh`). In one run, against the
//! same IPFS daemon and the same bytes:
//! - blob throughput through the agent vs `cat` straight from the IPFS API vs the Debian
//!   `docker-registry` serving the same blob from disk;
//! - latency of a cached manifest HEAD (p50/p99);
//! - a containerd pull of the image through the agent vs straight from the registry.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use testkit::{Agent, Containerd, IpfsDaemon, Registry, noise, workspace_binary};

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median MiB/s of `runs` downloads; checks the byte count.
fn throughput(
    name: &str,
    runs: usize,
    expected: u64,
    mut fetch: impl FnMut() -> Result<u64>,
) -> Result<f64> {
    let mut rates = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let n = fetch()?;
        ensure!(n == expected, "{name}: got {n} bytes, expected {expected}");
        rates.push(n as f64 / 1048576.0 / t.elapsed().as_secs_f64());
    }
    let m = median(rates);
    println!("{name:<40} {m:8.1} MiB/s (median of {runs})");
    Ok(m)
}

fn main() -> Result<()> {
    let size_mib: usize = std::env::var("BENCH_LAYER_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let operator = workspace_binary("ipfs-image-operator");
    let agent_bin = workspace_binary("ipfs-image-agent");
    let ipfs = IpfsDaemon::start()?;
    let registry = Registry::start()?;
    let work = tempfile::tempdir()?;

    eprintln!("building a {size_mib} MiB image…");
    let layout = work.path().join("oci");
    let image = |t: &str| format!("{}:{t}", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))?;
    run(Command::new("umoci").args(["new", "--image", &image("big")]))?;
    let bundle = work.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image", &image("big")])
        .arg(&bundle))?;
    std::fs::create_dir_all(bundle.join("rootfs/bin"))?;
    std::fs::copy("/bin/busybox", bundle.join("rootfs/bin/busybox"))?;
    std::fs::write(
        bundle.join("rootfs/data.bin"),
        noise(size_mib * 1048576, 42),
    )?;
    run(Command::new("umoci")
        .args(["repack", "--image", &image("big")])
        .arg(&bundle))?;
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image("big"),
        "--os",
        "linux",
        "--architecture",
        "amd64",
    ]))?;
    std::fs::remove_dir_all(&bundle)?;
    let source = format!("{}/bench/big:1", registry.addr);
    run(Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci:{}", image("big")))
        .arg(format!("docker://{source}")))?;
    let out = run(Command::new(&operator).args([
        "--ipfs-api",
        &ipfs.api_url,
        "convert",
        "--plain-http",
        &source,
    ]))?;
    let cid = out.lines().last().context("no CID")?.trim().to_owned();
    let catalog = work.path().join("images.yaml");
    std::fs::write(&catalog, format!("- source: {source}\n  cid: {cid}\n"))?;
    let agent = Agent::start(&agent_bin, &ipfs.api_url, Some(&catalog), &[])?;

    // the big layer's digest, size and CID, read from the agent itself
    let http = testkit::http_client(Duration::from_secs(600));
    let index: serde_json::Value = http
        .get(format!(
            "http://{}/v2/ipfs/{cid}/manifests/latest",
            agent.addr
        ))
        .send()?
        .json()?;
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .context("manifest")?
        .to_owned();
    let manifest: serde_json::Value = http
        .get(format!(
            "http://{}/v2/ipfs/{cid}/manifests/{manifest_digest}",
            agent.addr
        ))
        .send()?
        .json()?;
    let layer = &manifest["layers"][0];
    let (digest, size) = (
        layer["digest"].as_str().context("digest")?.to_owned(),
        layer["size"].as_u64().context("size")?,
    );
    let layer_cid = layer["urls"][0]
        .as_str()
        .context("url")?
        .trim_start_matches("ipfs://")
        .to_owned();
    println!(
        "daemon {:?}; layer {:.0} MiB",
        ipfs.kind,
        size as f64 / 1048576.0
    );

    let download = |req: reqwest::blocking::RequestBuilder| -> Result<u64> {
        let mut r = req.send()?.error_for_status()?;
        Ok(std::io::copy(&mut r, &mut std::io::sink())?)
    };
    let ipfs_cat = throughput("ipfs cat (Kubo RPC API, baseline)", 3, size, || {
        download(http.post(format!("{}/api/v0/cat?arg={layer_cid}", ipfs.api_url)))
    })?;
    let through_agent = throughput("agent GET blob (verified stream)", 3, size, || {
        download(http.get(format!(
            "http://{}/v2/ipfs/{cid}/blobs/{digest}",
            agent.addr
        )))
    })?;
    let registry_rate = throughput("docker-registry GET blob (from disk)", 3, size, || {
        download(http.get(format!(
            "http://{}/v2/bench/big/blobs/{digest}",
            registry.addr
        )))
    })?;
    println!(
        "ratio agent / ipfs cat:                  {:8.2}x (target >= 0.95)",
        through_agent / ipfs_cat
    );
    println!(
        "ratio agent / docker-registry:           {:8.2}x",
        through_agent / registry_rate
    );

    // cached manifest HEAD latency
    let url = format!("http://{}/v2/ipfs/{cid}/manifests/latest", agent.addr);
    let mut lat = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let r = http.head(&url).send()?;
        ensure!(r.status().is_success());
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "cached manifest HEAD:                    p50 {:.3} ms, p99 {:.3} ms (target p99 < 5 ms)",
        lat[1000], lat[1980]
    );

    // containerd pulls, each into a fresh containerd
    let via_agent = {
        let ctd = Containerd::start()?;
        ctd.write_hosts_toml(&agent.addr, &format!("server = \"http://{0}\"\n[host.\"http://{0}\"]\n  capabilities = [\"pull\", \"resolve\"]\n", agent.addr))?;
        let t = Instant::now();
        ctd.pull_with_hosts_dir(&format!("{}/ipfs/{cid}:latest", agent.addr))?;
        t.elapsed().as_secs_f64()
    };
    let direct = {
        let ctd = Containerd::start()?;
        let t = Instant::now();
        ctd.ctr_ok(&["images", "pull", "--plain-http", &source])?;
        t.elapsed().as_secs_f64()
    };
    println!("containerd pull via agent:               {via_agent:8.2} s");
    println!("containerd pull from registry:           {direct:8.2} s");
    println!(
        "ratio agent / registry:                  {:8.2}x (target <= 1.1)",
        via_agent / direct
    );
    Ok(())
}
