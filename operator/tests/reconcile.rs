//! The reconcile against a faked Kubernetes API (every request asserted and answered in order)
//! with a real registry and a real IPFS daemon below it: what a real API server cannot show —
//! the exact request sequence of each step, and outages injected at a chosen moment. The same
//! scenarios without injected faults run on a real API server in `apiserver_reconcile.rs`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use ipfs_image_api::conditions::types;
use ipfs_image_api::{IpfsImageSpec, IpfsImageStatus, Phase, PullSecretReference, Reason};
use ipfs_image_operator::controller::Config;
use ipfs_oci::Cid;
use ipfs_oci::content_id::{parse_cid, to_base32};
use ipfs_oci::convert::{ConvertOptions, convert};
use ipfs_oci::digest::Digest;
use ipfs_oci::format::{MAX_MANIFEST_BYTES, media_type};
use ipfs_oci::ipfs::{IpfsStore, KuboClient, KuboOptions};
use ipfs_oci::source::{Reference, SourceOptions, SourceRegistry};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;
use serde_json::json;
use support::*;
use testkit::{
    Answer, HttpProxy, IpfsDaemon, PushFormat, Registry, TestImage, block_on, build_busybox_layout,
    push_layout,
};

fn source_spec(source: &str) -> IpfsImageSpec {
    IpfsImageSpec {
        source: Some(source.to_owned()),
        ..Default::default()
    }
}

fn kubo(daemon: &IpfsDaemon) -> KuboClient {
    KuboClient::new(&daemon.api_url, KuboOptions::default()).unwrap()
}

fn requeue(after: Duration) -> Action {
    Action::requeue(after)
}

