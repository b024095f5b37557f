//! The agent's Kubernetes side against a faked API (every write asserted exactly) with a real
//! IPFS daemon below it: catalog from IpfsImages, prefetch pins, this node's status entries,
//! and peering.

use ipfs_image_agent::{catalog, cluster};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use catalog::{Catalog, CatalogEntry};
use cluster::catalog_sync::catalog_entries;
use cluster::peering::{Peering, PodPeers};
use cluster::{ClusterConfig, Report, Reporter};
use ipfs_image_api::IpfsImage;
use ipfs_image_api::peer::{PEER_ANNOTATION, PeerInfo};
use ipfs_oci::content_id::to_base32;
use ipfs_oci::convert::{ConvertOptions, convert};
use ipfs_oci::ipfs::{IpfsStore, KuboClient, KuboOptions};
use ipfs_oci::source::{SourceOptions, SourceRegistry};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::{Value, json};
use testkit::fake_api::{FakeApi, WAIT};
use testkit::{IpfsDaemon, IpfsNet, Registry, block_on};
use tokio::sync::mpsc;

const IMAGES: &str = "/apis/ipfsimage.dev/v1alpha1/ipfsimages";
const NODES: &str = "/api/v1/nodes";
const NS: &str = "team-a";
const CID_A: &str = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
const CID_B: &str = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";

fn image(name: &str, spec: Value, status: Value) -> Value {
    json!({
        "apiVersion": "ipfsimage.dev/v1alpha1",
        "kind": "IpfsImage",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "generation": 1},
        "spec": spec,
        "status": status,
    })
}

fn node(labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1", "labels": labels}})
}

fn typed(v: &Value) -> IpfsImage {
    serde_json::from_value(v.clone()).unwrap()
}

async fn next_report(
    rx: &mut mpsc::UnboundedReceiver<Report>,
    want: impl Fn(&Report) -> bool,
) -> Report {
    loop {
        let r = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("no report came")
            .expect("agent stopped");
        if want(&r) {
            return r;
        }
    }
}

#[test]
fn catalog_holds_ready_mirrored_sources_only() {
    let objects = [
        image(
            "ready",
            json!({"source": "registry.test/app:1"}),
            json!({"phase": "Ready", "cid": CID_A}),
        ),
        image(
            "pending",
            json!({"source": "registry.test/app:2"}),
            json!({"phase": "Pinning", "cid": CID_B}),
        ),
        image(
            "unmirrored",
            json!({"source": "registry.test/app:3", "mirror": false}),
            json!({"phase": "Ready", "cid": CID_B}),
        ),
        image(
            "adopted",
            json!({"cid": CID_B}),
            json!({"phase": "Ready", "cid": CID_B}),
        ),
        image(
            "no-status",
            json!({"source": "registry.test/app:4"}),
            Value::Null,
        ),
        image(
            "bad-cid",
            json!({"source": "registry.test/app:5"}),
            json!({"phase": "Ready", "cid": "nope"}),
        ),
        image(
            "hub",
            json!({"source": "nginx:1.25"}),
            json!({"phase": "Ready", "cid": CID_B}),
        ),
        image(
            "same",
            json!({"source": "registry.test/app:1"}),
            json!({"phase": "Ready", "cid": CID_A}),
        ),
    ];
    let objects: Vec<IpfsImage> = objects.iter().map(typed).collect();
    let entries = catalog_entries(&objects);
    let got: Vec<(&str, String)> = entries
        .iter()
        .map(|e| (e.source.as_str(), to_base32(&e.cid)))
        .collect();
    assert_eq!(
        got,
        [
            ("nginx:1.25", CID_B.to_owned()),
            ("registry.test/app:1", CID_A.to_owned())
        ],
        "Ready + mirror + source only, once each"
    );
    assert_eq!(entries[0].registry, "docker.io");
    assert_eq!(entries[0].repository, "library/nginx");
    assert!(catalog_entries(&[]).is_empty());
}

struct Converted {
    _registry: Registry,
    _dir: tempfile::TempDir,
    source: String,
    root: String,
    layout: cid::Cid,
    size: u64,
}

