//! Reconcile scenarios of `reconcile.rs` that need no injected fault, on a real kube-apiserver
//! with the operator binary as its ServiceAccount (only the chart's RBAC): bad input, pull
//! Secrets and registry refusals become Failed with their reasons (and a retry that fails the
//! same way writes nothing); a moved tag is re-imported on the re-check annotation; a CID is
//! adopted into the very layout `convert` made; and SIGTERM hands the Lease back so that a
//! standby leads at once. `reconcile.rs` keeps the scripted API for what a real server does not
//! do on cue: a registry or Kubo outage at a chosen step, and exact request sequences.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipfs_oci::content_id::{parse_cid, to_base32};
use ipfs_oci::convert::{ConvertOptions, convert};
use ipfs_oci::ipfs::{IpfsStore, KuboClient, KuboOptions};
use ipfs_oci::source::{Reference, SourceOptions, SourceRegistry};
use serde_json::{Value, json};
use testkit::kube_world::{
    ChartWorld, OPERATOR_GRANTS, OPERATOR_SA, OperatorProcess, RELEASE_NAMESPACE,
    USER_NAMESPACE as NS, assert_calls_granted, get_json, pull_secret_yaml,
};
use testkit::{
    KubeApi, PushFormat, Registry, TestImage, block_on, push_layout, sum_metric, wait_until,
};

const STEP: Duration = Duration::from_secs(120);

fn operator_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipfs-image-operator"))
}

fn start_operator(world: &ChartWorld, pod: &str, extra: &[&str]) -> OperatorProcess {
    let kubeconfig = world
        .api
        .service_account(RELEASE_NAMESPACE, OPERATOR_SA)
        .unwrap();
    OperatorProcess::start(&operator_bin(), &kubeconfig, pod, world, extra).unwrap()
}

fn image(name: &str, spec: Value) -> String {
    json!({"apiVersion": "ipfsimage.dev/v1alpha1", "kind": "IpfsImage",
        "metadata": {"name": name, "namespace": NS}, "spec": spec})
    .to_string()
}

fn get(api: &KubeApi, name: &str) -> Option<Value> {
    get_json(api, "ipfsimg", NS, name).unwrap()
}

