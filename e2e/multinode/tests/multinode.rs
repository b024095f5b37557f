//! Three nodes on one machine (network namespaces A, B, C joined by veths into a bridge), each
//! with its own 127.0.0.1, IPFS daemon and agent; containerd on B and C. The image is converted
//! on A only and the upstream registry is stopped right after. B and C run the agent's cluster
//! side (`cluster::start`: watches, prefetch, status, peering) against a faked Kubernetes API
//! holding their Node, the IpfsImage (prefetch on `pool=cache`) and the agents' Pods with their
//! peer annotations. Assertions are on where bytes came from (bitswap counters of the daemons,
//! blob bytes the agents served), not only on the pulls working:
//! - B (`pool=general`) peers with A and C through its own loop, pulls through its agent and
//!   runs the image; B received at least what its agent served, and A sent it (C held nothing);
//! - C (`pool=cache`) starts its cluster side: its prefetch pins the image's layout before any
//!   pull (B, outside the pool, pins nothing); then A is stopped and C pulls and runs with no
//!   bitswap data received at all;
//! - every daemon runs in one private network (a shared `swarm.key`), kept across the restart;
//! - B's IPFS daemon is killed (after a GC of its cache) and restarted on the same repo and API
//!   port but a new swarm port; B's agent republishes its peer and itself dials C again (the
//!   daemons never dial on their own here), and B pulls again, every byte sent by C.
//!
//! Needs root (network namespaces, containerd) and iproute2. Run alone with
//! `bash e2e/multinode.sh`.
//!
//! The test process stays in the root namespace; it reaches a node through `NetNode::enter`,
//! which runs code on a thread that joined the node's namespace. So each IPFS API stays on its
//! node's 127.0.0.1 as in production (it is an admin API) and nothing is exposed on the veths
//! but the swarms.

use ipfs_image_agent::catalog::Catalog;
use ipfs_image_agent::cluster::{self, ClusterConfig, Report, Reporter};

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipfs_image_api::peer::{PEER_ANNOTATION, PeerInfo};
use serde_json::json;
use testkit::fake_api::FakeApi;
use tokio::sync::{mpsc, oneshot};

