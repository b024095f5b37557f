//! What a user believes is held stays held, on a real kube-apiserver and a real Kubo (issue 18):
//!
//! - deleting one object while another still imports the same image keeps that image pinned;
//! - an operator killed with SIGKILL at each point of an import resumes after a restart, with
//!   no duplicate pin, no blob fetched twice from the registry and no object stuck in a phase
//!   (the points are the `failpoints` feature's, see ipfs-oci's `fault.rs`);
//! - Kubo killed in the middle of an import, and Kubo out of disk, each end as their own reason
//!   and never as Ready; the import completes once Kubo is back.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ipfs_image_api::IpfsImage;
use ipfs_image_api::names::layout_pin_name;
use ipfs_image_operator::controller::{Context, Metrics, reconcile};
use ipfs_oci::content_id::parse_cid;
use ipfs_oci::ipfs::{IpfsStore, KuboClient, KuboOptions};
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};
use support::Counting;
use testkit::kube_world::{
    ChartWorld, OPERATOR_SA, OperatorProcess, RELEASE_NAMESPACE, USER_NAMESPACE as NS, get_json,
};
use testkit::{
    Answer, HttpProxy, PushFormat, TestImage, Tmpfs, add_noise_layers, block_on, oci_manifest,
    push_layout, wait_until,
};

const STEP: Duration = Duration::from_secs(120);
const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

fn operator_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipfs-image-operator"))
}

fn image(name: &str, source: &str) -> String {
    json!({"apiVersion": "ipfsimage.dev/v1alpha1", "kind": "IpfsImage",
        "metadata": {"name": name, "namespace": NS}, "spec": {"source": source}})
    .to_string()
}

fn get(world: &ChartWorld, name: &str) -> Option<Value> {
    get_json(&world.api, "ipfsimg", NS, name).unwrap()
}

/// The operator's ServiceAccount kubeconfig: exactly the chart's rights.
fn operator_kubeconfig(world: &ChartWorld) -> PathBuf {
    world
        .api
        .service_account(RELEASE_NAMESPACE, OPERATOR_SA)
        .unwrap()
}

/// The condition `type_` of a stored object (`null` when absent).
fn condition(obj: &Value, type_: &str) -> Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .cloned()
        .unwrap_or(Value::Null)
}