/// A real image converted into `daemon` (then unpinned: the agent is to pin it).
fn convert_busybox(daemon: &IpfsDaemon) -> Converted {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = testkit::registry_with_busybox(dir.path()).unwrap();
    let client = KuboClient::new(&daemon.api_url, KuboOptions::default()).unwrap();
    let source = format!("{}/test/busybox:1", registry.addr);
    let plain = SourceRegistry::new(&SourceOptions {
        plain_http: true,
        ..Default::default()
    });
    let image = block_on(async {
        let image = convert(
            &client,
            &plain,
            &source.parse().unwrap(),
            &ConvertOptions::default(),
        )
        .await
        .unwrap();
        client.pin_rm(&image.layout_cid).await.unwrap();
        image
    });
    Converted {
        _registry: registry,
        _dir: dir,
        source,
        root: to_base32(&image.root_cid),
        layout: image.layout_cid,
        size: image.total_size,
    }
}

/// The apply the agent must send for `name`: this node's entry only (time checked, then dropped).
fn assert_apply(c: &testkit::fake_api::Captured, name: &str, entry: Option<Value>) {
    assert_eq!(c.method, "PATCH");
    assert_eq!(
        c.path,
        format!("/apis/ipfsimage.dev/v1alpha1/namespaces/{NS}/ipfsimages/{name}/status")
    );
    let q = c.query_pairs();
    assert_eq!(
        q.get("fieldManager").map(String::as_str),
        Some("ipfs-image-agent-node-1"),
        "{}",
        c.query
    );
    assert_eq!(
        q.get("force").map(String::as_str),
        Some("true"),
        "{}",
        c.query
    );
    assert_eq!(q.len(), 2, "{}", c.query);
    assert_eq!(c.content_type, "application/apply-patch+yaml");
    let mut body = c.body.clone();
    let status = match entry {
        Some(mut e) => {
            let sent = body["status"]["nodes"][0]
                .as_object_mut()
                .expect("one node entry")
                .remove("lastTransitionTime")
                .expect("lastTransitionTime");
            assert!(sent.as_str().unwrap().ends_with('Z'), "{sent}");
            e["node"] = json!("node-1");
            json!({"nodes": [e]})
        }
        None => json!({}),
    };
    assert_eq!(
        body,
        json!({
            "apiVersion": "ipfsimage.dev/v1alpha1",
            "kind": "IpfsImage",
            "metadata": {"name": name, "namespace": NS},
            "status": status,
        })
    );
}

