//! Three nodes on one machine (network namespaces A, B, C joined by veths into a bridge), each
//! with its own 127.0.0.1, IPFS daemon and agent; containerd on B and C. A fourth namespace on
//! the bridge is the control plane: a real etcd and kube-apiserver (`testkit::KubeApi::start_in`)
//! listening on its bridge address, with the chart's CRD, ServiceAccounts and RBAC. Every agent
//! is the real binary (`serve --kubernetes`) with a kubeconfig for the chart's agent
//! ServiceAccount, so it has exactly the chart's rights; the Node objects (labels for
//! `prefetch`), the agents' Pods (where each agent publishes its IPFS peer) and the IpfsImage are
//! API objects. The image is converted on A only and the upstream registry is stopped right
//! after. Assertions are on where bytes came from (bitswap counters of the daemons, blob bytes
//! the agents served), not only on the pulls working:
//! - B (`pool=general`) follows the agent Pods, peers with A and C by its own dials, pulls
//!   through its agent and runs the image; B received at least what its agent served, and A sent
//!   it (C held nothing);
//! - Node C is labelled `pool=cache` through the API: C's agent, watching its Node, pins the
//!   image's layout before any pull (B, outside the pool, pins nothing; the stored status has
//!   C's entry only); then A is stopped and C pulls and runs with no bitswap data received;
//! - every daemon runs in one private network (a shared `swarm.key`), kept across the restart;
//! - B's IPFS daemon is killed (after a GC of its cache) and restarted on the same repo and API
//!   port but a new swarm port; B's agent republishes its peer on its Pod (read back from the
//!   API) and itself dials C again (the daemons never dial on their own here), and B pulls
//!   again, every byte sent by C;
//! - every call the agents made was one the chart grants, and none was refused (audit log).
//!
//! Only B's agent follows the agent Pods (`--peer-selector`). A's and C's agents publish their
//! peer but follow none (C keeps A, where the image was converted, as a `--peer`), so every
//! connection to B is one B's agent dialled, which is what "B's agent peers/re-peers" asserts.
//! No scripted API is left: nothing here needs a fault at a chosen moment.
//!
//! Needs root (network namespaces, containerd) and iproute2. Run alone with
//! `bash e2e/multinode.sh`.
//!
//! The test process stays in the root namespace; it reaches a node through `NetNode::enter`,
//! which runs code on a thread that joined the node's namespace. So each IPFS API stays on its
//! node's 127.0.0.1 as in production (it is an admin API), nothing is exposed on the veths but
//! the swarms and the API server, and nothing listens in the root namespace.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipfs_image_api::peer::{PEER_ANNOTATION, PeerInfo};
use ipfs_oci::Cid;
use ipfs_oci::content_id::to_base32;
use ipfs_oci::convert::{ConvertOptions, ConvertedImage, convert};
use ipfs_oci::ipfs::{IpfsStore, KuboClient, KuboOptions};
use ipfs_oci::source::{SourceOptions, SourceRegistry};
use serde_json::{Value, json};
use testkit::kube_world::{
    AGENT_GRANTS, AGENT_SA, RELEASE_NAMESPACE, USER_NAMESPACE, assert_calls_granted, get_json,
    install_chart_rbac, install_crd, requests_by, sa_user, write_file,
};
use testkit::{
    Agent, Containerd, IpfsDaemon, IpfsNet, KubeApi, NetNode, PushFormat, Registry, TestImage,
    TestNet, block_on, build_busybox_layout, push_layout,
};

/// The cluster's private network (`swarm.key`): every node's daemon has it, as the chart's
/// `swarmKey` gives every Kubo the same key.
const NETWORK_KEY: [u8; 32] = *b"multinode test private network!!";

/// Failure guard for each step (readiness is polled; this only bounds a hang).
const STEP: Duration = Duration::from_secs(120);

fn agent_bin() -> PathBuf {
    testkit::workspace_binary("ipfs-image-agent")
}

fn kubo(api: &str) -> KuboClient {
    KuboClient::new(api, KuboOptions::default()).unwrap()
}

/// A JSON number or a numeric string (counters come as either, by endpoint).
fn num(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bitswap {
    blocks_received: u64,
    data_received: u64,
    data_sent: u64,
}

fn api_call(api: &str, path: &str) -> Value {
    testkit::http_client(STEP)
        .post(format!("{api}/api/v0/{path}"))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("{api}/api/v0/{path}: {e}"))
}