#[test]
fn import_then_ready_noop_then_moved_tag() {
    let dir = tempfile::tempdir().unwrap();
    let layout = build_busybox_layout(dir.path()).unwrap();
    let registry = Registry::start().unwrap();
    push_layout(
        &layout,
        TestImage::AMD64,
        &registry,
        "busybox:1",
        PushFormat::Oci,
    )
    .unwrap();
    let daemon = IpfsDaemon::start().unwrap();
    let source = format!("{}/busybox:1", registry.addr);
    let config = config_for(&registry.addr);

    block_on(async {
        // 1. A new object gets the finalizer first, and nothing else happens.
        let mut fresh = object("app", source_spec(&source));
        fresh.metadata.finalizers = None;
        let ipfs = Counting::new(kubo(&daemon));
        let (result, patch, _) = reconcile_with(&fresh, ipfs.clone(), config.clone(), |mut api| {
            let echo = object("app", source_spec(&source));
            async move {
                let c = api.finalizer_patch(&echo).await;
                api.done().await;
                c
            }
        })
        .await;
        assert_eq!(result.unwrap(), Action::await_change());
        assert_eq!(
            patch.body[1],
            json!({"op": "add", "path": "/metadata/finalizers", "value": ["ipfsimage.dev/unpin"]})
        );
        assert_eq!(ipfs.writes(), (0, 0, 0));

        // 2. With the finalizer: Importing, then Ready with the converted CIDs, then an Event.
        let obj = object("app", source_spec(&source));
        let (result, (importing, ready, event), metrics) =
            reconcile_with(&obj, ipfs.clone(), config.clone(), |mut api| {
                let echo = obj.clone();
                async move {
                    let importing = api.status_patch(&echo).await;
                    let ready = api.status_patch(&echo).await;
                    let event = api.event(&echo, "Normal", "Imported").await;
                    api.done().await;
                    (importing, ready, event)
                }
            })
            .await;
        assert_eq!(result.unwrap(), requeue(Duration::from_secs(3600)));
        let importing = patched_status(&importing);
        assert_eq!(importing.phase, Some(Phase::Importing));
        assert_eq!(condition(&importing, types::IMPORTED).reason, "Importing");
        assert_eq!(importing.observed_generation, Some(1));

        // The CIDs are exactly what `convert` gives for the same source.
        let reference: Reference = source.parse().unwrap();
        let plain = SourceRegistry::new(&SourceOptions {
            plain_http: true,
            ..Default::default()
        });
        let expected = convert(
            &kubo(&daemon),
            &plain,
            &reference,
            &ConvertOptions::default(),
        )
        .await
        .unwrap();
        let status = patched_status(&ready);
        let cid = to_base32(&expected.root_cid);
        assert_eq!(status.phase, Some(Phase::Ready));
        assert_eq!(status.cid.as_deref(), Some(cid.as_str()));
        assert_eq!(status.image, Some(format!("localhost:5050/ipfs/{cid}")));
        assert_eq!(status.layout_cid, Some(to_base32(&expected.layout_cid)));
        assert_eq!(
            status.source_digest,
            Some(expected.source_digest.to_string())
        );
        assert_eq!(status.size, Some(expected.total_size as i64));
        assert_eq!(status.platforms, ["linux/amd64"]);
        assert_eq!(status.observed_generation, Some(1));
        assert!(status.last_check_time.is_some());
        for (type_, reason) in [
            (types::IMPORTED, "Imported"),
            (types::PINNED, "Pinned"),
            (types::READY, "Ready"),
        ] {
            let c = condition(&status, type_);
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                ("True", reason),
                "{c:?}"
            );
            assert_eq!(c.observed_generation, Some(1));
        }
        assert!(
            event.body["note"].as_str().unwrap().contains(&cid),
            "{}",
            event.body
        );
        assert!(kubo(&daemon).is_pinned(&expected.layout_cid).await.unwrap());
        assert_eq!(metrics.import_bytes.get(), expected.total_size);
        assert_eq!(metrics.reconciles.get(), 1);

        // 3. Ready and pinned: no API request, no IPFS write; requeued for the next re-check.
        let ready_obj = with_status(&obj, status.clone());
        let before = ipfs.writes();
        let (result, (), _) =
            reconcile_with(&ready_obj, ipfs.clone(), config.clone(), |api| api.done()).await;
        match result.unwrap() {
            a if a == Action::await_change() => panic!("a Ready tag must be re-checked"),
            a => assert!(format!("{a:?}").contains("requeue_after: Some"), "{a:?}"),
        }
        assert_eq!(ipfs.writes(), before, "a Ready object costs no IPFS writes");

        // 4. The tag moves; the re-check is due: TagMoved, re-import, old layout unpinned.
        push_layout(
            &layout,
            TestImage::ARM64,
            &registry,
            "busybox:1",
            PushFormat::Oci,
        )
        .unwrap();
        let mut due = status.clone();
        due.last_check_time = Some(Time(Timestamp::now() - SignedDuration::from_hours(2)));
        let due_obj = with_status(&obj, due);
        let (result, (moved, ready, imported), _) =
            reconcile_with(&due_obj, ipfs.clone(), config.clone(), |mut api| {
                let echo = due_obj.clone();
                async move {
                    let moved = api.event(&echo, "Normal", "TagMoved").await;
                    let ready = api.status_patch(&echo).await;
                    let imported = api.event(&echo, "Normal", "Imported").await;
                    api.list_all(&[&echo]).await;
                    api.event(&echo, "Normal", "Unpinned").await;
                    api.done().await;
                    (moved, ready, imported)
                }
            })
            .await;
        assert_eq!(result.unwrap(), requeue(Duration::from_secs(3600)));
        let new_status = patched_status(&ready);
        assert_ne!(new_status.cid, status.cid, "a moved tag gives a new image");
        assert_ne!(new_status.source_digest, status.source_digest);
        assert_eq!(new_status.platforms, ["linux/arm64"]);
        assert_eq!(new_status.phase, Some(Phase::Ready));
        assert!(
            moved.body["note"]
                .as_str()
                .unwrap()
                .contains(status.source_digest.as_deref().unwrap())
        );
        assert!(
            imported.body["note"]
                .as_str()
                .unwrap()
                .contains(new_status.cid.as_deref().unwrap())
        );
        let ipfs_now = kubo(&daemon);
        assert!(
            ipfs_now
                .is_pinned(&parse_cid(new_status.layout_cid.as_deref().unwrap()).unwrap())
                .await
                .unwrap()
        );
        assert!(
            !ipfs_now.is_pinned(&expected.layout_cid).await.unwrap(),
            "the old image's pin is released"
        );

        // 5. The operator's IPFS daemon is down: a condition with a reason, phase stays Importing.
        let other = object("other", source_spec(&source));
        let (result, (importing, failed, _), metrics) =
            reconcile_with(&other, dead_ipfs(), config.clone(), |mut api| {
                let echo = other.clone();
                async move {
                    let importing = api.status_patch(&echo).await;
                    let failed = api.status_patch(&echo).await;
                    let event = api.event(&echo, "Warning", "IpfsUnavailable").await;
                    api.done().await;
                    (importing, failed, event)
                }
            })
            .await;
        assert_eq!(result.unwrap_err().reason(), Some(Reason::IpfsUnavailable));
        assert_eq!(patched_status(&importing).phase, Some(Phase::Importing));
        let failed = patched_status(&failed);
        assert_eq!(
            failed.phase,
            Some(Phase::Importing),
            "an outage is transient"
        );
        assert_eq!(condition(&failed, types::READY).reason, "IpfsUnavailable");
        assert!(
            condition(&failed, types::IMPORTED).message.contains("IPFS"),
            "{failed:?}"
        );
        assert_eq!(
            metrics
                .failures
                .with_label_values(&["IpfsUnavailable"])
                .get(),
            1
        );
    });
}

