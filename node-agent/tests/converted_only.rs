//! `localhost:5050/ipfs/<CID>` needs the nerdctl-format image and nothing else: a node whose
//! peers hold every block of the converted image but none of the original (pre-conversion)
//! manifests (an image copied or pinned by another tool) serves it at once and containerd pulls
//! it. Only mirror mode reads the originals; without them it misses, so containerd falls back.
//! (Before, resolve read the originals for every request and answered 503 after the resolve
//! timeout.)

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipfs_oci::content_id::to_base32;
use ipfs_oci::convert::{ConvertOptions, convert};
use ipfs_oci::ipfs::{ByteRange, IpfsStore, KuboClient, KuboOptions};
use ipfs_oci::resolve::resolve_converted;
use ipfs_oci::source::{SourceOptions, SourceRegistry};
use testkit::{Agent, Containerd, IpfsDaemon, block_on};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipfs-image-agent"))
}

#[test]
fn ipfs_cid_images_need_no_original_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _layout) = testkit::registry_with_busybox(dir.path()).unwrap();
    let source_ref = format!("{}/test/busybox:1", registry.addr);

    // A converts the image (and so holds the originals too).
    let mut a = IpfsDaemon::start().unwrap();
    let a_client = KuboClient::new(&a.api_url, KuboOptions::default()).unwrap();
    let source = SourceRegistry::new(&SourceOptions {
        plain_http: true,
        ..Default::default()
    });
    let image = block_on(convert(
        &a_client,
        &source,
        &source_ref.parse().unwrap(),
        &ConvertOptions::default(),
    ))
    .unwrap();
    let cid = to_base32(&image.root_cid);

    // C reads every block of the converted image from A, and nothing else.
    let c = IpfsDaemon::start().unwrap();
    let c_client = KuboClient::new(&c.api_url, KuboOptions::default()).unwrap();
    block_on(async {
        c_client.swarm_connect(&a.swarm_multiaddr()).await.unwrap();
        let dag = resolve_converted(&c_client, &image.root_cid).await.unwrap();
        assert!(
            !dag.has_originals(),
            "the image names its original manifests"
        );
        for (_, entry) in dag.entries().filter(|(_, e)| e.bytes.is_none()) {
            let mut s = c_client
                .cat(&entry.cid, ByteRange::default())
                .await
                .unwrap();
            while let Some(chunk) = s.next().await {
                chunk.unwrap();
            }
        }
    });
    a.stop();

    let catalog = dir.path().join("images.yaml");
    std::fs::write(&catalog, format!("- source: {source_ref}\n  cid: {cid}\n")).unwrap();
    let agent = Agent::start(
        &agent_bin(),
        &c.api_url,
        Some(&catalog),
        &["--resolve-timeout", "3s"],
    )
    .unwrap();

    // ipfs/<CID>: answered at once (the originals are not asked for).
    let http = testkit::http_client(Duration::from_secs(10));
    let started = Instant::now();
    let r = http
        .get(format!(
            "http://{}/v2/ipfs/{cid}/manifests/latest",
            agent.addr
        ))
        .header("Accept", "application/vnd.oci.image.index.v1+json")
        .send()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text());
    assert!(took < Duration::from_secs(2), "the manifest took {took:?}");

    // containerd pulls it from the agent and runs it.
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
    let by_cid = format!("{}/ipfs/{cid}:latest", agent.addr);
    containerd.pull_with_hosts_dir(&by_cid).unwrap();
    assert_eq!(
        containerd
            .run(&by_cid, &["/bin/busybox", "echo", "converted only"])
            .unwrap()
            .trim(),
        "converted only"
    );

    // Mirror mode needs the originals, which nobody reachable has: a miss (containerd falls
    // back), within the resolve timeout.
    let started = Instant::now();
    let r = http
        .head(format!(
            "http://{}/v2/test/busybox/manifests/1?ns={}",
            agent.addr, registry.addr
        ))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(started.elapsed() < Duration::from_secs(5));
}