/// `bitswap/stat` of the daemon at `api` (call inside its node).
fn bitswap(api: &str) -> Bitswap {
    let body = api_call(api, "bitswap/stat");
    Bitswap {
        blocks_received: num(&body["BlocksReceived"]),
        data_received: num(&body["DataReceived"]),
        data_sent: num(&body["DataSent"]),
    }
}

/// Blocks in the repo (`repo/stat` `NumObjects`), counted when asked.
fn repo_objects(api: &str) -> u64 {
    num(&api_call(api, "repo/stat")["NumObjects"])
}

fn blob_bytes(agent: &Agent) -> f64 {
    agent.metric_sum("ipfs_image_agent_bytes_served_total", &[("kind", "blob")])
}

/// The agent Pods' label (what B's `--peer-selector` matches).
const AGENT_LABEL: &str = "app.kubernetes.io/component=agent";

/// The control plane: a real API server in its own namespace on the bridge, with the chart's
/// CRD, ServiceAccounts and RBAC, and a kubeconfig for the agent ServiceAccount.
struct Cluster {
    api: KubeApi,
    agent_kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start(control_plane: &NetNode) -> Self {
        let api = KubeApi::start_in(control_plane)
            .expect("etcd and kube-apiserver in the control-plane namespace (bash e2e/deps.sh)");
        let dir = tempfile::tempdir().unwrap();
        install_crd(&api).unwrap();
        install_chart_rbac(&api, dir.path()).unwrap();
        api.kubectl(&["create", "namespace", USER_NAMESPACE])
            .unwrap();
        let agent_kubeconfig = api.service_account(RELEASE_NAMESPACE, AGENT_SA).unwrap();
        Self {
            api,
            agent_kubeconfig,
            dir,
        }
    }

    /// `kubectl apply` of `object` as the admin.
    fn apply(&self, name: &str, object: &Value) {
        let file = write_file(
            self.dir.path(),
            &format!("{name}.json"),
            &object.to_string(),
        )
        .unwrap();
        self.api.kubectl(&["apply", "-f", &file]).unwrap();
    }

    /// A Node object (no kubelet: only its labels matter, for `prefetch`).
    fn node(&self, name: &str, pool: &str) {
        let node = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"pool": pool}}});
        self.apply(name, &node);
    }

    /// An agent Pod (never scheduled, there is no kubelet): where that agent publishes its peer
    /// and what the others' `--peer-selector` finds.
    fn agent_pod(&self, name: &str, node: &str) {
        let (key, value) = AGENT_LABEL.split_once('=').unwrap();
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": RELEASE_NAMESPACE, "labels": {key: value}},
            "spec": {"nodeName": node, "serviceAccountName": AGENT_SA,
                "automountServiceAccountToken": false,
                "containers": [{"name": "agent", "image": "ipfs-image-agent:test"}]}});
        self.apply(name, &pod);
    }

    /// The peer published on Pod `pod`, as the API server stores it.
    fn published_peer(&self, pod: &str) -> Option<PeerInfo> {
        let pod = get_json(&self.api, "pod", RELEASE_NAMESPACE, pod).unwrap()?;
        let text = pod["metadata"]["annotations"][PEER_ANNOTATION].as_str()?;
        Some(serde_json::from_str(text).expect("a peer annotation"))
    }

    /// `status.nodes` of IpfsImage `name` in the user namespace.
    fn status_nodes(&self, name: &str) -> Vec<Value> {
        get_json(&self.api, "ipfsimg", USER_NAMESPACE, name)
            .unwrap()
            .and_then(|o| o["status"]["nodes"].as_array().cloned())
            .unwrap_or_default()
    }
}

/// How a node's agent takes part in peering.
enum Peering<'a> {
    /// Publishes its peer on its Pod, follows no Pods (dials nobody).
    PublishOnly,
    /// Publishes, and keeps this static peer (`--peer`) connected; follows no Pods.
    Static(&'a IpfsDaemon),
    /// Publishes and follows the agent Pods (`--peer-selector`).
    FollowPods,
}

/// A node: its IPFS daemon, its agent (the binary, `serve --kubernetes`, as the agent
/// ServiceAccount, Node `name`, Pod `agent-<name>`) and containerd, if any, with hosts.toml
/// pointing at the agent.
struct Node {
    net: NetNode,
    name: String,
    ipfs: IpfsDaemon,
    agent: Agent,
    containerd: Option<Containerd>,
    state: tempfile::TempDir,
}