#[test]
fn adopting_a_cid_verifies_and_pins_the_same_layout() {
    let dir = tempfile::tempdir().unwrap();
    let layout = build_busybox_layout(dir.path()).unwrap();
    let registry = Registry::start().unwrap();
    push_layout(
        &layout,
        TestImage::MULTI,
        &registry,
        "multi:1",
        PushFormat::OciIndex,
    )
    .unwrap();
    let daemon = IpfsDaemon::start().unwrap();
    block_on(async {
        let ipfs = kubo(&daemon);
        let reference: Reference = format!("{}/multi:1", registry.addr).parse().unwrap();
        let plain = SourceRegistry::new(&SourceOptions {
            plain_http: true,
            ..Default::default()
        });
        let image = convert(&ipfs, &plain, &reference, &ConvertOptions::default())
            .await
            .unwrap();
        ipfs.pin_rm(&image.layout_cid).await.unwrap();
        let cid = to_base32(&image.root_cid);

        let obj = object(
            "adopted",
            IpfsImageSpec {
                cid: Some(cid.clone()),
                ..Default::default()
            },
        );
        let (result, (importing, ready, _), _) =
            reconcile_with(&obj, kubo(&daemon), Config::default(), |mut api| {
                let echo = obj.clone();
                async move {
                    let importing = api.status_patch(&echo).await;
                    let ready = api.status_patch(&echo).await;
                    let event = api.event(&echo, "Normal", "Adopted").await;
                    api.done().await;
                    (importing, ready, event)
                }
            })
            .await;
        assert_eq!(result.unwrap(), requeue(Duration::from_secs(3600)));
        assert_eq!(patched_status(&importing).phase, Some(Phase::Importing));
        let status = patched_status(&ready);
        assert_eq!(status.phase, Some(Phase::Ready));
        assert_eq!(status.cid.as_deref(), Some(cid.as_str()));
        assert_eq!(
            status.layout_cid,
            Some(to_base32(&image.layout_cid)),
            "adoption rebuilds the very layout convert made"
        );
        assert_eq!(status.size, Some(image.total_size as i64));
        assert_eq!(status.source_digest, Some(image.source_digest.to_string()));
        assert_eq!(status.platforms, ["linux/amd64", "linux/arm64"]);
        assert_eq!(condition(&status, types::IMPORTED).reason, "Adopted");
        assert!(ipfs.is_pinned(&image.layout_cid).await.unwrap());
    });
}