#[test]
fn prefetch_pins_reports_and_unpins_only_its_own() {
    let daemon = IpfsDaemon::start().unwrap();
    let image_a = convert_busybox(&daemon);
    let state = tempfile::tempdir().unwrap();
    let ipfs = Arc::new(KuboClient::new(&daemon.api_url, KuboOptions::default()).unwrap());
    block_on(async {
        // A pin somebody else made, and content for an image selected by a label that goes away.
        let foreign = ipfs
            .add_bytes(Bytes::from_static(b"pinned by someone else"))
            .await
            .unwrap()
            .cid;
        ipfs.pin_add(&foreign).await.unwrap();
        let ssd = ipfs
            .add_bytes(Bytes::from_static(b"kept on ssd nodes"))
            .await
            .unwrap()
            .cid;
        let (layout, foreign_s, ssd_s) = (
            to_base32(&image_a.layout),
            to_base32(&foreign),
            to_base32(&ssd),
        );

        let (client, fake, mut writes) = FakeApi::start();
        fake.collection(IMAGES, "IpfsImageList");
        fake.collection(NODES, "NodeList");
        fake.put(NODES, node(json!({"pool": "cache", "disk": "ssd"})));
        let ready = |cid: &str, layout: &str, size: u64| json!({"phase": "Ready", "cid": cid, "layoutCid": layout, "size": size});
        fake.put(
            IMAGES,
            image(
                "app",
                json!({"source": image_a.source, "prefetch": {"nodeSelector": {"pool": "cache"}}}),
                ready(&image_a.root, &layout, image_a.size),
            ),
        );
        fake.put(
            IMAGES,
            image(
                "foreign",
                json!({"cid": foreign_s, "prefetch": {"nodeSelector": {}}}),
                ready(&foreign_s, &foreign_s, 22),
            ),
        );
        fake.put(
            IMAGES,
            image(
                "ssd",
                json!({"cid": ssd_s, "prefetch": {"nodeSelector": {"disk": "ssd"}}}),
                ready(&ssd_s, &ssd_s, 17),
            ),
        );
        fake.put(
            IMAGES,
            image(
                "gpu-only",
                json!({"cid": CID_A, "prefetch": {"nodeSelector": {"pool": "gpu"}}}),
                ready(CID_A, CID_A, 5),
            ),
        );
        fake.put(
            IMAGES,
            image(
                "mirror-only",
                json!({"source": "registry.test/other:1"}),
                json!({"phase": "Ready", "cid": CID_B}),
            ),
        );

        let catalog = Arc::new(Catalog::default());
        let file = Arc::new(Catalog::default());
        file.replace(vec![
            CatalogEntry::new("registry.test/from-file:1", CID_A).unwrap(),
        ]);
        let (tx, mut reports) = mpsc::unbounded_channel();
        let config = ClusterConfig {
            node_name: "node-1".into(),
            state_dir: state.path().join("agent"),
            status_interval: Duration::from_secs(2),
            pod: None,
            peer_selector: None,
            peer_interval: Duration::from_secs(30),
            static_peers: vec![],
        };
        let agent = cluster::start(
            client,
            ipfs.clone(),
            catalog.clone(),
            Some(file),
            config,
            Reporter::new(tx),
        )
        .unwrap();

        // Catalog: the Ready mirrored sources, plus the file's entry.
        next_report(&mut reports, |r| matches!(r, Report::Catalog(_))).await;
        let mut sources: Vec<String> = catalog
            .snapshot()
            .iter()
            .map(|e| e.source.clone())
            .collect();
        sources.sort();
        assert_eq!(
            sources,
            [
                image_a.source.clone(),
                "registry.test/from-file:1".into(),
                "registry.test/other:1".into()
            ]
        );

        // Pins: the matching images; the foreign pin is left as it is (and not recorded).
        let first = next_report(&mut reports, |r| matches!(r, Report::Prefetch { .. })).await;
        let mut expected_pins = vec![layout.clone(), ssd_s.clone()];
        expected_pins.sort();
        match first {
            Report::Prefetch {
                mut pinned,
                unpinned,
            } => {
                pinned.sort();
                assert_eq!(pinned, expected_pins);
                assert!(unpinned.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(ipfs.is_pinned(&image_a.layout).await.unwrap());
        assert!(ipfs.is_pinned(&ssd).await.unwrap());
        let record: Value =
            serde_json::from_slice(&std::fs::read(state.path().join("agent/pins.json")).unwrap())
                .unwrap();
        assert_eq!(record, json!({"pins": expected_pins}));

        // Status: one apply per matching object, this node's entry only, in key order.
        assert_apply(
            &writes.next().await,
            "app",
            Some(json!({"cid": image_a.root, "pinned": true, "bytes": image_a.size})),
        );
        assert_apply(
            &writes.next().await,
            "foreign",
            Some(json!({"cid": foreign_s, "pinned": true, "bytes": 22})),
        );
        let ssd_first = writes.next().await;
        assert_apply(
            &ssd_first,
            "ssd",
            Some(json!({"cid": ssd_s, "pinned": true, "bytes": 17})),
        );

        // The object goes: its pin goes (the agent made it); nothing is written for it.
        fake.delete(IMAGES, NS, "app");
        let r = next_report(&mut reports, |r| matches!(r, Report::Prefetch { .. })).await;
        assert_eq!(
            r,
            Report::Prefetch {
                pinned: vec![],
                unpinned: vec![layout.clone()]
            }
        );
        assert!(!ipfs.is_pinned(&image_a.layout).await.unwrap());

        // A pin the agent did not make is never removed.
        fake.delete(IMAGES, NS, "foreign");
        let r = next_report(&mut reports, |r| matches!(r, Report::Prefetch { .. })).await;
        assert_eq!(
            r,
            Report::Prefetch {
                pinned: vec![],
                unpinned: vec![]
            }
        );
        assert!(
            ipfs.is_pinned(&foreign).await.unwrap(),
            "a foreign pin survives"
        );

        // The node stops matching: unpinned, and the entry is released — but not before the
        // status interval since the last write of that object.
        fake.put(NODES, node(json!({"pool": "cache"})));
        let r = next_report(&mut reports, |r| matches!(r, Report::Prefetch { .. })).await;
        assert_eq!(
            r,
            Report::Prefetch {
                pinned: vec![],
                unpinned: vec![ssd_s.clone()]
            }
        );
        assert!(!ipfs.is_pinned(&ssd).await.unwrap());
        let ssd_release = writes.next().await;
        assert_apply(&ssd_release, "ssd", None);
        let gap = ssd_release.at - ssd_first.at;
        assert!(gap >= Duration::from_secs(2), "rate limit: {gap:?}");
        assert!(ipfs.is_pinned(&foreign).await.unwrap());
        drop(agent);

        // RBAC: the agent reads IpfsImages and Nodes, and writes only ipfsimages/status.
        let mut verbs = fake.verbs();
        verbs.sort();
        verbs.dedup();
        for v in &verbs {
            assert!(
                [
                    format!("GET {IMAGES}"),
                    format!("GET (watch) {IMAGES}"),
                    format!("GET {NODES}"),
                    format!("GET (watch) {NODES}"),
                    format!("PATCH /apis/ipfsimage.dev/v1alpha1/namespaces/{NS}/ipfsimages/foreign/status"),
                    format!("PATCH /apis/ipfsimage.dev/v1alpha1/namespaces/{NS}/ipfsimages/app/status"),
                    format!("PATCH /apis/ipfsimage.dev/v1alpha1/namespaces/{NS}/ipfsimages/ssd/status"),
                ]
                .contains(v),
                "unexpected request {v}; all: {verbs:#?}"
            );
        }
        assert_eq!(
            fake.verbs()
                .iter()
                .filter(|v| v.starts_with("PATCH"))
                .count(),
            4,
            "one write per change"
        );
    });
}

#[test]
fn peering_publishes_this_peer_and_connects_to_the_others() {
    let a = IpfsDaemon::start().unwrap();
    let b = IpfsDaemon::start().unwrap();
    let ipfs_a = Arc::new(KuboClient::new(&a.api_url, KuboOptions::default()).unwrap());
    let ipfs_b = KuboClient::new(&b.api_url, KuboOptions::default()).unwrap();
    const PODS: &str = "/api/v1/namespaces/ipfs-system/pods";
    block_on(async {
        let id_a = ipfs_a.id().await.unwrap();
        let id_b = ipfs_b.id().await.unwrap();
        let (client, fake, mut writes) = FakeApi::start();
        fake.collection(PODS, "PodList");
        let pod = |name: &str, annotation: Option<String>| {
            let mut p = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "ipfs-system", "labels": {"app.kubernetes.io/component": "agent"}}});
            if let Some(a) = annotation {
                p["metadata"]["annotations"] = json!({PEER_ANNOTATION: a});
            }
            p
        };
        fake.put(PODS, pod("agent-a", None));
        let b_peer = json!({"id": id_b.peer_id, "addrs": [b.swarm_multiaddr()]}).to_string();
        fake.put(PODS, pod("agent-b", Some(b_peer)));

        let (tx, mut reports) = mpsc::unbounded_channel();
        let peering = Peering {
            pods: Some(PodPeers {
                pods: Api::<Pod>::namespaced(client, "ipfs-system"),
                own_pod: "agent-a".into(),
                selector: Some("app.kubernetes.io/component=agent".into()),
            }),
            static_peers: vec![],
            interval: Duration::from_secs(30),
            reporter: Reporter::new(tx),
        };
        let task = tokio::spawn(peering.run(ipfs_a.clone()));

        // Published: a merge patch of the annotation on its own Pod, nothing else.
        let w = writes.next().await;
        assert_eq!(
            (w.method.as_str(), w.path.as_str()),
            ("PATCH", "/api/v1/namespaces/ipfs-system/pods/agent-a")
        );
        assert_eq!(w.content_type, "application/merge-patch+json");
        let annotations = w.body["metadata"]["annotations"].as_object().unwrap();
        assert_eq!(annotations.len(), 1, "{}", w.body);
        assert_eq!(w.body.as_object().unwrap().len(), 1, "{}", w.body);
        let published: Value =
            serde_json::from_str(annotations[PEER_ANNOTATION].as_str().unwrap()).unwrap();
        assert_eq!(
            published,
            json!({"id": id_a.peer_id, "addrs": id_a.addresses})
        );

        // Connected to b over the swarm.
        let r = next_report(&mut reports, |r| matches!(r, Report::Peered(_))).await;
        assert_eq!(r, Report::Peered(id_b.peer_id.clone()));
        let peers = ipfs_a.swarm_peers().await.unwrap();
        assert!(peers.iter().any(|p| p.peer_id == id_b.peer_id), "{peers:?}");

        // b's Pod leaves: a drops it (connection closed), and writes nothing for it.
        fake.delete(PODS, "ipfs-system", "agent-b");
        let r = next_report(&mut reports, |r| matches!(r, Report::Dropped(_))).await;
        assert_eq!(r, Report::Dropped(id_b.peer_id.clone()));
        testkit::wait_until_async("a closed its connection to b", WAIT, || async {
            let peers = ipfs_a.swarm_peers().await?;
            Ok(peers.iter().all(|p| p.peer_id != id_b.peer_id))
        })
        .await
        .unwrap();
        task.abort();
        assert!(writes.none_now().is_none());
    });
}

