//! CRI-O's way of using the mirror, with Debian's podman (it reads registries.conf through the
//! same containers/image library): `ipfs-image-agent configure-registries` writes the drop-in,
//! podman pulls `localhost:<port>/ipfs/<CID>` and runs it, pulls the original reference with
//! the upstream stopped (original digest), and falls back to the upstream for an image IPFS
//! lacks. podman sends no `?ns=`: the agent's metrics must still count its mirror hits and
//! misses under the upstream registry's name.

use std::path::PathBuf;
use std::process::Command;

use ipfs_oci::content_id::to_base32;
use ipfs_oci::convert::{ConvertOptions, convert};
use ipfs_oci::ipfs::{KuboClient, KuboOptions};
use ipfs_oci::source::{SourceOptions, SourceRegistry};
use testkit::{Agent, IpfsDaemon, Podman, PushFormat, TestImage, block_on, push_layout};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipfs-image-agent"))
}

fn agent_cmd(args: &[&str]) -> String {
    let out = Command::new(agent_bin()).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn podman_pulls_by_cid_and_through_the_mirror_and_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut registry, layout) = testkit::registry_with_busybox(dir.path()).unwrap();
    push_layout(
        &layout,
        TestImage::LAYERED,
        &registry,
        "test/other:1",
        PushFormat::Docker,
    )
    .unwrap();
    let ipfs = IpfsDaemon::start().unwrap();
    let client = KuboClient::new(&ipfs.api_url, KuboOptions::default()).unwrap();
    let source = SourceRegistry::new(&SourceOptions {
        plain_http: true,
        ..Default::default()
    });
    let original = format!("{}/test/busybox:1", registry.addr);
    let image = block_on(convert(
        &client,
        &source,
        &original.parse().unwrap(),
        &ConvertOptions::default(),
    ))
    .unwrap();
    let cid = to_base32(&image.root_cid);
    let catalog = dir.path().join("images.yaml");
    std::fs::write(&catalog, format!("- source: {original}\n  cid: {cid}\n")).unwrap();
    let agent = Agent::start(&agent_bin(), &ipfs.api_url, Some(&catalog), &[]).unwrap();
    let port = agent.addr.rsplit_once(':').unwrap().1;
    let local_host = format!("localhost:{port}");

    let podman = Podman::new().unwrap();
    let wrote = agent_cmd(&[
        "configure-registries",
        "--config-dir",
        podman.registries_dir.to_str().unwrap(),
        "--local-host",
        &local_host,
        "--mirror-endpoint",
        &format!("http://{}", agent.addr),
        "--registry",
        &format!("{}=http://{}", registry.addr, registry.addr),
    ]);
    assert!(wrote.contains("90-ipfs-image-agent.conf"), "{wrote}");
    let upstream = registry.addr.clone();
    let mirror = |result: &str| {
        agent.metric_sum(
            "ipfs_image_agent_mirror_requests_total",
            &[("registry", upstream.as_str()), ("result", result)],
        )
    };

    // 1. localhost:<port>/ipfs/<CID>: pulled and run.
    let by_cid = format!("{local_host}/ipfs/{cid}");
    podman.ok(&["pull", &by_cid]).unwrap();
    let out = podman
        .run_container(&by_cid, &["/bin/busybox", "echo", "hello from IPFS"])
        .unwrap();
    assert_eq!(out.trim(), "hello from IPFS");
    let blob_bytes = agent.metric_sum("ipfs_image_agent_bytes_served_total", &[("kind", "blob")]);
    assert!(
        blob_bytes > 500_000.0,
        "the layer came from the agent: {blob_bytes}"
    );

    // 2. An image IPFS lacks: the mirror misses, podman pulls it from the upstream.
    let misses = mirror("miss");
    let other = format!("{}/test/other:1", registry.addr);
    podman.ok(&["pull", &other]).unwrap();
    assert!(
        mirror("miss") > misses,
        "podman asked the mirror first (a miss under {upstream})"
    );

    // 3. The original reference with the upstream STOPPED: from IPFS, with the original digest.
    registry.stop();
    let hits = mirror("hit");
    podman.ok(&["pull", &original]).unwrap();
    let pinned = format!("{}/test/busybox@{}", registry.addr, image.source_digest);
    let digests = podman.repo_digests(&original).unwrap();
    assert!(
        digests.contains(&pinned),
        "podman recorded the original digest: {digests:?}"
    );
    podman.ok(&["pull", &pinned]).unwrap();
    assert!(
        mirror("hit") >= hits + 2.0,
        "tag and digest pulls were mirror hits: {} → {}",
        hits,
        mirror("hit")
    );
    let out = podman
        .run_container(&original, &["/bin/busybox", "echo", "mirrored"])
        .unwrap();
    assert_eq!(out.trim(), "mirrored");

    // 4. cleanup removes the drop-in: with the upstream still stopped, the pull now fails.
    let removed = agent_cmd(&[
        "cleanup",
        "--config-path",
        dir.path().join("no-containerd").to_str().unwrap(),
        "--registries-dir",
        podman.registries_dir.to_str().unwrap(),
    ]);
    assert!(removed.contains("removed"), "{removed}");
    podman.ok(&["rmi", "--force", &original]).unwrap();
    let again = podman.run(&["pull", &original]).unwrap();
    assert!(
        !again.status.success(),
        "without the drop-in podman cannot reach the stopped upstream"
    );
}
