//! Benchmark of the agent's registry (not a test; `bash bench/agent.sh`). In one run, against the
//! same IPFS daemon and the same bytes:
//! - blob throughput through the agent vs `cat` straight from the IPFS RPC API (the target's
//!   baseline), vs a GET from Kubo's loopback gateway (where the agent reads), vs the Debian
//!   `docker-registry` serving the same blob from disk;
//! - latency of a cached manifest HEAD (p50/p99);
//! - a containerd pull of the image through the agent vs straight from the registry, and vs the
//!   floor an agent that cost nothing would reach (the registry pull with the layer arriving at
//!   the daemon's gateway rate).
//!
//! Each download line splits the time into the wait for the first byte and the body rate, and
//! gives the CPU seconds per GiB of the IPFS daemon, the agent and the client; SHA-256 on one
//! core is measured first, as the ceiling of any verified stream. `BENCH_HOLD=1` sets everything
//! up, prints the URLs and PIDs, and waits for stdin to close (for profiling by hand).

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

/// CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// One download: its bytes, when the first body byte arrived, when the last did.
struct Download {
    bytes: u64,
    first_byte: Duration,
    total: Duration,
}

fn download(req: reqwest::blocking::RequestBuilder) -> Result<Download> {
    use std::io::Read;
    let t = Instant::now();
    let mut r = req.send()?.error_for_status()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    let mut first_byte = None;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        first_byte.get_or_insert_with(|| t.elapsed());
        bytes += n as u64;
    }
    let total = t.elapsed();
    Ok(Download {
        bytes,
        first_byte: first_byte.unwrap_or(total),
        total,
    })
}

/// Medians over the runs of one way to get the blob.
#[derive(Clone, Copy)]
struct Rate {
    /// MiB/s from request to last byte.
    mib_s: f64,
    first_byte_ms: f64,
    /// MiB/s from first to last byte.
    body_mib_s: f64,
}

/// Medians of `runs` downloads; checks the byte count. Also prints the CPU seconds per GiB each
/// process in `watch` spent, so a gap can be told apart as CPU or waiting.
fn throughput(
    name: &str,
    runs: usize,
    expected: u64,
    watch: &[(&str, u32)],
    mut fetch: impl FnMut() -> Result<Download>,
) -> Result<Rate> {
    let mib = expected as f64 / 1048576.0;
    let (mut rates, mut firsts, mut bodies) = (Vec::new(), Vec::new(), Vec::new());
    let before: Vec<f64> = watch.iter().map(|(_, pid)| cpu_seconds(*pid)).collect();
    for _ in 0..runs {
        let d = fetch()?;
        ensure!(
            d.bytes == expected,
            "{name}: got {} bytes, expected {expected}",
            d.bytes
        );
        rates.push(mib / d.total.as_secs_f64());
        firsts.push(d.first_byte.as_secs_f64() * 1000.0);
        bodies.push(mib / (d.total - d.first_byte).as_secs_f64().max(1e-6));
    }
    let gib = (expected * runs as u64) as f64 / 1073741824.0;
    let cpu: Vec<String> = watch
        .iter()
        .zip(before)
        .map(|((who, pid), b)| format!("{who} {:.2}", (cpu_seconds(*pid) - b) / gib))
        .collect();
    let rate = Rate {
        mib_s: median(rates),
        first_byte_ms: median(firsts),
        body_mib_s: median(bodies),
    };
    println!(
        "{name:<38} {:7.1} MiB/s; first byte {:6.1} ms, then {:7.1} MiB/s; CPU s/GiB: {}",
        rate.mib_s,
        rate.first_byte_ms,
        rate.body_mib_s,
        cpu.join(", ")
    );
    Ok(rate)
}

