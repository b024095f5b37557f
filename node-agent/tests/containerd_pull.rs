//! The whole path with real components: registry image → IPFS → agent → containerd pulls
//! (with `ctr --hosts-dir` and with CRI `PullImage`) and runs it. Assertions are on what the
//! agent served (its metrics) and on digests, not only on "the pull worked".

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ipfs_oci::content_id::to_base32;
use ipfs_oci::convert::{ConvertOptions, convert};
use ipfs_oci::digest::Digest;
use ipfs_oci::ipfs::{KuboClient, KuboOptions};
use ipfs_oci::source::{SourceOptions, SourceRegistry};
use testkit::{
    Agent, Containerd, IpfsDaemon, PushFormat, Registry, TestImage, block_on, build_busybox_layout,
    push_layout,
};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipfs-image-agent"))
}

struct World {
    ipfs: IpfsDaemon,
    registry: Registry,
    containerd: Containerd,
    dir: tempfile::TempDir,
    /// CID of `test/busybox:1` (OCI) converted into IPFS.
    cid: String,
    /// Digest the registry had for `test/busybox:1`.
    source_digest: String,
}

fn registry_digest(registry: &Registry, repo_tag: &str) -> String {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/{repo_tag}", registry.addr))
        .output()
        .unwrap();
    assert!(out.status.success());
    Digest::of(&out.stdout).to_string()
}

/// Registry with test images, IPFS holding `test/busybox:1`, containerd.
fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let layout = build_busybox_layout(dir.path()).unwrap();
    let registry = Registry::start().unwrap();
    push_layout(
        &layout,
        TestImage::AMD64,
        &registry,
        "test/busybox:1",
        PushFormat::Oci,
    )
    .unwrap();
    push_layout(
        &layout,
        TestImage::LAYERED,
        &registry,
        "test/other:1",
        PushFormat::Docker,
    )
    .unwrap();
    push_layout(
        &layout,
        TestImage::LAYERED,
        &registry,
        "test/other-direct:1",
        PushFormat::Docker,
    )
    .unwrap();
    let ipfs = IpfsDaemon::start().unwrap();
    let client = KuboClient::new(&ipfs.api_url, KuboOptions::default()).unwrap();
    let source = SourceRegistry::new(&SourceOptions {
        plain_http: true,
        ..Default::default()
    });
    let reference = format!("{}/test/busybox:1", registry.addr).parse().unwrap();
    let image = block_on(convert(
        &client,
        &source,
        &reference,
        &ConvertOptions::default(),
    ))
    .unwrap();
    let source_digest = registry_digest(&registry, "test/busybox:1");
    assert_eq!(image.source_digest.to_string(), source_digest);
    let containerd = Containerd::start().unwrap();
    World {
        cid: to_base32(&image.root_cid),
        source_digest,
        ipfs,
        registry,
        containerd,
        dir,
    }
}

fn write_catalog(dir: &Path, entries: &[(String, &str)]) -> PathBuf {
    let path = dir.join("images.yaml");
    let yaml: String = entries
        .iter()
        .map(|(source, cid)| format!("- source: {source}\n  cid: {cid}\n"))
        .collect();
    std::fs::write(&path, yaml).unwrap();
    path
}