impl Node {
    fn start(
        net: &NetNode,
        name: &str,
        cluster: &Cluster,
        peering: Peering<'_>,
        with_containerd: bool,
    ) -> Self {
        let pod = format!("agent-{name}");
        cluster.agent_pod(&pod, name);
        let state = tempfile::tempdir().unwrap();
        let state_dir = state.path().display().to_string();
        let seed = match &peering {
            Peering::Static(d) => Some(d.swarm_multiaddr()),
            _ => None,
        };
        net.enter(|| {
            let ipfs =
                IpfsDaemon::start_with(IpfsNet::swarm_on(net.ip).private(NETWORK_KEY)).unwrap();
            let mut args = vec![
                "--node-name",
                name,
                "--state-dir",
                &state_dir,
                "--pod-name",
                &pod,
                "--pod-namespace",
                RELEASE_NAMESPACE,
                // The test's IpfsImages live in the user namespace (the chart's mirrorNamespaces).
                "--mirror-namespace",
                USER_NAMESPACE,
                // 1 s instead of 30 s: how often peers are re-checked and status entries written.
                "--peer-interval",
                "1s",
                "--status-interval",
                "1s",
                "--log-format",
                "json",
            ];
            match (&peering, &seed) {
                (Peering::FollowPods, _) => args.extend(["--peer-selector", AGENT_LABEL]),
                (Peering::Static(_), Some(seed)) => args.extend(["--peer", seed]),
                _ => {}
            }
            let agent = Agent::start_in_cluster(
                &agent_bin(),
                &ipfs.api_url,
                &cluster.agent_kubeconfig,
                &args,
            )
            .unwrap_or_else(|e| panic!("agent on {name}: {e:#}"));
            let containerd = with_containerd.then(|| {
                let c = Containerd::start().unwrap();
                let out = std::process::Command::new(agent_bin())
                    .args(["configure-containerd", "--config-path"])
                    .arg(&c.hosts_dir)
                    .args(["--local-host", &agent.addr])
                    .args(["--mirror-endpoint", &format!("http://{}", agent.addr)])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                c
            });
            Node {
                net: net.clone(),
                name: name.to_owned(),
                ipfs,
                agent,
                containerd,
                state,
            }
        })
    }