#[test]
fn delete_unpins_only_when_no_other_object_holds_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let layout = build_busybox_layout(dir.path()).unwrap();
    let registry = Registry::start().unwrap();
    push_layout(
        &layout,
        TestImage::AMD64,
        &registry,
        "busybox:1",
        PushFormat::Oci,
    )
    .unwrap();
    let daemon = IpfsDaemon::start().unwrap();
    block_on(async {
        let ipfs = kubo(&daemon);
        let source = format!("{}/busybox:1", registry.addr);
        let plain = SourceRegistry::new(&SourceOptions {
            plain_http: true,
            ..Default::default()
        });
        let image = convert(
            &ipfs,
            &plain,
            &source.parse().unwrap(),
            &ConvertOptions::default(),
        )
        .await
        .unwrap();
        let status = IpfsImageStatus {
            phase: Some(Phase::Ready),
            cid: Some(to_base32(&image.root_cid)),
            layout_cid: Some(to_base32(&image.layout_cid)),
            observed_generation: Some(1),
            ..Default::default()
        };
        let mut deleting = with_status(&object("a", source_spec(&source)), status.clone());
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        let mut second = with_status(&object("b", source_spec(&source)), status.clone());
        second.metadata.namespace = Some("team-b".into());

        // Another namespace's object holds the same layout: the pin stays, the finalizer goes.
        let (result, removal, _) =
            reconcile_with(&deleting, kubo(&daemon), Config::default(), |mut api| {
                let (echo, second) = (deleting.clone(), second.clone());
                async move {
                    api.list_all(&[&echo, &second]).await;
                    let removal = api.finalizer_patch(&echo).await;
                    api.done().await;
                    removal
                }
            })
            .await;
        assert_eq!(result.unwrap(), Action::await_change());
        assert_eq!(
            removal.body[1],
            json!({"op": "remove", "path": "/metadata/finalizers/0"})
        );
        assert!(
            ipfs.is_pinned(&image.layout_cid).await.unwrap(),
            "still used by team-b/b"
        );

        // The last holder goes: unpinned, an Event, then the finalizer is removed.
        let (result, (), _) =
            reconcile_with(&deleting, kubo(&daemon), Config::default(), |mut api| {
                let echo = deleting.clone();
                async move {
                    api.list_all(&[&echo]).await;
                    api.event(&echo, "Normal", "Unpinned").await;
                    api.finalizer_patch(&echo).await;
                    api.done().await;
                }
            })
            .await;
        assert_eq!(result.unwrap(), Action::await_change());
        assert!(
            !ipfs.is_pinned(&image.layout_cid).await.unwrap(),
            "unpinned"
        );
    });
}

/// Status and Event of a failure that happens before any IPFS work: phase `Failed`.
async fn expect_failure(
    obj: &ipfs_image_api::IpfsImage,
    config: Config,
    secret: Option<(&str, Option<serde_json::Value>)>,
    importing: bool,
    reason: Reason,
) -> IpfsImageStatus {
    expect_failure_with(
        obj,
        dead_ipfs(),
        config,
        secret,
        importing,
        reason,
        Phase::Failed,
    )
    .await
}

/// The exact writes of a failed reconcile: (a Secret read,) (phase Importing,) the failure
/// status with `reason` on Imported and Ready and the phase `phase`, one Warning Event with
/// `reason`; then nothing. The failure is counted under `reason` and retried after the first
/// backoff step.
async fn expect_failure_with<S: IpfsStore + 'static>(
    obj: &ipfs_image_api::IpfsImage,
    ipfs: S,
    config: Config,
    secret: Option<(&str, Option<serde_json::Value>)>,
    importing: bool,
    reason: Reason,
    phase: Phase,
) -> IpfsImageStatus {
    let secret = secret.map(|(n, s)| (n.to_owned(), s));
    let first_backoff = config.backoff(1);
    let (result, retry, (failed, event), metrics) =
        reconcile_and_retry(obj, ipfs, config, |mut api| {
            let echo = obj.clone();
            async move {
                if let Some((name, secret)) = secret {
                    api.secret(&name, secret).await;
                }
                if importing {
                    let c = api.status_patch(&echo).await;
                    assert_eq!(patched_status(&c).phase, Some(Phase::Importing));
                }
                let failed = api.status_patch(&echo).await;
                let event = api.event(&echo, "Warning", reason.as_str()).await;
                api.done().await;
                (failed, event)
            }
        })
        .await;
    let error = result.unwrap_err();
    assert_eq!(error.reason(), Some(reason), "{error}");
    assert_eq!(
        retry,
        Some(Action::requeue(first_backoff)),
        "retried with backoff"
    );
    assert_eq!(
        metrics.failures.with_label_values(&[reason.as_str()]).get(),
        1
    );
    let status = patched_status(&failed);
    assert_eq!(status.phase, Some(phase), "{status:?}");
    for type_ in [types::IMPORTED, types::READY] {
        let c = condition(&status, type_);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", reason.as_str())
        );
        assert!(!c.message.is_empty());
    }
    assert_eq!(
        event.body["note"].as_str(),
        Some(condition(&status, types::READY).message.as_str()),
        "the Event says what the condition says"
    );
    status
}