use ipfs_oci::Cid;
use ipfs_oci::content_id::to_base32;
use ipfs_oci::convert::{ConvertOptions, ConvertedImage, convert};
use ipfs_oci::ipfs::{IpfsStore, KuboClient, KuboOptions};
use ipfs_oci::source::{SourceOptions, SourceRegistry};
use serde_json::Value;
use testkit::{
    Agent, Containerd, IpfsDaemon, IpfsNet, NetNode, PushFormat, Registry, TestImage, TestNet,
    block_on, build_busybox_layout, push_layout,
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

/// A node's agent (and containerd, if any) with hosts.toml pointing at the agent.
struct Node {
    net: NetNode,
    ipfs: IpfsDaemon,
    agent: Agent,
    containerd: Option<Containerd>,
}

impl Node {
    fn start(net: &NetNode, with_containerd: bool) -> Self {
        net.enter(|| {
            let ipfs =
                IpfsDaemon::start_with(IpfsNet::swarm_on(net.ip).private(NETWORK_KEY)).unwrap();
            let agent = Agent::start(&agent_bin(), &ipfs.api_url, None, &[]).unwrap();
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
                ipfs,
                agent,
                containerd,
            }
        })
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
        let deadline = Instant::now() + STEP;
        let mut last = self.bitswap();
        loop {
            std::thread::sleep(Duration::from_millis(1500));
            let now = self.bitswap();
            if now == last {
                return now;
            }
            assert!(Instant::now() < deadline, "bitswap never settled: {now:?}");
            last = now;
        }
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

/// The agent's cluster side (`cluster::start`, what `serve --kubernetes` runs: IpfsImage and
/// Node watches, prefetch, status entries, peering) for one node, in-process on a thread inside
/// that node, against a faked Kubernetes API holding this node's Node object (with `labels`),
/// the IpfsImage, and the agent Pods with the other nodes' peer annotations. Peering period 1 s
/// (30 s by default).
struct NodeCluster {
    reports: mpsc::UnboundedReceiver<Report>,
    peered: BTreeSet<String>,
    published: bool,
    prefetched: Option<(Vec<String>, Vec<String>)>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _state: tempfile::TempDir,
}

const PODS: &str = "/api/v1/namespaces/ipfs-system/pods";
const IMAGES: &str = "/apis/ipfsimage.dev/v1alpha1/ipfsimages";
const NODES: &str = "/api/v1/nodes";

/// The IpfsImage the operator would have made Ready after converting on A: prefetched on
/// nodes labelled `pool=cache`.
fn ipfs_image(image: &ConvertedImage, source: &str) -> Value {
    json!({"apiVersion": "ipfsimage.dev/v1alpha1", "kind": "IpfsImage",
        "metadata": {"name": "busybox", "namespace": "team-a", "uid": "uid-busybox", "generation": 1},
        "spec": {"source": source, "prefetch": {"nodeSelector": {"pool": "cache"}}},
        "status": {"phase": "Ready", "cid": to_base32(&image.root_cid),
            "layoutCid": to_base32(&image.layout_cid), "size": image.total_size}})
}

impl NodeCluster {
    fn start(
        node: &NetNode,
        me: &IpfsDaemon,
        labels: Value,
        image: &Value,
        peers: &[&IpfsDaemon],
    ) -> Self {
        let pod = |name: &str, peer: Option<&IpfsDaemon>| {
            let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": name, "namespace": "ipfs-system",
                "labels": {"app.kubernetes.io/component": "agent"}}});
            if let Some(d) = peer {
                let info = PeerInfo {
                    id: d.peer_id.clone(),
                    addrs: vec![d.swarm_multiaddr()],
                };
                p["metadata"]["annotations"] =
                    json!({PEER_ANNOTATION: serde_json::to_string(&info).unwrap()});
            }
            p
        };
        let mut pods = vec![pod("agent-self", None)];
        pods.extend(
            peers
                .iter()
                .enumerate()
                .map(|(i, d)| pod(&format!("agent-{i}"), Some(d))),
        );
        let node_name = node.netns.name().to_owned();
        let node_object = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node_name, "labels": labels}});
        let image = image.clone();
        let state = tempfile::tempdir().unwrap();
        let config = ClusterConfig {
            node_name,
            state_dir: state.path().to_owned(),
            status_interval: Duration::from_secs(1),
            pod: Some(("ipfs-system".into(), "agent-self".into())),
            peer_selector: Some("app.kubernetes.io/component=agent".into()),
            peer_interval: Duration::from_secs(1),
            static_peers: vec![],
        };
        // Pins fetch whole images: the agent's long deadlines (as `serve` sets them).
        let ipfs = KuboClient::new(
            &me.api_url,
            KuboOptions {
                pin_timeout: STEP,
                idle_timeout: STEP,
                ..KuboOptions::default()
            },
        )
        .unwrap();
        let node = node.clone();
        let (tx, reports) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            node.enter(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let (client, fake, _writes) = FakeApi::start();
                    fake.collection(PODS, "PodList");
                    fake.collection(IMAGES, "IpfsImageList");
                    fake.collection(NODES, "NodeList");
                    for p in pods {
                        fake.put(PODS, p);
                    }
                    fake.put(NODES, node_object);
                    fake.put(IMAGES, image);
                    let agent = cluster::start(
                        client,
                        Arc::new(ipfs),
                        Arc::new(Catalog::default()),
                        None,
                        config,
                        Reporter::new(tx),
                    )
                    .unwrap();
                    let _ = stopped.await;
                    drop(agent);
                });
            })
        });
        Self {
            reports,
            peered: Default::default(),
            published: false,
            prefetched: None,
            stop: Some(stop),
            thread: Some(thread),
            _state: state,
        }
    }

    /// Wait until the agent reported a connection to `peer` it made itself (since `forget`).
    fn peered(&mut self, peer: &IpfsDaemon) {
        let id = peer.peer_id.clone();
        self.wait(&format!("peered with {id}"), |p| p.peered.contains(&id));
    }

    /// Wait until the agent (re)published this node's peer annotation (since `forget`).
    fn published(&mut self) {
        self.wait("published this peer", |p| p.published);
    }

    /// Wait for the first prefetch pass with a change; returns (pinned, unpinned).
    fn prefetched(&mut self) -> (Vec<String>, Vec<String>) {
        self.wait("finished a prefetch pass", |p| p.prefetched.is_some());
        self.prefetched.take().unwrap()
    }

    fn wait(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + STEP;
        while !done(self) {
            match self.reports.try_recv() {
                Ok(Report::Peered(id)) => {
                    self.peered.insert(id);
                }
                Ok(Report::Published) => self.published = true,
                Ok(Report::Prefetch { pinned, unpinned }) => {
                    if self.prefetched.is_none() && !(pinned.is_empty() && unpinned.is_empty()) {
                        self.prefetched = Some((pinned, unpinned));
                    }
                }
                Ok(_) => {}
                Err(mpsc::error::TryRecvError::Empty) => {
                    assert!(Instant::now() < deadline, "the agent never {what}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("the agent's cluster side ended: {e}"),
            }
        }
    }

    /// Forget the reports so far.
    fn forget(&mut self) {
        while self.reports.try_recv().is_ok() {}
        self.peered.clear();
        self.published = false;
    }
}

impl Drop for NodeCluster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
    let net = TestNet::create(&["a", "b", "c"]).expect("network namespaces (needs root, iproute2)");
    let dir = tempfile::tempdir().unwrap();
    let layout = build_busybox_layout(dir.path()).unwrap();

    // Node A: the upstream registry (reachable only inside A) and the conversion.
    let (na, nb, nc) = (net.node(0), net.node(1), net.node(2));
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
    let mut a = Node::start(na, false);
    let image = convert_on(na, &a.ipfs, &registry);
    registry.stop();
    let cid = to_base32(&image.root_cid);
    eprintln!(
        "converted on A: root {cid}, layout {}, {} bytes",
        to_base32(&image.layout_cid),
        image.total_size
    );

    let b = Node::start(nb, true);
    let c = Node::start(nc, true);
    // B's agent runs its cluster side: B is not in the prefetch pool, and peers with A and C.
    let object = ipfs_image(&image, &format!("{}/test/busybox:1", registry.addr));
    let mut b_cluster = NodeCluster::start(
        nb,
        &b.ipfs,
        json!({"pool": "general"}),
        &object,
        &[&a.ipfs, &c.ipfs],
    );
    b_cluster.peered(&a.ipfs);
    b_cluster.peered(&c.ipfs);

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

    // 2. C's agent starts its cluster side: its Node matches `prefetch`, so it peers (with A
    //    and B) and pins the image's layout before any pull, fetching the whole DAG.
    assert!(!pinned(&c, &image.layout_cid));
    let mut c_cluster = NodeCluster::start(
        nc,
        &c.ipfs,
        json!({"pool": "cache"}),
        &object,
        &[&a.ipfs, &b.ipfs],
    );
    let (pins, unpins) = c_cluster.prefetched();
    assert_eq!(pins, [to_base32(&image.layout_cid)], "C pinned the layout");
    assert!(unpins.is_empty());
    assert!(pinned(&c, &image.layout_cid));
    assert!(!pinned(&b, &image.layout_cid), "B is not in the pool");
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
    let (repo, listen) = (b.ipfs.repo.clone(), b.ipfs.net());
    let _repo_dir = b.ipfs.keep_repo();
    b.ipfs.kill();
    b_cluster.forget();
    // Same API port (where B's agent expects it), a new swarm port (B's agent must republish it).
    let listen = IpfsNet {
        swarm_port: None,
        ..listen
    };
    b.ipfs = nb
        .enter(|| IpfsDaemon::start_in_with(&repo, listen))
        .unwrap();
    b_cluster.published();
    // B is connected to C again with no dial from the test, by B's agent: it reports a peer
    // only when its own dial connected it, and the daemons never dial by themselves (no
    // bootstrap, no routing, no MDNS, and C's agent only knows B's old swarm port).
    b_cluster.peered(&c.ipfs);
    assert!(swarm_peer_ids(&b).contains(&c.ipfs.peer_id));
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
    eprintln!("multinode: passed in {:?}", started.elapsed());
    drop((b_cluster, c_cluster));
    drop((a, b, c));
    drop(net);
}