#[test]
fn static_peers_are_kept_connected_without_kubernetes() {
    let a = IpfsDaemon::start().unwrap();
    let c = IpfsDaemon::start().unwrap();
    let ipfs_a = Arc::new(KuboClient::new(&a.api_url, KuboOptions::default()).unwrap());
    let peer_c = PeerInfo::from_multiaddr(&c.swarm_multiaddr()).unwrap();
    assert_eq!(peer_c.id, c.peer_id);
    block_on(async {
        let (tx, mut reports) = mpsc::unbounded_channel();
        let peering = Peering {
            pods: None,
            static_peers: vec![peer_c],
            interval: Duration::from_millis(500),
            reporter: Reporter::new(tx),
        };
        let task = tokio::spawn(peering.run(ipfs_a.clone()));
        let r = next_report(&mut reports, |r| matches!(r, Report::Peered(_))).await;
        assert_eq!(r, Report::Peered(c.peer_id.clone()));

        // Someone closes the connection: the next pass dials it again.
        ipfs_a.swarm_disconnect(&c.swarm_multiaddr()).await.unwrap();
        let r = next_report(&mut reports, |r| matches!(r, Report::Peered(_))).await;
        assert_eq!(r, Report::Peered(c.peer_id.clone()));
        let peers = ipfs_a.swarm_peers().await.unwrap();
        assert!(peers.iter().any(|p| p.peer_id == c.peer_id), "{peers:?}");
        task.abort();
    });
}