#[test]
fn bad_input_and_registry_errors_become_reasons() {
    let registry = Registry::start().unwrap();
    block_on(async {
        let config = config_for(&registry.addr);

        // Unparsable reference: no registry or IPFS call; a retry of the same failure writes nothing.
        let bad = object("bad", source_spec("Not A Reference!!"));
        let status =
            expect_failure(&bad, config.clone(), None, false, Reason::InvalidReference).await;
        assert!(
            condition(&status, types::READY)
                .message
                .contains("Not A Reference!!")
        );
        let (result, (), _) = reconcile_with(
            &with_status(&bad, status),
            dead_ipfs(),
            config.clone(),
            |api| api.done(),
        )
        .await;
        assert_eq!(result.unwrap_err().reason(), Some(Reason::InvalidReference));

        // A pull Secret that does not exist.
        let spec = IpfsImageSpec {
            image_pull_secrets: vec![PullSecretReference {
                name: "regcred".into(),
            }],
            ..source_spec(&format!("{}/busybox:1", registry.addr))
        };
        let status = expect_failure(
            &object("nosecret", spec.clone()),
            config.clone(),
            Some(("regcred", None)),
            false,
            Reason::SecretNotFound,
        )
        .await;
        assert!(
            condition(&status, types::READY)
                .message
                .contains("team-a/regcred")
        );

        // A Secret of the wrong type.
        let opaque = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "regcred", "namespace": NS}, "type": "Opaque", "data": {}});
        expect_failure(
            &object("opaque", spec),
            config.clone(),
            Some(("regcred", Some(opaque))),
            false,
            Reason::SecretInvalid,
        )
        .await;

        // Nothing under that name in the registry.
        let missing = object(
            "missing",
            source_spec(&format!("{}/nothing:here", registry.addr)),
        );
        expect_failure(
            &missing,
            config.clone(),
            None,
            true,
            Reason::RegistryNotFound,
        )
        .await;
    });
}

#[test]
fn registry_401_is_unauthorized() {
    let registry = Registry::start_with(Some(("u", "p"))).unwrap();
    block_on(async {
        let config = config_for(&registry.addr);
        let obj = object(
            "private",
            source_spec(&format!("{}/busybox:1", registry.addr)),
        );
        let status = expect_failure(
            &obj,
            config.clone(),
            None,
            true,
            Reason::RegistryUnauthorized,
        )
        .await;
        assert!(!condition(&status, types::READY).message.is_empty());

        // Wrong credentials from a proper dockerconfigjson Secret are unauthorized as well.
        use base64::Engine as _;
        let docker_config =
            json!({"auths": {registry.addr.clone(): {"username": "u", "password": "wrong"}}});
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(&docker_config).unwrap());
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "regcred", "namespace": NS},
            "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": encoded}});
        let spec = IpfsImageSpec {
            image_pull_secrets: vec![PullSecretReference {
                name: "regcred".into(),
            }],
            ..source_spec(&format!("{}/busybox:1", registry.addr))
        };
        expect_failure(
            &object("wrongpass", spec),
            config,
            Some(("regcred", Some(secret))),
            true,
            Reason::RegistryUnauthorized,
        )
        .await;
    });
}

#[test]
fn backoff_grows_per_object_and_is_capped() {
    let config = Config::default();
    let delays: Vec<u64> = (1..=8).map(|n| config.backoff(n).as_secs()).collect();
    assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300]);
}