/// MiB/s of SHA-256 on one core here: the ceiling of any stream that is verified as it flows.
fn sha256_rate() -> f64 {
    use sha2::Digest as _;
    let data = noise(256 * 1048576, 7);
    let t = Instant::now();
    std::hint::black_box(sha2::Sha256::digest(&data));
    256.0 / t.elapsed().as_secs_f64()
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
    // The agent reads blobs through Kubo's loopback gateway once it has found it.
    testkit::wait_until(
        "the agent to find Kubo's gateway",
        Duration::from_secs(10),
        || Ok(agent.log().contains("reading blobs through Kubo's gateway")),
    )?;

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
        "daemon {}; layer {:.0} MiB",
        testkit::kubo_version(),
        size as f64 / 1048576.0
    );

    let me = std::process::id();
    let urls = Urls {
        cat: format!("{}/api/v0/cat?arg={layer_cid}", ipfs.api_url),
        gateway: format!("{}/ipfs/{layer_cid}", ipfs.gateway_url),
        agent_blob: format!("http://{}/v2/ipfs/{cid}/blobs/{digest}", agent.addr),
        registry_blob: format!("http://{}/v2/bench/big/blobs/{digest}", registry.addr),
        agent_image: format!("{}/ipfs/{cid}:latest", agent.addr),
        agent_addr: agent.addr.clone(),
        source,
    };
    let watch = [("ipfs", ipfs.pid()), ("agent", agent.pid()), ("client", me)];

    if std::env::var_os("BENCH_HOLD").is_some() {
        // For profiling by hand: everything stays up until stdin closes.
        println!(
            "ipfs pid {} cat {}\nagent pid {} blob {}\nregistry pid {} blob {}",
            ipfs.pid(),
            urls.cat,
            agent.pid(),
            urls.agent_blob,
            registry.pid(),
            urls.registry_blob
        );
        std::io::copy(&mut std::io::stdin(), &mut std::io::sink())?;
        return Ok(());
    }

    let sha = sha256_rate();
    println!("SHA-256 on one core (verify ceiling)    {sha:7.1} MiB/s\n");
    measure(&http, &urls, size, sha, &watch)?;

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
    Ok(())
}

struct Urls {
    cat: String,
    gateway: String,
    agent_blob: String,
    registry_blob: String,
    agent_image: String,
    agent_addr: String,
    source: String,
}

/// Blob throughput three ways and a containerd pull two ways.
fn measure(
    http: &reqwest::blocking::Client,
    urls: &Urls,
    size: u64,
    sha: f64,
    watch: &[(&str, u32)],
) -> Result<()> {
    let ipfs_cat = throughput("ipfs cat (Kubo RPC API, baseline)", 3, size, watch, || {
        download(http.post(&urls.cat))
    })?;
    let gateway = throughput(
        "Kubo gateway GET (what the agent reads)",
        3,
        size,
        watch,
        || download(http.get(&urls.gateway)),
    )?;
    let through_agent = throughput("agent GET blob (verified stream)", 3, size, watch, || {
        download(http.get(&urls.agent_blob))
    })?;
    let registry_rate = throughput(
        "docker-registry GET blob (from disk)",
        3,
        size,
        watch,
        || download(http.get(&urls.registry_blob)),
    )?;
    println!(
        "ratio agent / ipfs cat:                  {:8.2}x (target >= 0.95)",
        through_agent.mib_s / ipfs_cat.mib_s
    );
    println!(
        "ratio agent / Kubo gateway:              {:8.2}x (the agent's own cost)",
        through_agent.mib_s / gateway.mib_s
    );
    println!(
        "ratio agent / docker-registry:           {:8.2}x",
        through_agent.mib_s / registry_rate.mib_s
    );
    println!(
        "first byte, agent - ipfs cat:            {:+8.1} ms",
        through_agent.first_byte_ms - ipfs_cat.first_byte_ms
    );
    println!(
        "body rate, agent / SHA-256 ceiling:      {:8.2}x",
        through_agent.body_mib_s / sha
    );

    // containerd pulls, each into a fresh containerd
    let via_agent = {
        let ctd = Containerd::start()?;
        ctd.write_hosts_toml(&urls.agent_addr, &format!("server = \"http://{0}\"\n[host.\"http://{0}\"]\n  capabilities = [\"pull\", \"resolve\"]\n", urls.agent_addr))?;
        let t = Instant::now();
        ctd.pull_with_hosts_dir(&urls.agent_image)?;
        t.elapsed().as_secs_f64()
    };
    let direct = {
        let ctd = Containerd::start()?;
        let t = Instant::now();
        ctd.ctr_ok(&["images", "pull", "--plain-http", &urls.source])?;
        t.elapsed().as_secs_f64()
    };
    // What a pull through an agent that cost nothing would take: the direct pull, with the big
    // layer arriving at the rate the agent reads it from the daemon (its gateway) instead of the
    // registry's.
    let mib = size as f64 / 1048576.0;
    let floor = direct + mib / gateway.mib_s - mib / registry_rate.mib_s;
    println!("containerd pull via agent:               {via_agent:8.2} s");
    println!("containerd pull from registry:           {direct:8.2} s");
    println!(
        "  if the agent cost nothing:             {floor:8.2} s (registry pull + gateway GET time - registry GET time)"
    );
    println!(
        "ratio agent / registry:                  {:8.2}x (target <= 1.1)",
        via_agent / direct
    );
    println!(
        "ratio agent / floor:                     {:8.2}x",
        via_agent / floor
    );
    Ok(())
}
