//! Against a real kube-apiserver with etcd (testkit::KubeApi): the CRD's own validation, the
//! examples, and the operator binary — with only the rights the chart's RBAC grants its
//! ServiceAccount — taking an IpfsImage from Pending to Ready against a real registry and Kubo,
//! then unpinning it on delete. Assertions are on what the API server stores and Kubo reports.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ipfs_oci::content_id::parse_cid;
use ipfs_oci::ipfs::{IpfsStore, KuboClient, KuboOptions};
use serde_json::Value;
use testkit::kube_world::{self, ChartWorld, OperatorProcess, RELEASE_NAMESPACE as NAMESPACE};
use testkit::{KubeApi, block_on, wait_until, workspace_root};

fn write(dir: &Path, name: &str, text: &str) -> String {
    kube_world::write_file(dir, name, text).unwrap()
}

#[test]
fn the_crd_validates_on_a_real_api_server() {
    let api = KubeApi::start().unwrap();
    kube_world::install_crd(&api).unwrap();
    api.kubectl(&["create", "namespace", "team-a"]).unwrap();

    // Every example is accepted as it is.
    let examples = workspace_root().join("manifests/examples");
    let mut applied = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        api.kubectl(&["apply", "-n", "team-a", "-f", &path.display().to_string()])
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        applied += 1;
    }
    assert!(applied >= 3, "examples applied: {applied}");

    // Invalid objects are refused by the server, with the CRD's own messages.
    let dir = tempfile::tempdir().unwrap();
    let object = |name: &str, spec: &str| {
        format!(
            "apiVersion: ipfsimage.dev/v1alpha1\nkind: IpfsImage\nmetadata:\n  name: {name}\n  namespace: team-a\nspec:\n{spec}"
        )
    };
    let cid = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
    let cases = [
        (
            "both",
            format!("  source: docker.io/library/busybox:1.36\n  cid: {cid}\n"),
            "exactly one of spec.source or spec.cid must be set",
        ),
        (
            "neither",
            "  mirror: true\n".to_owned(),
            "exactly one of spec.source or spec.cid must be set",
        ),
        (
            "platforms-with-cid",
            format!("  cid: {cid}\n  platforms: [linux/amd64]\n"),
            "platforms and estargz apply to spec.source only",
        ),
        (
            "bad-duration",
            "  source: docker.io/library/busybox:1.36\n  recheckInterval: soon\n".to_owned(),
            "spec.recheckInterval",
        ),
        (
            "short-duration",
            "  source: docker.io/library/busybox:1.36\n  recheckInterval: 10s\n".to_owned(),
            "recheckInterval must be 0s (off) or at least 1m",
        ),
        ("bad-cid", "  cid: not-a-cid\n".to_owned(), "spec.cid"),
    ];
    for (name, spec, message) in cases {
        let file = write(dir.path(), &format!("{name}.yaml"), &object(name, &spec));
        let out = api.kubectl_as(None, &["create", "-f", &file]).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(
            stderr.contains(message),
            "{name}: the server's refusal lacks {message:?}: {stderr}"
        );
        assert!(
            stderr.contains("Invalid value") || stderr.contains("is invalid"),
            "{name}: {stderr}"
        );
    }
    // None of them was stored.
    let stored: Value = serde_json::from_str(
        &api.kubectl(&["get", "ipfsimg", "-n", "team-a", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored["items"].as_array().unwrap().len(), applied);
}

fn get(api: &KubeApi, namespace: &str, name: &str) -> Option<Value> {
    kube_world::get_json(api, "ipfsimg", namespace, name).unwrap()
}

fn wait_ready(api: &KubeApi, operator_log: &Path, namespace: &str, name: &str) -> Value {
    let mut last = None;
    let ready = wait_until(&format!("{name} Ready"), Duration::from_secs(120), || {
        last = get(api, namespace, name);
        Ok(last.as_ref().and_then(|o| o["status"]["phase"].as_str()) == Some("Ready"))
    });
    if let Err(e) = ready {
        panic!(
            "{e:#}\nobject: {last:#?}\noperator log:\n{}",
            std::fs::read_to_string(operator_log).unwrap_or_default()
        );
    }
    last.unwrap()
}

fn condition<'a>(obj: &'a Value, kind: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} condition: {obj:#}"))
}

fn operator_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipfs-image-operator"))
}

/// The operator binary as the identity of `kubeconfig`, one replica named `pod`.
fn operator(kubeconfig: &Path, pod: &str, world: &ChartWorld, extra: &[&str]) -> OperatorProcess {
    OperatorProcess::start(&operator_bin(), kubeconfig, pod, world, extra).unwrap()
}

/// An IpfsImage in `team-a` importing `source`.
fn ipfs_image(name: &str, source: &str) -> String {
    format!(
        "apiVersion: ipfsimage.dev/v1alpha1\nkind: IpfsImage\nmetadata:\n  name: {name}\n  namespace: team-a\nspec:\n  source: {source}\n"
    )
}