#[test]
fn only_spec_deletion_finalizers_and_node_pins_trigger_reconciles() {
    use ipfs_image_operator::controller::relevant_change;
    let obj = object("x", source_spec("registry.example/app:1"));
    let base = relevant_change(&obj);
    // The operator's own status writes do not trigger a reconcile (no write loop).
    let own = with_status(
        &obj,
        IpfsImageStatus {
            phase: Some(Phase::Failed),
            cid: Some("bafy".into()),
            ..Default::default()
        },
    );
    assert_eq!(relevant_change(&own), base);
    let mut spec_change = obj.clone();
    spec_change.metadata.generation = Some(2);
    assert_ne!(relevant_change(&spec_change), base);
    let mut deleting = obj.clone();
    deleting.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    assert_ne!(relevant_change(&deleting), base);
    let mut node_pin = own.clone();
    node_pin
        .status
        .as_mut()
        .unwrap()
        .nodes
        .push(ipfs_image_api::NodeStatus {
            node: "n1".into(),
            cid: Some("bafy".into()),
            pinned: true,
            bytes: None,
            message: None,
            last_transition_time: None,
        });
    assert_ne!(relevant_change(&node_pin), base);
}

/// What the proxy answers for manifest requests (`None`: forward to the registry), switchable
/// while it runs.
#[derive(Clone, Default)]
struct Switch(Arc<Mutex<Option<Answer>>>);

impl Switch {
    fn set(&self, answer: Option<Answer>) {
        *self.0.lock().unwrap() = answer;
    }
}

/// A proxy in front of `registry` whose answer to `GET …/manifests/…` the test switches.
fn switched_proxy(registry: &Registry) -> (HttpProxy, Switch) {
    let switch = Switch::default();
    let answer = switch.clone();
    let proxy = HttpProxy::start(&registry.addr, move |method, path| {
        (method == "GET" && path.contains("/manifests/"))
            .then(|| answer.0.lock().unwrap().clone())
            .flatten()
    })
    .unwrap();
    (proxy, switch)
}

fn registry_with_busybox() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let layout = build_busybox_layout(dir.path()).unwrap();
    let registry = Registry::start().unwrap();
    push_layout(
        &layout,
        TestImage::AMD64,
        &registry,
        "busybox:1",
        PushFormat::Oci,
    )
    .unwrap();
    (dir, registry)
}

fn plain_registry() -> SourceRegistry {
    SourceRegistry::new(&SourceOptions {
        plain_http: true,
        ..Default::default()
    })
}

#[test]
fn registry_403_is_forbidden() {
    let (_dir, registry) = registry_with_busybox();
    let (proxy, switch) = switched_proxy(&registry);
    block_on(async {
        let source = format!("{}/busybox:1", proxy.addr);
        let config = config_for(&proxy.addr);
        // Through the proxy the image is there: the 403s below are the only difference.
        plain_registry()
            .fetch_manifest(&source.parse().unwrap())
            .await
            .unwrap();

        // The registry's own refusal: 403 with a DENIED error envelope.
        switch.set(Some(Answer::oci_error(
            403,
            "DENIED",
            "requested access to the resource is denied",
        )));
        let status = expect_failure(
            &object("denied", source_spec(&source)),
            config.clone(),
            None,
            true,
            Reason::RegistryForbidden,
        )
        .await;
        let message = &condition(&status, types::READY).message;
        assert!(
            message.starts_with("the registry denies these credentials access")
                && message.contains("requested access to the resource is denied")
                && message.contains("busybox:1"),
            "{message}"
        );

        // A bare 403 without an envelope (a proxy or WAF in front of the registry).
        switch.set(Some(Answer::text(403, "blocked by policy")));
        let status = expect_failure(
            &object("blocked", source_spec(&source)),
            config,
            None,
            true,
            Reason::RegistryForbidden,
        )
        .await;
        let message = &condition(&status, types::READY).message;
        assert!(
            message.contains("403") && message.contains("blocked by policy"),
            "{message}"
        );
    });
    let log = proxy.requests();
    assert!(
        log.contains(&"GET /v2/busybox/manifests/1 -> 200".to_owned()),
        "{log:?}"
    );
    assert_eq!(
        log.iter()
            .filter(|l| *l == "GET /v2/busybox/manifests/1 -> 403 (proxy)")
            .count(),
        2,
        "{log:?}"
    );
}