fn condition(obj: &Value, kind: &str) -> Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Wait until `name`'s status says `phase` for its current generation; the object then.
fn wait_phase(world: &ChartWorld, op: &OperatorProcess, name: &str, phase: &str) -> Value {
    let mut last = None;
    wait_until(&format!("{name} {phase}"), STEP, || {
        last = get(&world.api, name);
        Ok(last.as_ref().is_some_and(|o| {
            o["status"]["phase"] == phase
                && o["status"]["observedGeneration"] == o["metadata"]["generation"]
        }))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{last:#?}\noperator log:\n{}", op.log_text()));
    last.unwrap()
}

/// The reasons of the Events about `name`, as the server stores them.
fn event_reasons(api: &KubeApi, name: &str) -> Vec<(String, String)> {
    let events: Value = serde_json::from_str(
        &api.kubectl(&[
            "get",
            "events.events.k8s.io",
            "-n",
            NS,
            "-o",
            "json",
            "--field-selector",
            &format!("regarding.name={name}"),
        ])
        .unwrap(),
    )
    .unwrap();
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_owned(),
                e["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn bad_input_pull_secrets_and_registry_refusals_become_reasons() {
    let world = ChartWorld::start().unwrap();
    let api = &world.api;
    // A second registry that wants credentials, holding the same busybox.
    let private = Registry::start_with(Some(("u", "p"))).unwrap();
    push_layout(
        &world.layout,
        TestImage::AMD64,
        &private,
        "test/busybox:1",
        PushFormat::Oci,
    )
    .unwrap();
    let op = start_operator(
        &world,
        "op-failures",
        &["--plain-http-registry", &private.addr],
    );
    let private_source = format!("{}/test/busybox:1", private.addr);
    let with_secret =
        |secret: &str| json!({"source": private_source, "imagePullSecrets": [{"name": secret}]});
    world
        .apply(
            "opaque-secret",
            &json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "opaque", "namespace": NS}, "data": {}})
            .to_string(),
        )
        .unwrap();
    for (name, user, password) in [("wrongpass", "u", "wrong"), ("regcred", "u", "p")] {
        world
            .apply(
                name,
                &pull_secret_yaml(NS, name, &private.addr, (user, password)),
            )
            .unwrap();
    }
    let cases: [(&str, Value, &str, Option<&str>); 6] = [
        (
            "bad-ref",
            json!({"source": "NotAReference!!"}),
            "InvalidReference",
            Some("NotAReference!!"),
        ),
        (
            "nosecret",
            with_secret("absent"),
            "SecretNotFound",
            Some("team-a/absent"),
        ),
        ("opaque", with_secret("opaque"), "SecretInvalid", None),
        (
            "missing",
            json!({"source": format!("{}/nothing:here", world.registry.addr)}),
            "RegistryNotFound",
            None,
        ),
        (
            "anonymous",
            json!({"source": private_source}),
            "RegistryUnauthorized",
            None,
        ),
        (
            "wrongpass",
            with_secret("wrongpass"),
            "RegistryUnauthorized",
            None,
        ),
    ];
    for (name, spec, _, _) in &cases {
        world.apply(name, &image(name, spec.clone())).unwrap();
    }
    world
        .apply("private", &image("private", with_secret("regcred")))
        .unwrap();

    // The right credentials, from a Secret the operator reads by name: imported.
    let ready = wait_phase(&world, &op, "private", "Ready");
    assert!(parse_cid(ready["status"]["cid"].as_str().unwrap()).is_ok());

    for (name, _, reason, message) in &cases {
        let obj = wait_phase(&world, &op, name, "Failed");
        let ready = condition(&obj, "Ready");
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("False"), Some(*reason)),
            "{name}: {ready}"
        );
        if let Some(m) = message {
            assert!(
                ready["message"].as_str().unwrap().contains(m),
                "{name}: {ready}"
            );
        }
        // What `kubectl describe` shows says what to do about it.
        let next = format!(
            ". Next: {}",
            ipfs_image_api::Reason::ALL
                .into_iter()
                .find(|r| r.as_str() == *reason)
                .and_then(|r| r.next_step())
                .unwrap()
        );
        assert!(
            ready["message"].as_str().unwrap().ends_with(&next),
            "{name}: {ready}"
        );
        let described = api
            .kubectl(&["describe", "ipfsimg", "-n", NS, name])
            .unwrap();
        assert!(
            described.contains("Next: ") && described.contains(reason),
            "{name}: {described}"
        );
        let events = event_reasons(api, name);
        assert!(
            events.contains(&("Warning".to_owned(), reason.to_string())),
            "{name}: {events:?}"
        );
    }

    // Retries (1s backoff, doubling) that fail the same way write nothing: the stored objects
    // keep their resourceVersion while the failure counter shows the retries happened.
    let versions: Vec<Value> = cases
        .iter()
        .map(|(n, ..)| get(api, n).unwrap()["metadata"]["resourceVersion"].clone())
        .collect();
    let failures = || {
        let text = testkit::http_client(Duration::from_secs(2))
            .get(format!("http://{}/metrics", op.metrics))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        sum_metric(&text, "ipfs_image_operator_reconcile_failures_total", &[])
    };
    let before = failures();
    wait_until("every failure retried", STEP, || {
        Ok(failures() >= before + 2.0 * cases.len() as f64)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", op.log_text()));
    for ((name, ..), version) in cases.iter().zip(&versions) {
        let now = get(api, name).unwrap();
        assert_eq!(
            &now["metadata"]["resourceVersion"], version,
            "{name} was rewritten"
        );
    }
    assert_calls_granted(api, OPERATOR_SA, &OPERATOR_GRANTS);
}

#[test]
fn a_moved_tag_is_reimported_on_the_recheck_annotation() {
    let world = ChartWorld::start().unwrap();
    let api = &world.api;
    let op = start_operator(&world, "op-recheck", &[]);
    let kubo = KuboClient::new(&world.ipfs.api_url, KuboOptions::default()).unwrap();
    world
        .apply("app", &image("app", json!({"source": world.busybox()})))
        .unwrap();
    let first = wait_phase(&world, &op, "app", "Ready");
    let old_cid = first["status"]["cid"].as_str().unwrap().to_owned();
    let old_layout = parse_cid(first["status"]["layoutCid"].as_str().unwrap()).unwrap();
    assert_eq!(first["status"]["platforms"], json!(["linux/amd64"]));

    // The tag moves to another image; the user asks for a re-check now.
    push_layout(
        &world.layout,
        TestImage::ARM64,
        &world.registry,
        "test/busybox:1",
        PushFormat::Oci,
    )
    .unwrap();
    api.kubectl(&[
        "annotate",
        "ipfsimg",
        "-n",
        NS,
        "app",
        "ipfsimage.dev/recheck=now",
    ])
    .unwrap();
    let mut last = None;
    wait_until("re-imported", STEP, || {
        last = get(api, "app");
        let o = last.as_ref().unwrap();
        Ok(o["status"]["cid"] != old_cid.as_str()
            && o["status"]["phase"] == "Ready"
            && o["metadata"]["annotations"]
                .get("ipfsimage.dev/recheck")
                .is_none())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{last:#?}\n{}", op.log_text()));
    let moved = last.unwrap();
    assert_eq!(moved["status"]["platforms"], json!(["linux/arm64"]));
    assert_ne!(
        moved["status"]["sourceDigest"],
        first["status"]["sourceDigest"]
    );
    let reasons = event_reasons(api, "app");
    for r in ["TagMoved", "Unpinned"] {
        assert!(
            reasons.contains(&("Normal".to_owned(), r.to_owned())),
            "{reasons:?}"
        );
    }
    let new_layout = parse_cid(moved["status"]["layoutCid"].as_str().unwrap()).unwrap();
    assert!(block_on(kubo.is_pinned(&new_layout)).unwrap());
    assert!(
        !block_on(kubo.is_pinned(&old_layout)).unwrap(),
        "the old image's pin is released"
    );
    assert_calls_granted(api, OPERATOR_SA, &OPERATOR_GRANTS);
}

/// The holder of the operator's Lease as stored.
#[test]
fn a_spec_edit_that_needs_no_import_keeps_the_image_ready_while_the_registry_is_down() {
    let mut world = ChartWorld::start().unwrap();
    let op = start_operator(&world, "op-edit", &[]);
    world
        .apply("app", &image("app", json!({"source": world.busybox()})))
        .unwrap();
    let first = wait_phase(&world, &op, "app", "Ready");
    let generation = first["metadata"]["generation"].as_i64().unwrap();

    // The upstream goes away (when IPFS should help most), and the user edits what does not
    // change the image: where it is prefetched, the re-check interval, the replicas wanted.
    world.registry.stop();
    world
        .api
        .kubectl(&[
            "patch", "ipfsimg", "-n", NS, "app", "--type=merge", "-p",
            r#"{"spec": {"recheckInterval": "2h", "minReplicas": 0, "prefetch": {"nodeSelector": {"pool": "gpu"}}}}"#,
        ])
        .unwrap();
    let mut not_ready = Vec::new();
    let mut last = None;
    wait_until("the edit applied", STEP, || {
        let o = get(&world.api, "app").unwrap();
        if o["status"]["phase"] != "Ready" || condition(&o, "Ready")["status"] != "True" {
            not_ready.push(o["status"].clone());
        }
        let done = o["status"]["observedGeneration"] == o["metadata"]["generation"];
        last = Some(o);
        Ok(done)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}
{last:#?}
{}",
            op.log_text()
        )
    });
    let edited = last.unwrap();
    assert!(
        not_ready.is_empty(),
        "the image stayed Ready through the edit, seen: {not_ready:#?}"
    );
    assert_eq!(
        edited["metadata"]["generation"].as_i64().unwrap(),
        generation + 1
    );
    for field in ["cid", "layoutCid", "sourceDigest", "importedSpec"] {
        assert_eq!(edited["status"][field], first["status"][field], "{field}");
    }
    for kind in ["Imported", "Pinned", "Ready"] {
        let c = condition(&edited, kind);
        assert_eq!(c["status"], "True", "{c}");
        assert_eq!(c["observedGeneration"], generation + 1, "{c}");
    }

    // A change of what is imported does import again: with the registry down, not Ready.
    world
        .api
        .kubectl(&[
            "patch",
            "ipfsimg",
            "-n",
            NS,
            "app",
            "--type=merge",
            "-p",
            r#"{"spec": {"platforms": ["linux/arm64"]}}"#,
        ])
        .unwrap();
    let reimport = wait_phase(&world, &op, "app", "Importing");
    assert_eq!(
        condition(&reimport, "Ready")["reason"],
        "RegistryUnavailable",
        "{reimport:#}"
    );
}

#[test]
fn a_deleted_nodes_pin_report_stops_counting_and_is_dropped() {
    let world = ChartWorld::start().unwrap();
    let api = &world.api;
    let op = start_operator(&world, "op-nodes", &[]);
    for node in ["n1", "n2"] {
        world
            .apply(
                node,
                &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
                    .to_string(),
            )
            .unwrap();
    }
    world
        .apply(
            "app",
            &image("app", json!({"source": world.busybox(), "minReplicas": 1})),
        )
        .unwrap();
    let pinning = wait_phase(&world, &op, "app", "Pinning");
    let cid = pinning["status"]["cid"].as_str().unwrap().to_owned();

    // Each node's agent reports its pin, as agents do: server-side apply of its own entry.
    for node in ["n1", "n2"] {
        let report = json!({"apiVersion": "ipfsimage.dev/v1alpha1", "kind": "IpfsImage",
            "metadata": {"name": "app", "namespace": NS},
            "status": {"nodes": [{"node": node, "cid": cid, "pinned": node == "n1"}]}});
        let file = testkit::kube_world::write_file(
            world.dir.path(),
            &format!("report-{node}.json"),
            &report.to_string(),
        )
        .unwrap();
        api.kubectl(&[
            "apply",
            "--server-side",
            "--subresource=status",
            &format!(
                "--field-manager={}",
                ipfs_image_api::names::agent_field_manager(node)
            ),
            "-f",
            &file,
        ])
        .unwrap();
    }
    let ready = wait_phase(&world, &op, "app", "Ready");
    assert_eq!(ready["status"]["summary"]["nodes"], "1/1", "{ready:#}");

    // The node that held the pin is deleted (its agent with it): its report no longer counts,
    // and leaves the status; the other node's entry stays.
    api.kubectl(&["delete", "node", "n1"]).unwrap();
    let mut last = None;
    wait_until("n1's entry dropped", STEP, || {
        last = get(api, "app");
        let o = last.as_ref().unwrap();
        let nodes: Vec<&str> = o["status"]["nodes"]
            .as_array()
            .map(|a| a.iter().filter_map(|n| n["node"].as_str()).collect())
            .unwrap_or_default();
        Ok(nodes == ["n2"] && o["status"]["phase"] == "Pinning")
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{last:#?}\n{}", op.log_text()));
    let after = last.unwrap();
    assert_eq!(after["status"]["summary"]["nodes"], "0/1", "{after:#}");
    assert_eq!(
        condition(&after, "Ready")["reason"],
        "WaitingForReplicas",
        "{after:#}"
    );
    assert_calls_granted(api, OPERATOR_SA, &OPERATOR_GRANTS);
}

#[test]
fn a_layout_pin_no_object_holds_is_swept_and_other_pins_stay() {
    let world = ChartWorld::start().unwrap();
    let api = &world.api;
    let kubo = KuboClient::new(&world.ipfs.api_url, KuboOptions::default()).unwrap();
    push_layout(
        &world.layout,
        TestImage::ARM64,
        &world.registry,
        "test/busybox:arm",
        PushFormat::Oci,
    )
    .unwrap();
    let sweep = ["--orphan-sweep-interval", "1s"];
    let mut op = start_operator(&world, "op-sweep", &sweep);
    world
        .apply("kept", &image("kept", json!({"source": world.busybox()})))
        .unwrap();
    let gone_source = format!("{}/test/busybox:arm", world.registry.addr);
    world
        .apply("gone", &image("gone", json!({"source": gone_source})))
        .unwrap();
    let kept = wait_phase(&world, &op, "kept", "Ready");
    let gone = wait_phase(&world, &op, "gone", "Ready");
    let layout = |o: &Value| parse_cid(o["status"]["layoutCid"].as_str().unwrap()).unwrap();
    let (kept_layout, gone_layout) = (layout(&kept), layout(&gone));
    assert_ne!(kept_layout, gone_layout);
    // Each layout pin is named after its object.
    let pins = block_on(kubo.recursive_pins()).unwrap();
    let name_of = |cid: &ipfs_oci::Cid| {
        pins.iter()
            .find(|(c, _)| c == cid)
            .map(|(_, n)| n.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        name_of(&kept_layout),
        format!(
            "ipfs-image-operator/{}",
            kept["metadata"]["uid"].as_str().unwrap()
        )
    );

    // A user's own pins on the same daemon: unnamed, and named otherwise.
    let user_blob = |text: &'static str| {
        let stream: ipfs_oci::ipfs::ByteStream = Box::pin(futures::stream::once(async move {
            Ok(bytes::Bytes::from_static(text.as_bytes()))
        }));
        block_on(kubo.add(stream)).unwrap().cid
    };
    let (unnamed, named) = (user_blob("a user's pin"), user_blob("another user's pin"));
    block_on(kubo.pin_add(&unnamed)).unwrap();
    block_on(kubo.pin_add_named(&named, "backup/2026-12")).unwrap();

    // The operator stops; an administrator removes `gone`'s finalizer by hand, so nothing
    // releases its pin: an orphan.
    op.daemon.kill();
    api.kubectl(&["delete", "ipfsimg", "-n", NS, "gone", "--wait=false"])
        .unwrap();
    api.kubectl(&[
        "patch",
        "ipfsimg",
        "-n",
        NS,
        "gone",
        "--type=merge",
        "-p",
        r#"{"metadata": {"finalizers": null}}"#,
    ])
    .unwrap();
    wait_until("gone deleted", STEP, || Ok(get(api, "gone").is_none())).unwrap();
    assert!(block_on(kubo.is_pinned(&gone_layout)).unwrap());

    let op = start_operator(&world, "op-sweep-2", &sweep);
    wait_until("the orphan unpinned", STEP, || {
        Ok(!block_on(kubo.is_pinned(&gone_layout))?)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", op.log_text()));
    for (what, cid) in [
        ("kept's layout", kept_layout),
        ("a user's unnamed pin", unnamed),
        ("a user's named pin", named),
    ] {
        assert!(
            block_on(kubo.is_pinned(&cid)).unwrap(),
            "{what} stays pinned"
        );
    }
    assert!(
        op.log_text()
            .contains("unpinned a layout no IpfsImage holds")
    );
}

fn lease_holder(api: &KubeApi) -> Option<String> {
    let lease = get_json(api, "lease", RELEASE_NAMESPACE, "ipfs-image-operator").ok()??;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

#[test]
fn sigterm_hands_the_lease_back_and_a_standby_leads_at_once() {
    let world = ChartWorld::start().unwrap();
    let api = &world.api;
    // A long lease: without the hand-back the standby would wait all of it.
    const LEASE: Duration = Duration::from_secs(60);
    let timing = ["--lease-duration", "60s", "--lease-renew-interval", "1s"];
    let mut a = start_operator(&world, "op-a", &timing);
    wait_until("op-a leads", STEP, || {
        Ok(lease_holder(api).as_deref() == Some("op-a") && a.leader_gauge() == Some(1.0))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", a.log_text()));
    let health = testkit::http_client(Duration::from_secs(2))
        .get(format!("http://{}/healthz", a.metrics))
        .send()
        .unwrap();
    assert_eq!(health.status(), 200);
    let mut b = start_operator(&world, "op-b", &timing);
    wait_until("op-b stands by", STEP, || Ok(b.leader_gauge() == Some(0.0))).unwrap();

    let stopped_at = Instant::now();
    let status = a.daemon.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status:?}\n{}", a.log_text());
    assert!(
        a.log_text().contains("released the leader Lease"),
        "{}",
        a.log_text()
    );
    wait_until("op-b leads", LEASE, || {
        Ok(lease_holder(api).as_deref() == Some("op-b") && b.leader_gauge() == Some(1.0))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", b.log_text()));
    let took = stopped_at.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "handover took {took:?}: the Lease was not handed back (it lasts {LEASE:?})"
    );

    // And the new leader reconciles.
    world
        .apply("after", &image("after", json!({"source": world.busybox()})))
        .unwrap();
    wait_phase(&world, &b, "after", "Ready");

    // The last replica stops too: exit 0, and the stored Lease names no holder.
    let status = b.daemon.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status:?}\n{}", b.log_text());
    let lease = get_json(api, "lease", RELEASE_NAMESPACE, "ipfs-image-operator")
        .unwrap()
        .unwrap();
    assert!(lease["spec"].get("holderIdentity").is_none(), "{lease:#}");
    assert_calls_granted(api, OPERATOR_SA, &OPERATOR_GRANTS);
}

#[test]
fn adopting_a_cid_verifies_and_pins_the_layout_convert_made() {
    let world = ChartWorld::start().unwrap();
    let api = &world.api;
    // A two-platform image converted straight into the operator's Kubo, then unpinned.
    push_layout(
        &world.layout,
        TestImage::MULTI,
        &world.registry,
        "test/multi:1",
        PushFormat::OciIndex,
    )
    .unwrap();
    let kubo = KuboClient::new(&world.ipfs.api_url, KuboOptions::default()).unwrap();
    let plain = SourceRegistry::new(&SourceOptions {
        plain_http: true,
        ..Default::default()
    });
    let reference: Reference = format!("{}/test/multi:1", world.registry.addr)
        .parse()
        .unwrap();
    let converted = block_on(async {
        let image = convert(&kubo, &plain, &reference, &ConvertOptions::default())
            .await
            .unwrap();
        kubo.pin_rm(&image.layout_cid).await.unwrap();
        image
    });
    let cid = to_base32(&converted.root_cid);

    let op = start_operator(&world, "op-adopt", &[]);
    world
        .apply("adopted", &image("adopted", json!({ "cid": cid })))
        .unwrap();
    let obj = wait_phase(&world, &op, "adopted", "Ready");
    let status = &obj["status"];
    assert_eq!(status["cid"], cid.as_str());
    assert_eq!(
        status["layoutCid"],
        to_base32(&converted.layout_cid).as_str(),
        "adoption rebuilds the very layout convert made"
    );
    assert_eq!(status["size"], converted.total_size);
    assert_eq!(
        status["sourceDigest"],
        converted.source_digest.to_string().as_str()
    );
    assert_eq!(status["platforms"], json!(["linux/amd64", "linux/arm64"]));
    assert_eq!(condition(&obj, "Imported")["reason"], "Adopted");
    assert!(block_on(kubo.is_pinned(&converted.layout_cid)).unwrap());
    assert!(
        event_reasons(api, "adopted").contains(&("Normal".to_owned(), "Adopted".to_owned())),
        "{:?}",
        event_reasons(api, "adopted")
    );
    assert_calls_granted(api, OPERATOR_SA, &OPERATOR_GRANTS);
}