    /// The agent's record of the pins it made (`pins.json` in its state directory).
    fn pin_record(&self) -> Option<Value> {
        let text = std::fs::read(self.state.path().join("pins.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// The fields of the agent's log events with `message`, in the part of its (JSON) log after
    /// byte `from`.
    fn logged(&self, message: &str, from: usize) -> Vec<Value> {
        let log = self.agent.log();
        log.get(from..)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["fields"]["message"] == message)
            .map(|l| l["fields"].clone())
            .collect()
    }

    /// The peer IDs the agent connected by its own dial (its `connected to peer` events) after
    /// log byte `from`.
    fn dialled(&self, from: usize) -> Vec<String> {
        self.logged("connected to peer", from)
            .iter()
            .filter_map(|f| f["peer"].as_str().map(str::to_owned))
            .collect()
    }

    /// Wait until the agent connected to `peer` by its own dial (after log byte `from`), and
    /// check that the daemon holds that connection as an outbound one.
    fn peered_by_agent(&self, peer: &IpfsDaemon, from: usize) {
        let deadline = Instant::now() + STEP;
        while !self.dialled(from).contains(&peer.peer_id) {
            assert!(
                Instant::now() < deadline,
                "{}'s agent never connected to {}:\n{}",
                self.name,
                peer.peer_id,
                self.agent.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let conns = self
            .net
            .enter(|| api_call(&self.ipfs.api_url, "swarm/peers?direction=true"));
        let outbound = conns["Peers"].as_array().into_iter().flatten().any(|c| {
            c["Peer"] == peer.peer_id.as_str()
                && (c["Direction"] == 2 || c["Direction"] == "outbound")
        });
        assert!(
            outbound,
            "{}'s daemon holds no outbound connection to {}: {conns:#}",
            self.name, peer.peer_id
        );
    }

    fn log_len(&self) -> usize {
        self.agent.log().len()
    }

    fn bitswap(&self) -> Bitswap {
        self.net.enter(|| bitswap(&self.ipfs.api_url))
    }

    /// Wait until `bitswap/stat` satisfies `ok`; returns that reading.
    fn bitswap_until(&self, what: &str, ok: impl Fn(&Bitswap) -> bool) -> Bitswap {
        let mut last = self.bitswap();
        let deadline = Instant::now() + STEP;
        while !ok(&last) {
            assert!(Instant::now() < deadline, "{what}: {last:?}");
            std::thread::sleep(Duration::from_millis(100));
            last = self.bitswap();
        }
        last
    }

    /// A reading no pending update will change: unchanged across 1.5 s (a transfer still under
    /// way moves it sooner). Needed only for "nothing was received".
    fn bitswap_settled(&self) -> Bitswap {
        testkit::settled("bitswap", Duration::from_millis(1500), STEP, || {
            self.bitswap()
        })
    }

    fn repo_objects(&self) -> u64 {
        self.net.enter(|| repo_objects(&self.ipfs.api_url))
    }

    fn blob_bytes(&self) -> f64 {
        self.net.enter(|| blob_bytes(&self.agent))
    }

    /// Pull `localhost:<agent>/ipfs/<cid>:latest` with ctr through hosts.toml, run `echo`.
    fn pull_and_run(&self, cid: &str, word: &str) {
        let ctd = self.containerd.as_ref().expect("containerd on this node");
        let image = format!("{}/ipfs/{cid}:latest", self.agent.addr);
        self.net.enter(|| {
            ctd.pull_with_hosts_dir(&image).unwrap_or_else(|e| {
                panic!(
                    "pull on {}: {e:#}\n{}",
                    self.net.netns.name(),
                    self.agent.log()
                )
            });
            let out = ctd.run(&image, &["/bin/busybox", "echo", word]).unwrap();
            assert_eq!(out.trim(), word);
        });
    }

    /// Forget the image in containerd, content included (so a new pull fetches every blob).
    fn remove_image(&self, cid: &str) {
        let ctd = self.containerd.as_ref().expect("containerd on this node");
        let image = format!("{}/ipfs/{cid}:latest", self.agent.addr);
        ctd.ctr_ok(&["images", "rm", "--sync", &image]).unwrap();
    }
}

fn convert_on(a: &NetNode, ipfs: &IpfsDaemon, registry: &Registry) -> ConvertedImage {
    a.enter(|| {
        let source = SourceRegistry::new(&SourceOptions {
            plain_http: true,
            ..Default::default()
        });
        let reference = format!("{}/test/busybox:1", registry.addr).parse().unwrap();
        block_on(convert(
            &kubo(&ipfs.api_url),
            &source,
            &reference,
            &ConvertOptions::default(),
        ))
        .unwrap()
    })
}

/// The IpfsImage the operator would have made Ready after converting on A: prefetched on
/// nodes labelled `pool=cache`. Created, then its status written through the status
/// subresource, as the admin.
fn create_ipfs_image(cluster: &Cluster, image: &ConvertedImage, source: &str) {
    cluster.apply(
        "busybox",
        &json!({"apiVersion": "ipfsimage.dev/v1alpha1", "kind": "IpfsImage",
            "metadata": {"name": "busybox", "namespace": USER_NAMESPACE},
            "spec": {"source": source, "prefetch": {"nodeSelector": {"pool": "cache"}}}}),
    );
    let status = json!({"status": {"phase": "Ready", "cid": to_base32(&image.root_cid),
        "layoutCid": to_base32(&image.layout_cid), "size": image.total_size}});
    cluster
        .api
        .kubectl(&[
            "patch",
            "ipfsimg",
            "-n",
            USER_NAMESPACE,
            "busybox",
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ])
        .unwrap();
}

/// Poll `f` until it returns `Some`, failing with `what` at the step deadline.
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The peer IDs the daemon's swarm is connected to now.
fn swarm_peer_ids(node: &Node) -> Vec<String> {
    node.net.enter(|| {
        block_on(kubo(&node.ipfs.api_url).swarm_peers())
            .map(|l| l.into_iter().map(|p| p.peer_id).collect())
            .unwrap_or_default()
    })
}

fn pinned(node: &Node, cid: &Cid) -> bool {
    node.net
        .enter(|| block_on(kubo(&node.ipfs.api_url).is_pinned(cid)))
        .unwrap()
}

#[test]
fn images_flow_between_nodes_over_the_swarm() {
    let started = Instant::now();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_test_writer()
        .try_init();
    // Declared first, dropped last: daemons stop before their namespaces are deleted.
    let net =
        TestNet::create(&["a", "b", "c", "cp"]).expect("network namespaces (needs root, iproute2)");
    let (na, nb, nc, ncp) = (net.node(0), net.node(1), net.node(2), net.node(3));
    // The control plane on the bridge; A's Node is outside every pool, B's in `general`, and C's
    // too until step 2 moves it into `cache`.
    let cluster = Cluster::start(ncp);
    eprintln!("multinode: API server at {}", cluster.api.url);
    for (node, pool) in [("a", "origin"), ("b", "general"), ("c", "general")] {
        cluster.node(node, pool);
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = build_busybox_layout(dir.path()).unwrap();

    // Node A: the upstream registry (reachable only inside A) and the conversion.
    let mut registry = na.enter(|| {
        let r = Registry::start().unwrap();
        push_layout(
            &layout,
            TestImage::AMD64,
            &r,
            "test/busybox:1",
            PushFormat::Oci,
        )
        .unwrap();
        r
    });
    let mut a = Node::start(na, "a", &cluster, Peering::PublishOnly, false);
    let image = convert_on(na, &a.ipfs, &registry);
    registry.stop();
    let cid = to_base32(&image.root_cid);
    let layout_cid = to_base32(&image.layout_cid);
    eprintln!(
        "converted on A: root {cid}, layout {layout_cid}, {} bytes",
        image.total_size
    );
    create_ipfs_image(
        &cluster,
        &image,
        &format!("{}/test/busybox:1", registry.addr),
    );

    // C publishes its peer and keeps A; B follows the Pods: it finds A and C there and dials
    // both (nobody else dials B, and A dials nobody).
    let c = Node::start(nc, "c", &cluster, Peering::Static(&a.ipfs), true);
    let b = Node::start(nb, "b", &cluster, Peering::FollowPods, true);
    b.peered_by_agent(&a.ipfs, 0);
    b.peered_by_agent(&c.ipfs, 0);

    // 1. B pulls through its own agent: every byte its agent served came over the swarm from A.
    let (a0, b0, c0) = (a.bitswap(), b.bitswap(), c.bitswap_settled());
    assert_eq!(b0.data_received, 0, "B starts empty: {b0:?}");
    let b_objects = b.repo_objects();
    b.pull_and_run(&cid, "hello");
    let served = b.blob_bytes();
    assert!(served > 500_000.0, "B's agent served the layer: {served}");
    let need = served as u64;
    b.bitswap_until("B received what its agent served", |s| {
        s.data_received - b0.data_received >= need
    });
    a.bitswap_until("A sent it", |s| s.data_sent - a0.data_sent >= need);
    assert!(b.repo_objects() > b_objects, "B's repo grew");
    assert_eq!(
        c.bitswap_settled().data_sent,
        c0.data_sent,
        "C had nothing to send"
    );

    // 2. Node C joins the `cache` pool (a label on the Node object): C's agent, watching its
    //    Node, pins the image's layout before any pull, fetching the whole DAG.
    assert!(!pinned(&c, &image.layout_cid));
    assert_eq!(
        c.pin_record().unwrap_or(json!({"pins": []})),
        json!({"pins": []})
    );
    cluster
        .api
        .kubectl(&["label", "node", "c", "pool=cache", "--overwrite"])
        .unwrap();
    // Its agent pinned it itself (after recording it as its own), and unpinned nothing.
    poll("C's agent added its prefetch pin", || {
        let added = c.logged("prefetch pin added", 0);
        (!added.is_empty()).then_some(())
    });
    let added: Vec<Value> = c
        .logged("prefetch pin added", 0)
        .iter()
        .map(|f| f["cid"].clone())
        .collect();
    assert_eq!(added, [layout_cid.as_str()], "C pinned the layout");
    assert!(c.logged("prefetch pin removed", 0).is_empty());
    assert_eq!(c.pin_record(), Some(json!({ "pins": [layout_cid] })));
    assert!(pinned(&c, &image.layout_cid));
    assert!(!pinned(&b, &image.layout_cid), "B is not in the pool");
    // The stored status: C's entry (pinned, the whole size), no other node's.
    let entries = poll("C's status entry, pinned", || {
        let nodes = cluster.status_nodes("busybox");
        nodes
            .iter()
            .any(|e| e["node"] == "c" && e["pinned"] == true)
            .then_some(nodes)
    });
    let names: Vec<&str> = entries.iter().filter_map(|e| e["node"].as_str()).collect();
    assert_eq!(names, ["c"], "only C holds the image: {entries:#?}");
    assert_eq!(entries[0]["bytes"], image.total_size);
    assert_eq!(entries[0]["cid"], cid.as_str());
    c.bitswap_until("C fetched every blob of the image", |s| {
        s.data_received >= image.total_size
    });
    let c2 = c.bitswap_settled();
    let c_objects = c.repo_objects();

    // 3. A stops; C pulls and runs from what it holds: not one byte received during the pull.
    a.ipfs.kill();
    a.agent.stop();
    c.pull_and_run(&cid, "prefetched");
    assert!(c.blob_bytes() > 500_000.0, "C's agent served the layer");
    let c3 = c.bitswap_settled();
    assert_eq!(
        (c3.blocks_received, c3.data_received),
        (c2.blocks_received, c2.data_received),
        "C's pull was all local"
    );
    assert_eq!(c.repo_objects(), c_objects, "C stored nothing new");

    // 4. B's IPFS daemon dies (its cache collected first, so it holds nothing) and comes back on
    //    the same repo; it is reconnected to C without help (the test dials nothing), and B
    //    pulls again with every byte sent by C.
    let mut b = b;
    b.net.enter(|| {
        testkit::http_client(STEP)
            .post(format!("{}/api/v0/repo/gc", b.ipfs.api_url))
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .expect("repo/gc on B")
    });
    b.remove_image(&cid);
    let before = cluster
        .published_peer("agent-b")
        .expect("B's published peer");
    assert_eq!(before.id, b.ipfs.peer_id);
    let (repo, listen) = (b.ipfs.repo.clone(), b.ipfs.net());
    let _repo_dir = b.ipfs.keep_repo();
    b.ipfs.kill();
    let b_log = b.log_len();
    // Same API port (where B's agent expects it), a new swarm port (B's agent must republish it).
    let listen = IpfsNet {
        swarm_port: None,
        ..listen
    };
    b.ipfs = nb
        .enter(|| IpfsDaemon::start_in_with(&repo, listen))
        .unwrap();
    // B's agent republished its peer: the new swarm port, on its Pod, as the server stores it.
    let port = format!("/tcp/{}", b.ipfs.swarm_port);
    let after = poll("B's agent republished its peer", || {
        cluster
            .published_peer("agent-b")
            .filter(|p| p != &before && p.addrs.iter().any(|a| a.contains(&port)))
    });
    assert_eq!(after.id, b.ipfs.peer_id, "same repo, same identity");
    // B is connected to C again with no dial from the test, by B's agent: its own dial connected
    // it, outbound from B, and the daemons never dial by themselves (no bootstrap, no routing,
    // no MDNS; C's agent follows no Pods and dials only A).
    b.peered_by_agent(&c.ipfs, b_log);
    assert!(swarm_peer_ids(&b).contains(&c.ipfs.peer_id));
    assert!(
        !c.dialled(0).contains(&b.ipfs.peer_id),
        "C's agent never dialled B"
    );
    let (served_before, c_sent_before) = (b.blob_bytes(), c.bitswap_settled().data_sent);
    b.pull_and_run(&cid, "again");
    let served_again = b.blob_bytes() - served_before;
    assert!(
        served_again > 500_000.0,
        "B's agent served the layer again: {served_again}"
    );
    let need = served_again as u64;
    b.bitswap_until("the restarted B fetched it", |s| s.data_received >= need);
    c.bitswap_until("C sent it", |s| s.data_sent - c_sent_before >= need);

    // 5. Every call of the three agents was granted by the chart's RBAC, none refused, and the
    //    Pods they wrote are exactly the three agent Pods (they share one ServiceAccount, so the
    //    audit log cannot tell which agent wrote which; each writes only its `--pod-name`).
    assert_calls_granted(&cluster.api, AGENT_SA, &AGENT_GRANTS);
    let mut pod_writes: Vec<String> =
        requests_by(&cluster.api, &sa_user(RELEASE_NAMESPACE, AGENT_SA))
            .unwrap()
            .iter()
            .filter(|e| e["verb"] == "patch" && e["objectRef"]["resource"] == "pods")
            .filter_map(|e| e["objectRef"]["name"].as_str().map(str::to_owned))
            .collect();
    pod_writes.sort();
    pod_writes.dedup();
    assert_eq!(pod_writes, ["agent-a", "agent-b", "agent-c"]);
    eprintln!("multinode: passed in {:?}", started.elapsed());
    drop((a, b, c));
    drop(cluster);
    drop(net);
}