#[test]
fn registry_outages_are_transient_and_recover() {
    let (_dir, registry) = registry_with_busybox();
    let (proxy, switch) = switched_proxy(&registry);
    let daemon = IpfsDaemon::start().unwrap();
    block_on(async {
        let source = format!("{}/busybox:1", proxy.addr);
        let config = config_for(&proxy.addr);
        let mut failed = Vec::new();
        for (name, answer, says) in [
            ("e500", Answer::text(500, "internal error"), "500"),
            (
                "e503",
                Answer::text(503, "maintenance").with_header("retry-after", "30"),
                "503",
            ),
            (
                "e429",
                Answer::oci_error(429, "TOOMANYREQUESTS", "pull rate limit exceeded"),
                "pull rate limit exceeded",
            ),
        ] {
            switch.set(Some(answer));
            let obj = object(name, source_spec(&source));
            let status = expect_failure_with(
                &obj,
                dead_ipfs(),
                config.clone(),
                None,
                true,
                Reason::RegistryUnavailable,
                Phase::Importing,
            )
            .await;
            let message = &condition(&status, types::READY).message;
            assert!(
                message.starts_with("the registry is unavailable") && message.contains(says),
                "{message}"
            );
            failed.push(with_status(&obj, status));
        }

        // Nothing listens at all.
        let down = format!("127.0.0.1:{}", testkit::free_port());
        expect_failure_with(
            &object("down", source_spec(&format!("{down}/busybox:1"))),
            dead_ipfs(),
            config_for(&down),
            None,
            true,
            Reason::RegistryUnavailable,
            Phase::Importing,
        )
        .await;

        // The retry of an outage that goes on writes nothing, and is retried again.
        let still_down = failed.pop().unwrap();
        switch.set(Some(Answer::oci_error(
            429,
            "TOOMANYREQUESTS",
            "pull rate limit exceeded",
        )));
        let (result, retry, (), metrics) =
            reconcile_and_retry(&still_down, dead_ipfs(), config.clone(), |api| api.done()).await;
        assert_eq!(
            result.unwrap_err().reason(),
            Some(Reason::RegistryUnavailable)
        );
        assert_eq!(retry, Some(Action::requeue(Duration::from_secs(5))));
        assert_eq!(
            metrics
                .failures
                .with_label_values(&["RegistryUnavailable"])
                .get(),
            1
        );

        // The registry is back: the next retry imports.
        switch.set(None);
        let (result, retry, (ready, _), _) =
            reconcile_and_retry(&still_down, kubo(&daemon), config, |mut api| {
                let echo = still_down.clone();
                async move {
                    let ready = api.status_patch(&echo).await;
                    let event = api.event(&echo, "Normal", "Imported").await;
                    api.done().await;
                    (ready, event)
                }
            })
            .await;
        assert_eq!(result.unwrap(), requeue(Duration::from_secs(3600)));
        assert_eq!(retry, None);
        let status = patched_status(&ready);
        assert_eq!(status.phase, Some(Phase::Ready));
        for type_ in [types::IMPORTED, types::READY] {
            assert_eq!(condition(&status, type_).status, "True");
        }
    });
    let log = proxy.requests();
    assert_eq!(
        log.iter().filter(|l| l.ends_with("(proxy)")).count(),
        4,
        "{log:?}"
    );
}

