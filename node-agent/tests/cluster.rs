//! The agent's cluster side without an API server: which IpfsImages make the mirror catalog
//! (a pure function), and peering with static peers and inside a private network over real
//! Kubo daemons. Everything that talks to Kubernetes (catalog, prefetch, status entries,
//! peering by Pod annotations) runs the agent binary against a real API server in
//! `tests/apiserver.rs`.

use ipfs_image_agent::cluster;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cluster::catalog_sync::{MirrorNamespaces, MirrorPolicy, catalog_entries};
use cluster::peering::Peering;
use cluster::{Report, Reporter};
use ipfs_image_api::IpfsImage;
use ipfs_image_api::peer::PeerInfo;
use ipfs_oci::content_id::to_base32;
use ipfs_oci::ipfs::{IpfsStore, KuboClient, KuboOptions};
use serde_json::{Value, json};
use testkit::fake_api::WAIT;
use testkit::{IpfsDaemon, IpfsNet, block_on};
use tokio::sync::mpsc;

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
        image(
            "private",
            json!({"source": "registry.test/secret:1", "imagePullSecrets": [{"name": "regcred"}]}),
            json!({"phase": "Ready", "cid": CID_A}),
        ),
    ];
    let objects: Vec<IpfsImage> = objects.iter().map(typed).collect();
    let team_a = MirrorPolicy::namespaces(MirrorNamespaces::from_flags(&[NS.to_owned()]));
    let entries = catalog_entries(&objects, &team_a);
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
        "Ready + mirror + source, no pull Secrets, once each"
    );
    assert_eq!(entries[0].registry, "docker.io");
    assert_eq!(entries[0].repository, "library/nginx");
    assert!(catalog_entries(&[], &team_a).is_empty());
    // Another namespace's objects never answer a reference; `*` is the explicit opt-in to all.
    let only = |ns: &[&str]| {
        MirrorPolicy::namespaces(MirrorNamespaces::from_flags(
            &ns.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        ))
    };
    assert!(catalog_entries(&objects, &only(&["ipfs-image"])).is_empty());
    assert!(catalog_entries(&objects, &only(&[])).is_empty());
    assert_eq!(catalog_entries(&objects, &only(&["*"])), entries);
    // Images imported with pull Secrets answer references only when the administrator says so.
    let private = MirrorPolicy {
        private_images: true,
        ..team_a
    };
    let with_private: Vec<String> = catalog_entries(&objects, &private)
        .iter()
        .map(|e| e.source.clone())
        .collect();
    assert_eq!(
        with_private,
        [
            "nginx:1.25",
            "registry.test/app:1",
            "registry.test/secret:1"
        ]
    );
}

#[test]
fn catalog_entries_carry_the_check_time_and_source_digest() {
    let digest = "sha256:0123456789012345678901234567890123456789012345678901234567890123";
    let objects = [
        image(
            "checked",
            json!({"source": "registry.test/app:1"}),
            json!({"phase": "Ready", "cid": CID_A, "sourceDigest": digest,
                   "lastCheckTime": "2026-01-02T03:04:05Z"}),
        ),
        image(
            "imported",
            json!({"source": "registry.test/app:2"}),
            json!({"phase": "Ready", "cid": CID_B, "conditions": [{"type": "Imported",
                   "status": "True", "reason": "Imported", "message": "",
                   "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
        ),
    ];
    let objects: Vec<IpfsImage> = objects.iter().map(typed).collect();
    let entries = catalog_entries(
        &objects,
        &MirrorPolicy::namespaces(MirrorNamespaces::from_flags(&[NS.to_owned()])),
    );
    assert_eq!(entries[0].checked, Some(1_767_323_045));
    assert_eq!(entries[0].source_digest, Some(digest.parse().unwrap()));
    assert_eq!(
        entries[1].checked,
        Some(1_767_225_600),
        "Imported time without a check time"
    );
    assert_eq!(entries[1].source_digest, None);
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
