//! Kubo runs with `--enable-gc` (as the chart runs it), so its garbage collector may run in the
//! middle of an import. An import must survive that: every blob it has added stays in Kubo until
//! the image's layout is pinned, nothing is fetched twice, and the result pulls and verifies.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipfs_oci::content_id::to_base32;
use ipfs_oci::convert::{ConvertOptions, convert};
use ipfs_oci::ipfs::{IpfsStore, KuboClient, KuboOptions};
use ipfs_oci::source::{SourceOptions, SourceRegistry};
use serde_json::Value;
use testkit::{
    Agent, Containerd, IpfsDaemon, PushFormat, Registry, TestImage, add_noise_layers, block_on,
    build_busybox_layout, noise, push_layout,
};

const MIB: usize = 1024 * 1024;

fn api(daemon: &IpfsDaemon, endpoint: &str) -> String {
    let out = testkit::http_client(Duration::from_secs(120))
        .post(format!("{}/api/v0/{endpoint}", daemon.api_url))
        .send()
        .unwrap_or_else(|e| panic!("{endpoint}: {e}"));
    assert!(out.status().is_success(), "{endpoint}: {}", out.status());
    out.text().unwrap()
}

fn counter(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

#[test]
fn an_import_survives_garbage_collection_running_all_along() {
    // busybox plus four layers of noise: 4 × 56 MiB, over 200 MiB in all.
    let dir = tempfile::tempdir().unwrap();
    let layout = build_busybox_layout(dir.path()).unwrap();
    add_noise_layers(&layout, TestImage::AMD64, "big", &[56 * MIB; 4], 0x6c).unwrap();
    let registry = Registry::start().unwrap();
    push_layout(&layout, "big", &registry, "test/gc:1", PushFormat::Oci).unwrap();
    let ipfs = IpfsDaemon::start().unwrap();
    let client = KuboClient::new(&ipfs.api_url, KuboOptions::default()).unwrap();

    // GC in a loop against the same daemon, each pass with fresh garbage to collect, so every
    // pass provably collects (and would collect an unprotected blob of the import too).
    let stop = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(AtomicU64::new(0));
    let gc = {
        let (stop, passes, api_url) = (stop.clone(), passes.clone(), ipfs.api_url.clone());
        std::thread::spawn(move || {
            let http = testkit::http_client(Duration::from_secs(120));
            let garbage_client = KuboClient::new(&api_url, KuboOptions::default()).unwrap();
            let mut seed = 1;
            while !stop.load(Ordering::SeqCst) {
                seed += 1;
                let garbage = block_on(garbage_client.add_bytes(noise(200_000, seed).into()))
                    .expect("add garbage");
                let removed = http
                    .post(format!("{api_url}/api/v0/repo/gc"))
                    .send()
                    .and_then(|r| r.text())
                    .expect("repo/gc");
                assert!(
                    removed.contains(&to_base32(&garbage.cid)),
                    "GC pass {seed} did not collect fresh garbage: {removed}"
                );
                passes.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    let source = SourceRegistry::new(&SourceOptions {
        plain_http: true,
        ..Default::default()
    });
    let reference = format!("{}/test/gc:1", registry.addr).parse().unwrap();
    let started = Instant::now();
    let image = block_on(convert(
        &client,
        &source,
        &reference,
        &ConvertOptions::default(),
    ))
    .expect("the import completes although GC runs all along");
    let took = started.elapsed();
    let during = passes.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    gc.join().expect("the GC loop did not fail");
    eprintln!(
        "gc-safety: {} MiB in {} blobs imported in {took:?} with {during} GC passes",
        image.total_size / MIB as u64,
        image.blob_count
    );
    assert!(image.total_size > 200 * MIB as u64, "{}", image.total_size);
    assert!(during >= 3, "GC ran only {during} times during the import");
    assert!(block_on(client.is_pinned(&image.layout_cid)).unwrap());

    // One more GC after the import, then containerd pulls it through the agent and checks
    // every digest: the whole image is still there.
    api(&ipfs, "repo/gc");
    let agent = Agent::start(&agent_bin(), &ipfs.api_url, None, &[]).unwrap();
    let containerd = Containerd::start().unwrap();
    containerd
        .write_hosts_toml(
            &agent.addr,
            &format!(
                "server = \"http://{0}\"\n[host.\"http://{0}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                agent.addr
            ),
        )
        .unwrap();
    let by_cid = format!("{}/ipfs/{}:latest", agent.addr, to_base32(&image.root_cid));
    containerd
        .pull_with_hosts_dir(&by_cid)
        .unwrap_or_else(|e| panic!("containerd pull through the agent: {e:#}\n{}", agent.log()));
    assert_eq!(
        agent.metric_sum("ipfs_image_agent_verification_failures_total", &[]),
        0.0
    );
    // Counted as each response ends, which may be just after the client has its last byte.
    testkit::wait_until(
        "the agent counted the blobs",
        Duration::from_secs(10),
        || {
            Ok(
                agent.metric_sum("ipfs_image_agent_bytes_served_total", &[("kind", "blob")])
                    > 200.0 * MIB as f64,
            )
        },
    )
    .unwrap();

    // Nothing came from the network: Kubo's own counters.
    let bitswap: Value = serde_json::from_str(&api(&ipfs, "bitswap/stat")).unwrap();
    assert_eq!(counter(&bitswap["BlocksReceived"]), 0, "{bitswap}");
    assert_eq!(counter(&bitswap["DataReceived"]), 0, "{bitswap}");
    // The staging area is gone once the layout is pinned.
    let staged: Value = serde_json::from_str(&api(
        &ipfs,
        &format!("files/ls?arg={}", ipfs_oci::layout::STAGING_ROOT),
    ))
    .unwrap();
    assert!(
        staged["Entries"].as_array().is_none_or(Vec::is_empty),
        "no import left anything staged: {staged}"
    );
}

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipfs-image-agent"))
}