#[test]
fn oversized_manifests_are_manifest_too_large() {
    let (_dir, registry) = registry_with_busybox();
    // An index whose descriptor declares its manifest over the limit. The registry takes it: on
    // a push it checks that the manifest exists, not the size the index claims for it.
    let amd64 = block_on(async {
        plain_registry()
            .fetch_manifest(&format!("{}/busybox:1", registry.addr).parse().unwrap())
            .await
            .unwrap()
            .digest
    });
    let declared = MAX_MANIFEST_BYTES + 1;
    let index = json!({"schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "manifests": [{
        "mediaType": media_type::OCI_MANIFEST, "digest": amd64.to_string(), "size": declared,
        "platform": {"os": "linux", "architecture": "amd64"}}]});
    registry
        .put_manifest(
            "busybox",
            "big-index",
            media_type::OCI_INDEX,
            &serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();

    // A manifest that is over the limit as served (the registry refuses to store one, so the
    // proxy serves it): a valid OCI manifest with 4 MiB of annotation.
    let huge = json!({"schemaVersion": 2, "mediaType": media_type::OCI_MANIFEST,
        "config": {"mediaType": media_type::OCI_CONFIG, "digest": Digest::of(b"{}").to_string(), "size": 2},
        "layers": [], "annotations": {"padding": "x".repeat(MAX_MANIFEST_BYTES as usize)}});
    let huge = serde_json::to_vec(&huge).unwrap();
    let huge_len = huge.len();
    let huge_answer = Answer {
        status: 200,
        headers: vec![
            ("content-type".into(), media_type::OCI_MANIFEST.into()),
            (
                "docker-content-digest".into(),
                Digest::of(&huge).to_string(),
            ),
        ],
        body: huge,
        stall: false,
    };
    let proxy = HttpProxy::start(&registry.addr, move |method, path| {
        (method == "GET" && path == "/v2/huge/manifests/1").then(|| huge_answer.clone())
    })
    .unwrap();
    let daemon = IpfsDaemon::start().unwrap();
    block_on(async {
        let status = expect_failure(
            &object("huge", source_spec(&format!("{}/huge:1", proxy.addr))),
            config_for(&proxy.addr),
            None,
            true,
            Reason::ManifestTooLarge,
        )
        .await;
        let message = &condition(&status, types::READY).message;
        assert!(
            message.contains(&format!(
                "huge:1 is {huge_len} bytes, over the {MAX_MANIFEST_BYTES} byte limit"
            )),
            "{message}"
        );

        // The declared size is refused before the manifest is requested; the top index was
        // already stored, so this one needs the real IPFS daemon.
        let status = expect_failure_with(
            &object(
                "big-index",
                source_spec(&format!("{}/busybox:big-index", registry.addr)),
            ),
            kubo(&daemon),
            config_for(&registry.addr),
            None,
            true,
            Reason::ManifestTooLarge,
            Phase::Failed,
        )
        .await;
        let message = &condition(&status, types::READY).message;
        assert!(
            message.contains(&amd64.to_string()) && message.contains(&format!("{declared} bytes")),
            "{message}"
        );
    });
    let log = proxy.requests();
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("/manifests/"))
            .collect::<Vec<_>>(),
        ["GET /v2/huge/manifests/1 -> 200 (proxy)"],
        "one manifest request, answered by the proxy: {log:?}"
    );
}

fn cid_spec(cid: &Cid) -> IpfsImageSpec {
    IpfsImageSpec {
        cid: Some(to_base32(cid)),
        ..Default::default()
    }
}

/// Adopting a CID that is not an image fails the object with the reason, naming the CID; with
/// the operator's IPFS daemon down it stays Importing. (Images at and beyond resolve's limits
/// are ipfs-oci's `tests/resolve.rs`; the reason of each refusal is `controller/error.rs`'s.)
#[test]
fn adopted_cids_that_are_not_images_become_reasons() {
    let daemon = IpfsDaemon::start().unwrap();
    block_on(async {
        let ipfs = kubo(&daemon);
        let not_image = ipfs
            .add_bytes(Bytes::from_static(br#"{"hello":"world"}"#))
            .await
            .unwrap()
            .cid;
        let status = expect_failure_with(
            &object("notimage", cid_spec(&not_image)),
            kubo(&daemon),
            Config::default(),
            None,
            true,
            Reason::InvalidImage,
            Phase::Failed,
        )
        .await;
        let message = condition(&status, types::READY).message.clone();
        assert!(message.contains(&to_base32(&not_image)), "{message}");
        assert!(message.contains("not an OCI descriptor"), "{message}");

        expect_failure_with(
            &object("offline", cid_spec(&not_image)),
            dead_ipfs(),
            Config::default(),
            None,
            true,
            Reason::IpfsUnavailable,
            Phase::Importing,
        )
        .await;
    });
}