#[test]
fn peering_inside_a_private_network() {
    // Two daemons share a swarm key, a third has another one, a fourth none (public).
    let key = *b"ipfs-image-operator test network";
    let a = IpfsDaemon::start_with(IpfsNet::default().private(key)).unwrap();
    let b = IpfsDaemon::start_with(IpfsNet::default().private(key)).unwrap();
    let other =
        IpfsDaemon::start_with(IpfsNet::default().private(*b"another network, another key!!!!"))
            .unwrap();
    let public = IpfsDaemon::start().unwrap();
    assert!(a.repo.join("swarm.key").exists());
    let client = |d: &IpfsDaemon| KuboClient::new(&d.api_url, KuboOptions::default()).unwrap();
    let ipfs_b = Arc::new(client(&b));
    block_on(async {
        let blob = client(&a)
            .add_bytes(Bytes::from_static(b"only for members of the network"))
            .await
            .unwrap()
            .cid;

        // B's agent keeps A (same key) as a peer and fetches A's blocks over that connection.
        let (tx, mut reports) = mpsc::unbounded_channel();
        let peering = Peering {
            pods: None,
            static_peers: vec![PeerInfo::from_multiaddr(&a.swarm_multiaddr()).unwrap()],
            interval: Duration::from_secs(30),
            reporter: Reporter::new(tx),
        };
        let task = tokio::spawn(peering.run(ipfs_b.clone()));
        let r = next_report(&mut reports, |r| matches!(r, Report::Peered(_))).await;
        assert_eq!(r, Report::Peered(a.peer_id.clone()));
        assert_eq!(
            ipfs_b.cat_to_vec(&blob, 1 << 20).await.unwrap(),
            b"only for members of the network"
        );
        task.abort();

        // Outsiders cannot even connect: another key, or none.
        for outsider in [&other, &public] {
            let err = client(outsider)
                .swarm_connect(&a.swarm_multiaddr())
                .await
                .expect_err("an outsider connected to the private network");
            eprintln!("outsider refused: {err}");
            let peers = client(&a).swarm_peers().await.unwrap();
            assert!(
                peers.iter().all(|p| p.peer_id != outsider.peer_id),
                "{peers:?}"
            );
        }
    });
}
