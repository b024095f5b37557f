//! Shared-resource limits, on a real kube-apiserver with the operator binary as its
//! ServiceAccount and a real registry behind testkit's proxy: an image over `--max-image-size`
//! is refused before any of its blobs is requested (`ImageTooLarge`), and a registry that
//! never finishes a blob ends the import at `--import-timeout` (`ImportTimedOut`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::kube_world::{
    ChartWorld, OPERATOR_SA, OperatorProcess, RELEASE_NAMESPACE, USER_NAMESPACE as NS, get_json,
};
use testkit::{Answer, HttpProxy, PushFormat, TestImage, push_layout, wait_until};

const STEP: Duration = Duration::from_secs(60);
const IMPORT_TIMEOUT: Duration = Duration::from_secs(3);

fn image(name: &str, source: &str) -> String {
    json!({"apiVersion": "ipfsimage.dev/v1alpha1", "kind": "IpfsImage",
        "metadata": {"name": name, "namespace": NS}, "spec": {"source": source}})
    .to_string()
}

/// Sum of the config and layer sizes the registry's manifest of `repo:tag` declares.
fn declared_size(registry: &str, repo: &str, tag: &str) -> u64 {
    let manifest = testkit::oci_manifest(registry, repo, tag);
    let layers = manifest["layers"].as_array().unwrap();
    std::iter::once(&manifest["config"])
        .chain(layers)
        .map(|d| d["size"].as_u64().unwrap())
        .sum()
}

/// `name` once Failed, and how long after `since` that was seen.
fn failed(
    world: &ChartWorld,
    op: &OperatorProcess,
    name: &str,
    since: Instant,
) -> (Value, Duration) {
    let mut last = None;
    wait_until(&format!("{name} Failed"), STEP, || {
        last = get_json(&world.api, "ipfsimg", NS, name)?;
        Ok(last
            .as_ref()
            .is_some_and(|o| o["status"]["phase"] == "Failed"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{last:#?}\noperator log:\n{}", op.log_text()));
    let took = since.elapsed();
    let ready = last.unwrap()["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
        .unwrap_or(Value::Null);
    (ready, took)
}

#[test]
fn an_oversized_image_and_a_registry_that_never_finishes_end_with_their_own_reasons() {
    let world = ChartWorld::start().unwrap();
    // busybox plus 1.6 MiB of noise layers; the limit sits between the two images.
    push_layout(
        &world.layout,
        TestImage::LAYERED,
        &world.registry,
        "test/big:1",
        PushFormat::Oci,
    )
    .unwrap();
    let small = declared_size(&world.registry.addr, "test/busybox", "1");
    let big = declared_size(&world.registry.addr, "test/big", "1");
    assert!(big > small + (1 << 20), "{big} vs {small}");
    // The proxy stalls every blob of test/busybox (headers, then silence) and logs requests.
    let proxy = HttpProxy::start(&world.registry.addr, |method, path| {
        (method == "GET" && path.starts_with("/v2/test/busybox/blobs/"))
            .then(|| Answer::stalled(1 << 20))
    })
    .unwrap();
    let kubeconfig = world
        .api
        .service_account(RELEASE_NAMESPACE, OPERATOR_SA)
        .unwrap();
    let limit = small.to_string();
    let op = OperatorProcess::start(
        &PathBuf::from(env!("CARGO_BIN_EXE_ipfs-image-operator")),
        &kubeconfig,
        "op-limits",
        &world,
        &[
            "--plain-http-registry",
            &proxy.addr,
            "--max-image-size",
            &limit,
            "--import-timeout",
            "3s",
        ],
    )
    .unwrap();

    // As a tenant with the built-in edit role: the limits hold whoever asks.
    let tenant = world.editor("tenant").unwrap();
    let started = Instant::now();
    let huge = format!("{}/test/big:1", proxy.addr);
    let slow = format!("{}/test/busybox:1", proxy.addr);
    world
        .create_as(&tenant, "huge", &image("huge", &huge))
        .unwrap();
    world
        .create_as(&tenant, "slow", &image("slow", &slow))
        .unwrap();

    let (ready, _) = failed(&world, &op, "huge", started);
    assert_eq!(ready["reason"], "ImageTooLarge", "{ready}");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains(&limit) && message.contains(&big.to_string()),
        "{message}"
    );
    let big_blobs: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.contains("/v2/test/big/blobs/"))
        .collect();
    assert!(
        big_blobs.is_empty(),
        "refused before downloading: {big_blobs:?}"
    );

    let (ready, took) = failed(&world, &op, "slow", started);
    assert_eq!(
        ready["reason"],
        "ImportTimedOut",
        "{ready}\n{}",
        op.log_text()
    );
    assert!(
        took >= IMPORT_TIMEOUT && took < IMPORT_TIMEOUT + Duration::from_secs(10),
        "ended after {took:?}"
    );
    assert!(
        proxy
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /v2/test/busybox/blobs/") && r.ends_with("(proxy)")),
        "the blob was stalled: {:?}",
        proxy.requests()
    );
}