/// `ipfs-image-agent configure-containerd` into containerd's hosts dir.
fn configure_containerd(w: &World, agent: &Agent) {
    let out = Command::new(agent_bin())
        .args(["configure-containerd", "--config-path"])
        .arg(&w.containerd.hosts_dir)
        .args([
            "--local-host",
            &agent.addr,
            "--mirror-endpoint",
            &format!("http://{}", agent.addr),
        ])
        .args(["--registry", &format!("{0}=http://{0}", w.registry.addr)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pulls_by_cid_and_by_original_reference_with_the_upstream_stopped() {
    let mut w = world();
    let catalog = write_catalog(
        w.dir.path(),
        &[(format!("{}/test/busybox:1", w.registry.addr), &w.cid)],
    );
    let agent = Agent::start(&agent_bin(), &w.ipfs.api_url, Some(&catalog), &[]).unwrap();
    configure_containerd(&w, &agent);

    // 1. localhost:5050/ipfs/<CID>, pulled by ctr through hosts.toml, runs.
    // ctr needs an explicit tag (kubelet adds `:latest` itself).
    let by_cid = format!("{}/ipfs/{}:latest", agent.addr, w.cid);
    w.containerd.pull_with_hosts_dir(&by_cid).unwrap();
    assert_eq!(
        w.containerd
            .run(&by_cid, &["/bin/busybox", "echo", "hello"])
            .unwrap()
            .trim(),
        "hello"
    );
    let blob_bytes = agent.metric_sum("ipfs_image_agent_bytes_served_total", &[("kind", "blob")]);
    assert!(
        blob_bytes > 500_000.0,
        "the busybox layer came from the agent: {blob_bytes}"
    );

    // 2. The same through CRI PullImage (what kubelet does): uses containerd's config_path.
    //    containerd shares content between namespaces, so the CRI pull only resolves through the
    //    agent; that it resolved there (not elsewhere) is what the HEAD count shows.
    let gets = agent.metric_sum(
        "ipfs_image_agent_requests_total",
        &[("route", "ipfs"), ("method", "GET"), ("status", "200")],
    );
    assert!(
        gets >= 4.0,
        "ctr fetched index, manifest, config and layer from the agent: {gets}"
    );
    let heads = |a: &Agent| {
        a.metric_sum(
            "ipfs_image_agent_requests_total",
            &[("route", "ipfs"), ("method", "HEAD"), ("status", "200")],
        )
    };
    let heads_before = heads(&agent);
    let image_ref = w.containerd.cri_pull(&by_cid).unwrap();
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    assert!(
        heads(&agent) > heads_before,
        "CRI PullImage resolved the image through the agent"
    );

    // 3. Mirror mode with the upstream registry STOPPED: the original reference pulls, with the
    //    original digest (byte-identical manifests), and runs.
    w.registry.stop();
    let original = format!("{}/test/busybox:1", w.registry.addr);
    w.containerd.pull_with_hosts_dir(&original).unwrap();
    assert_eq!(
        w.containerd.image_digest(&original).unwrap(),
        w.source_digest
    );
    assert_eq!(
        w.containerd
            .run(&original, &["/bin/busybox", "echo", "mirrored"])
            .unwrap()
            .trim(),
        "mirrored"
    );
    let by_digest = format!("{}/test/busybox@{}", w.registry.addr, w.source_digest);
    w.containerd.pull_with_hosts_dir(&by_digest).unwrap();
    assert!(
        agent.metric_sum(
            "ipfs_image_agent_mirror_requests_total",
            &[("result", "hit")]
        ) >= 2.0
    );
    let cri_ref = w.containerd.cri_pull(&original).unwrap();
    assert!(cri_ref.starts_with("sha256:"));
}

#[test]
fn falls_back_to_the_upstream_fast_when_ipfs_lacks_the_image_or_is_down() {
    let mut w = world();
    let catalog = write_catalog(
        w.dir.path(),
        &[(format!("{}/test/busybox:1", w.registry.addr), &w.cid)],
    );
    let agent = Agent::start(
        &agent_bin(),
        &w.ipfs.api_url,
        Some(&catalog),
        &["--resolve-timeout", "2s", "--ipfs-timeout", "2s"],
    )
    .unwrap();
    configure_containerd(&w, &agent);

    // An image IPFS does not hold: the mirror says 404 at once and containerd uses the upstream.
    // Baseline: the same image under another tag, pulled straight from the registry first (so the
    // mirrored pull below even finds its blobs cached: the comparison can only favour the baseline).
    let direct = format!("{}/test/other-direct:1", w.registry.addr);
    let started = Instant::now();
    w.containerd
        .ctr_ok(&["images", "pull", "--plain-http", &direct])
        .unwrap();
    let direct_time = started.elapsed();
    let other = format!("{}/test/other:1", w.registry.addr);
    let started = Instant::now();
    w.containerd.pull_with_hosts_dir(&other).unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed < direct_time + Duration::from_secs(1),
        "falling back cost more than 1 s: {elapsed:?} through the mirror vs {direct_time:?} direct"
    );
    // The miss itself is answered in milliseconds.
    let miss_started = Instant::now();
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-I"])
        .arg(format!(
            "http://{}/v2/test/nothing/manifests/1?ns={}",
            agent.addr, w.registry.addr
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    assert!(
        miss_started.elapsed() < Duration::from_millis(500),
        "a miss took {:?}",
        miss_started.elapsed()
    );
    assert_eq!(
        w.containerd.image_digest(&other).unwrap(),
        registry_digest(&w.registry, "test/other:1")
    );
    assert!(
        agent.metric_sum(
            "ipfs_image_agent_mirror_requests_total",
            &[("result", "miss")]
        ) >= 1.0
    );
    assert_eq!(
        agent.metric_sum(
            "ipfs_image_agent_mirror_requests_total",
            &[("result", "hit")]
        ),
        0.0
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "fallback took {elapsed:?}"
    );

    // IPFS killed before the pull: the image is in the catalog, but the mirror cannot serve it;
    // it must answer (not hang) so containerd falls back and the pull succeeds.
    w.ipfs.kill();
    let original = format!("{}/test/busybox:1", w.registry.addr);
    let started = Instant::now();
    w.containerd.pull_with_hosts_dir(&original).unwrap();
    assert_eq!(
        w.containerd.image_digest(&original).unwrap(),
        w.source_digest
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "fallback with IPFS down took {:?}",
        started.elapsed()
    );
    assert!(
        agent.metric_sum("ipfs_image_agent_ipfs_errors_total", &[]) >= 1.0,
        "{}",
        agent.metrics()
    );
}