fn ready_reason(obj: &Value) -> (String, String) {
    let ready = condition(obj, "Ready");
    (
        ready["status"].as_str().unwrap_or_default().to_owned(),
        ready["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Wait until `name` is Ready for its current generation; the object then.
fn wait_ready(world: &ChartWorld, op: &OperatorProcess, name: &str) -> Value {
    let mut last = None;
    wait_until(&format!("{name} Ready"), STEP, || {
        last = get(world, name);
        Ok(last.as_ref().is_some_and(|o| {
            o["status"]["phase"] == "Ready"
                && o["status"]["observedGeneration"] == o["metadata"]["generation"]
        }))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{last:#?}\noperator log:\n{}", op.log_text()));
    last.unwrap()
}

/// Wait until `name`'s Ready condition is False with `reason`; the object then.
fn wait_failed(world: &ChartWorld, op: &OperatorProcess, name: &str, reason: &str) -> Value {
    let mut last = None;
    wait_until(&format!("{name} failed with {reason}"), STEP, || {
        last = get(world, name);
        Ok(last
            .as_ref()
            .is_some_and(|o| ready_reason(o) == ("False".into(), reason.into())))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{last:#?}\noperator log:\n{}", op.log_text()));
    last.unwrap()
}

/// Push `busybox` plus layers of noise as `test/busybox:<tag>`.
fn push_noise_image(world: &ChartWorld, tag: &str, sizes: &[usize], seed: u64) {
    add_noise_layers(&world.layout, TestImage::AMD64, tag, sizes, seed).unwrap();
    push_layout(
        &world.layout,
        tag,
        &world.registry,
        &format!("test/busybox:{tag}"),
        PushFormat::Oci,
    )
    .unwrap();
}

/// The blob digests among proxy log lines (`GET /v2/<repo>/blobs/<digest> -> 200`).
fn blob_gets(lines: &[String]) -> BTreeSet<String> {
    lines
        .iter()
        .filter(|l| l.starts_with("GET ") && l.contains("/blobs/sha256:"))
        .filter_map(|l| l.split("/blobs/").nth(1)?.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The digests of the blobs the operator logged as stored in Kubo (or found held there).
fn stored_blobs(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter(|l| l.contains("stored blob") || l.contains("blob already held"))
        .filter_map(|l| {
            let at = l.find("sha256:")?;
            let digest = l.get(at..at + 71)?;
            digest[7..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
                .then(|| digest.to_owned())
        })
        .collect()
}

/// How often the operator logged reaching the fault point `point`.
fn times_reached(log: &str, point: &str) -> usize {
    let quoted = format!("\"{point}\"");
    log.lines()
        .filter(|l| l.contains("fault point reached") && l.contains(&quoted))
        .count()
}

async fn client_for(kubeconfig: &std::path::Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Item 2: `release` counted only objects whose status already named the layout, so deleting
/// one object unpinned the image another had pinned but not yet recorded.
#[test]
fn deleting_one_object_keeps_the_image_another_is_still_importing() {
    let world = ChartWorld::start().unwrap();
    ipfs_oci::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let kubeconfig = operator_kubeconfig(&world);
    let client = runtime.block_on(client_for(&kubeconfig));
    let kubo = KuboClient::new(&world.ipfs.api_url, KuboOptions::default()).unwrap();
    let ipfs = Counting::new(kubo.clone());
    let config = support::config_for(&world.registry.addr);
    let ctx = Arc::new(Context::new(client, ipfs.clone(), config, Metrics::new()));
    world
        .apply("first", &image("first", &world.busybox()))
        .unwrap();
    world
        .apply("second", &image("second", &world.busybox()))
        .unwrap();
    // The test reads and deletes as the admin: the operator's ServiceAccount may only list and
    // watch (its objects come from the watch); its reconciles use its own client.
    let admin = runtime.block_on(client_for(&world.api.admin));
    let api: Api<IpfsImage> = Api::namespaced(admin, NS);
    let reconcile_now = |name: &'static str| {
        let (api, ctx) = (api.clone(), ctx.clone());
        async move {
            let obj = api.get(name).await.unwrap();
            reconcile(Arc::new(obj), ctx).await
        }
    };

    runtime.block_on(async {
        // The first reconcile of each adds the finalizer; the second of `first` imports it.
        for name in ["first", "first", "second"] {
            reconcile_now(name).await.unwrap();
        }
        let first = api.get("first").await.unwrap();
        let layout = parse_cid(first.status.unwrap().layout_cid.as_deref().unwrap()).unwrap();
        assert!(kubo.is_pinned(&layout).await.unwrap());

        // `second` imports the same image: same layout. Hold it after its pin, before its status.
        let second = api.get("second").await.unwrap();
        let pin_name = layout_pin_name(second.metadata.uid.as_deref().unwrap());
        let (held, go_on) = ipfs.pause_after_pin(&pin_name);
        let importing = tokio::spawn(reconcile_now("second"));
        tokio::time::timeout(STEP, held)
            .await
            .expect("second's import reaches its pin")
            .unwrap();

        // Meanwhile `first` is deleted: its release lists no holder of the layout yet.
        api.delete("first", &DeleteParams::default()).await.unwrap();
        reconcile_now("first").await.unwrap();
        assert!(
            api.get_opt("first").await.unwrap().is_none(),
            "first is gone"
        );

        go_on.send(()).unwrap();
        importing.await.unwrap().unwrap();
        let second = api.get("second").await.unwrap();
        let status = second.status.unwrap();
        assert_eq!(status.phase, Some(ipfs_image_api::Phase::Ready));
        assert_eq!(
            status.layout_cid.as_deref().map(|c| parse_cid(c).unwrap()),
            Some(layout)
        );
        assert!(
            kubo.is_pinned(&layout).await.unwrap(),
            "second is Ready, so its layout must still be pinned after first's delete"
        );
    });
}

/// Item 5: SIGKILL at each fault point of an import, then a restart.
#[test]
fn an_import_killed_at_any_point_resumes_without_refetching_or_duplicate_pins() {
    let world = ChartWorld::start().unwrap();
    let kubo = KuboClient::new(&world.ipfs.api_url, KuboOptions::default()).unwrap();
    push_noise_image(&world, "crash", &[256 * KIB, 256 * KIB, 256 * KIB], 0xc7a5);
    // Every registry request goes through a proxy that logs it (and forwards it unchanged).
    let proxy = HttpProxy::start(&world.registry.addr, |_, _| None).unwrap();
    let source = format!("{}/test/busybox:crash", proxy.addr);
    let kubeconfig = operator_kubeconfig(&world);
    let args = [
        "--plain-http-registry",
        proxy.addr.as_str(),
        "--leader-elect=false",
    ];
    let cases = [
        // after two of the image's blobs (of 5) are stored
        ("convert::blob_stored", "1*off->pause", 2),
        // after the layout directory is built, before its pin
        ("layout::built", "pause", 1),
        // after the pin, before the staging area is removed
        ("layout::pinned", "pause", 1),
        // after the pin and the staging area are gone, before the status names the layout
        ("import::before_status", "pause", 1),
    ];
    for (i, (point, action, hits)) in cases.into_iter().enumerate() {
        let name = format!("crash-{i}");
        let failpoints = format!("{point}={action}");
        let mut op = OperatorProcess::start_with_env(
            &operator_bin(),
            &kubeconfig,
            &format!("op-{name}"),
            &world,
            &args,
            &[("FAILPOINTS", &failpoints)],
        )
        .unwrap();
        world.apply(&name, &image(&name, &source)).unwrap();
        wait_until(&format!("{name} at {point}"), STEP, || {
            Ok(times_reached(&op.log_text(), point) >= hits)
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e:#} (is the operator built with --features failpoints?)\n{}",
                op.log_text()
            )
        });
        op.daemon.kill();
        let killed_at = proxy.requests().len();
        // What Kubo held at the kill: the blobs the operator logged as stored. (Blobs are
        // fetched several at a time, so others may have been cut off mid-stream: those are
        // fetched again, rightly.)
        let before = stored_blobs(&op.log_text());
        assert!(
            !before.is_empty(),
            "{name}: blobs were stored before {point}"
        );

        let op = OperatorProcess::start(
            &operator_bin(),
            &kubeconfig,
            &format!("op-{name}-restarted"),
            &world,
            &args,
        )
        .unwrap();
        let ready = wait_ready(&world, &op, &name);
        let after = blob_gets(&proxy.requests()[killed_at..]);
        let refetched: Vec<_> = before.intersection(&after).collect();
        assert!(
            refetched.is_empty(),
            "{name}, killed at {point}: blobs Kubo already held were fetched again: {refetched:?}"
        );

        let uid = ready["metadata"]["uid"].as_str().unwrap();
        let layout = parse_cid(ready["status"]["layoutCid"].as_str().unwrap()).unwrap();
        let pins: Vec<_> = block_on(kubo.recursive_pins())
            .unwrap()
            .into_iter()
            .filter(|(_, n)| *n == layout_pin_name(uid))
            .collect();
        assert_eq!(
            pins.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            vec![layout],
            "{name}: exactly one pin, the recorded layout's"
        );
        let staging = format!("{}/{uid}", ipfs_oci::layout::STAGING_ROOT);
        assert_eq!(
            block_on(kubo.files_stat(&staging)).unwrap(),
            None,
            "{name}: the staging area is gone"
        );
        let imported = condition(&ready, "Imported");
        assert_eq!(imported["status"], "True", "{name}: {imported}");
    }
}

/// Item 6: Kubo killed while an import streams a blob into it.
#[test]
fn kubo_killed_mid_import_is_ipfs_unavailable_and_the_import_completes_once_it_is_back() {
    let mut world = ChartWorld::start().unwrap();
    push_noise_image(&world, "restart", &[MIB], 0x4b75);
    let manifest = oci_manifest(&world.registry.addr, "test/busybox", "restart");
    let last_layer = manifest["layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let digest = last_layer["digest"].as_str().unwrap().to_owned();
    let size = last_layer["size"].as_u64().unwrap();
    // The last layer's download stalls (headers, then silence) until `stalling` is cleared.
    let stalling = Arc::new(AtomicBool::new(true));
    let proxy = {
        let (stalling, digest) = (stalling.clone(), digest.clone());
        HttpProxy::start(&world.registry.addr, move |method, path| {
            (method == "GET" && path.ends_with(&digest) && stalling.load(Ordering::SeqCst))
                .then(|| Answer::stalled(size))
        })
        .unwrap()
    };
    let kubeconfig = operator_kubeconfig(&world);
    let args = [
        "--plain-http-registry",
        proxy.addr.as_str(),
        "--leader-elect=false",
    ];
    let op =
        OperatorProcess::start(&operator_bin(), &kubeconfig, "op-restart", &world, &args).unwrap();
    let source = format!("{}/test/busybox:restart", proxy.addr);
    world.apply("restart", &image("restart", &source)).unwrap();
    wait_until("the last layer's download stalls", STEP, || {
        Ok(proxy
            .requests()
            .iter()
            .any(|l| l.contains(&digest) && l.ends_with("(proxy)")))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", op.log_text()));

    world.ipfs.kill();
    let failed = wait_failed(&world, &op, "restart", "IpfsUnavailable");
    assert_eq!(
        failed["status"]["phase"], "Importing",
        "an outage is transient"
    );

    stalling.store(false, Ordering::SeqCst);
    world.restart_ipfs(None).unwrap();
    let ready = wait_ready(&world, &op, "restart");
    let kubo = KuboClient::new(&world.ipfs.api_url, KuboOptions::default()).unwrap();
    let layout = parse_cid(ready["status"]["layoutCid"].as_str().unwrap()).unwrap();
    assert!(
        block_on(kubo.is_pinned(&layout)).unwrap(),
        "Ready means pinned, all of it"
    );
}

/// Item 6: Kubo's repository fills up (a real ENOSPC, from a tmpfs too small for the image).
#[test]
fn kubo_out_of_disk_is_ipfs_storage_full_and_never_ready() {
    let mut world = ChartWorld::start().unwrap();
    push_noise_image(&world, "huge", &[24 * MIB], 0xf011);
    let disk = Tmpfs::mount(12 * MIB as u64).unwrap();
    world.restart_ipfs(Some(&disk.join("repo"))).unwrap();
    let kubeconfig = operator_kubeconfig(&world);
    let op = OperatorProcess::start(
        &operator_bin(),
        &kubeconfig,
        "op-full",
        &world,
        &["--leader-elect=false"],
    )
    .unwrap();
    let source = format!("{}/test/busybox:huge", world.registry.addr);
    world.apply("full", &image("full", &source)).unwrap();
    let failed = wait_failed(&world, &op, "full", "IpfsStorageFull");
    assert_eq!(failed["status"]["phase"], "Importing");
    assert!(failed["status"]["layoutCid"].is_null(), "{failed:#}");
    let message = condition(&failed, "Ready")["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("no space left"), "{message}");
    // Kubo goes before its disk does.
    world.ipfs.kill();
    drop(op);
    drop(disk);
}

/// Without the feature no fault point exists and the crash test could only time out: say why.
#[cfg(not(feature = "failpoints"))]
#[test]
fn the_crash_tests_are_built_with_the_failpoints_feature() {
    panic!(
        "operator/tests/data_safety.rs needs `--features ipfs-image-operator/failpoints` (e2e/test.sh passes it)"
    );
}