#[test]
fn the_operator_binary_with_the_chart_rbac_imports_and_unpins() {
    let world = ChartWorld::start().unwrap();
    let (api, dir) = (&world.api, &world.dir);
    let kubo = KuboClient::new(&world.ipfs.api_url, KuboOptions::default()).unwrap();

    // The operator binary as its ServiceAccount: exactly the chart's rights.
    let kubeconfig = api
        .service_account(NAMESPACE, "ipfs-image-operator")
        .unwrap();
    let operator = operator(&kubeconfig, "ipfs-image-operator-test", &world, &[]);
    let log = operator.log.clone();

    let source = world.busybox();
    let manifest = |name: &str| ipfs_image(name, &source);
    let first = write(dir.path(), "first.yaml", &manifest("first"));
    api.kubectl(&["apply", "-f", &first]).unwrap();
    let ready = wait_ready(api, &log, "team-a", "first");

    // What the API server stored.
    let status = &ready["status"];
    let cid = status["cid"].as_str().expect("status.cid");
    assert!(parse_cid(cid).is_ok(), "{cid}");
    assert_eq!(status["image"], format!("localhost:5050/ipfs/{cid}"));
    assert!(
        status["sourceDigest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(
        status["observedGeneration"],
        ready["metadata"]["generation"]
    );
    for kind in ["Imported", "Pinned", "Ready"] {
        let c = condition(&ready, kind);
        assert_eq!(c["status"], "True", "{c}");
        assert!(!c["reason"].as_str().unwrap_or_default().is_empty(), "{c}");
        assert_eq!(
            c["observedGeneration"], ready["metadata"]["generation"],
            "{c}"
        );
    }
    assert_eq!(
        ready["metadata"]["finalizers"],
        serde_json::json!(["ipfsimage.dev/unpin"])
    );
    let events: Value = serde_json::from_str(
        &api.kubectl(&[
            "get",
            "events.events.k8s.io",
            "-n",
            "team-a",
            "-o",
            "json",
            "--field-selector",
            "regarding.name=first",
        ])
        .unwrap(),
    )
    .unwrap();
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(
        !reasons.is_empty(),
        "the operator recorded Events: {events:#}"
    );
    let layout_cid = parse_cid(status["layoutCid"].as_str().expect("layoutCid")).unwrap();
    assert!(block_on(kubo.is_pinned(&layout_cid)).unwrap());

    // What a person reads: the printer columns in the Table the API server returns kubectl.
    let size = status["summary"]["size"]
        .as_str()
        .expect("status.summary.size");
    assert!(
        size.ends_with("MiB") || size.ends_with("KiB"),
        "{size} for {} bytes",
        status["size"]
    );
    assert_eq!(
        status["summary"]["nodes"], "0/0",
        "no node pins, none asked"
    );
    let words = |text: &str, line: usize| -> Vec<String> {
        text.lines()
            .nth(line)
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let table = api
        .kubectl(&["get", "ipfsimg", "-n", "team-a", "first"])
        .unwrap();
    assert_eq!(
        words(&table, 0),
        ["NAME", "SOURCE", "CID", "PHASE", "SIZE", "NODES", "AGE"],
        "{table}"
    );
    assert_eq!(
        words(&table, 1)[..6],
        ["first", source.as_str(), cid, "Ready", size, "0/0"],
        "{table}"
    );
    let wide = api
        .kubectl(&["get", "ipfsimg", "-n", "team-a", "first", "-o", "wide"])
        .unwrap();
    assert_eq!(
        words(&wide, 0),
        [
            "NAME",
            "SOURCE",
            "CID",
            "PHASE",
            "SIZE",
            "NODES",
            "AGE",
            "PLATFORMS",
            "CHECKED",
            "IMAGE"
        ],
        "{wide}"
    );
    let row = words(&wide, 1);
    assert!(
        row[7].contains("linux/amd64"),
        "the platforms column: {wide}"
    );
    assert_eq!(row[9], format!("localhost:5050/ipfs/{cid}"), "{wide}");

    // A second object with the same source holds the same CID: deleting the first keeps it.
    let second = write(dir.path(), "second.yaml", &manifest("second"));
    api.kubectl(&["apply", "-f", &second]).unwrap();
    let second_ready = wait_ready(api, &log, "team-a", "second");
    assert_eq!(second_ready["status"]["cid"], cid);
    assert!(second_ready["status"]["lastCheckTime"].is_string());

    // Switched from `source` to the same image by `cid`: adopted, and the fields that only a
    // source has are cleared in what the server stores (a merge patch that leaves a field out
    // would keep it).
    api.kubectl(&[
        "patch",
        "ipfsimg",
        "-n",
        "team-a",
        "second",
        "--type=merge",
        "-p",
        &format!(r#"{{"spec":{{"source":null,"cid":"{cid}"}}}}"#),
    ])
    .unwrap();
    let adopted = wait_until("second adopted", Duration::from_secs(120), || {
        let o = get(api, "team-a", "second").unwrap();
        Ok(o["status"]["observedGeneration"] == 2 && o["status"]["phase"] == "Ready")
    });
    let second_adopted = get(api, "team-a", "second").unwrap();
    adopted.unwrap_or_else(|e| panic!("{e:#}: {second_adopted:#}"));
    assert_eq!(second_adopted["status"]["cid"], cid);
    assert_eq!(condition(&second_adopted, "Imported")["reason"], "Adopted");
    assert!(
        second_adopted["status"].get("lastCheckTime").is_none(),
        "a CID has no tag to re-check: {:#}",
        second_adopted["status"]
    );
    api.kubectl(&[
        "delete",
        "ipfsimg",
        "-n",
        "team-a",
        "first",
        "--timeout=60s",
    ])
    .unwrap();
    assert!(
        get(api, "team-a", "first").is_none(),
        "the finalizer was removed"
    );
    assert!(
        block_on(kubo.is_pinned(&layout_cid)).unwrap(),
        "still pinned: the second object holds it"
    );
    api.kubectl(&[
        "delete",
        "ipfsimg",
        "-n",
        "team-a",
        "second",
        "--timeout=60s",
    ])
    .unwrap();
    assert!(get(api, "team-a", "second").is_none());
    assert!(
        !block_on(kubo.is_pinned(&layout_cid)).unwrap(),
        "unpinned once no object holds it"
    );
    // Every call it made is one the chart grants, and none was refused.
    kube_world::assert_calls_granted(api, kube_world::OPERATOR_SA, &kube_world::OPERATOR_GRANTS);
    eprintln!(
        "apiserver: operator test passed against {}",
        testkit::kube_apiserver_version()
    );
}

/// The holder of the operator's Lease, as the API server stores it.
fn lease_holder(api: &KubeApi) -> Option<String> {
    let out = api
        .kubectl_as(
            None,
            &[
                "get",
                "lease",
                "-n",
                NAMESPACE,
                "ipfs-image-operator",
                "-o",
                "json",
            ],
        )
        .unwrap();
    let lease: Value = serde_json::from_slice(&out.stdout).ok()?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

#[test]
fn two_replicas_elect_one_leader_and_hand_over_when_it_dies() {
    let world = ChartWorld::start().unwrap();
    let (api, dir) = (&world.api, &world.dir);
    let kubeconfig = api
        .service_account(NAMESPACE, "ipfs-image-operator")
        .unwrap();
    const LEASE: Duration = Duration::from_secs(6);
    const RENEW: Duration = Duration::from_secs(2);
    let timing = ["--lease-duration", "6s", "--lease-renew-interval", "2s"];
    let mut replicas: Vec<(String, OperatorProcess)> = ["op-a", "op-b"]
        .into_iter()
        .map(|name| {
            (
                name.to_owned(),
                operator(&kubeconfig, name, &world, &timing),
            )
        })
        .collect();

    // One leader: the Lease names it, and exactly that replica says it leads.
    wait_until("a leader", Duration::from_secs(60), || {
        let Some(holder) = lease_holder(api) else {
            return Ok(false);
        };
        let gauges: Vec<Option<f64>> = replicas.iter().map(|(_, op)| op.leader_gauge()).collect();
        Ok(replicas
            .iter()
            .zip(&gauges)
            .all(|((name, _), g)| *g == Some(if *name == holder { 1.0 } else { 0.0 })))
    })
    .unwrap_or_else(|e| panic!("{e:#}; lease holder {:?}", lease_holder(api)));
    let leader = lease_holder(api).unwrap();
    let index = replicas.iter().position(|(n, _)| *n == leader).unwrap();
    let (_, mut killed) = replicas.remove(index);
    let (survivor, standby) = &replicas[0];

    // The leader dies without a word (SIGKILL): the other takes over once the Lease lapses.
    let killed_at = std::time::Instant::now();
    killed.daemon.kill();
    wait_until("the standby takes over", LEASE * 3, || {
        Ok(lease_holder(api).as_deref() == Some(survivor.as_str())
            && standby.leader_gauge() == Some(1.0))
    })
    .unwrap();
    let took = killed_at.elapsed();
    eprintln!("leader: {leader} killed, {survivor} leads after {took:?}");
    assert!(
        took <= LEASE + RENEW + Duration::from_secs(2),
        "handover took {took:?}, more than the lease ({LEASE:?}) and one renew interval"
    );

    // And the new leader reconciles.
    let source = world.busybox();
    let file = write(dir.path(), "after.yaml", &ipfs_image("after", &source));
    api.kubectl(&["apply", "-f", &file]).unwrap();
    wait_ready(
        api,
        &dir.path().join(format!("{survivor}.log")),
        "team-a",
        "after",
    );
    kube_world::assert_calls_granted(api, kube_world::OPERATOR_SA, &kube_world::OPERATOR_GRANTS);
}
