//! Regression guard for the cluster benchmark (`bench/cluster.sh`, scenario 1): a seed node (the
//! operator's Kubo, holding the converted image) and three nodes, each with its own Kubo, agent
//! and containerd, in network namespaces on one bridge whose links are shaped with `tc`. The
//! three nodes pull the image through containerd and their agents at the same moment; the seed
//! must have sent less than three times the image's bytes (its bitswap `DataSent`), so the nodes
//! got part of it from each other. A ratio, not a timing: it holds on a slow machine too.
//!
//! As in `multinode.rs`: every Kubo is configured by the chart's kubo-init script (no bootstrap,
//! no MDNS, routing none) in one private network; each agent keeps its Kubo connected to the
//! seed and to the other nodes (`--peer`, as the agents follow each other's Pods in a cluster),
//! and the daemons dial nobody themselves. Every API listens on its node's own 127.0.0.1.
//!
//! Needs root, iproute2 and the agent binary (`cargo build -p ipfs-image-agent --bin
//! ipfs-image-agent`); run alone with `bash e2e/multinode.sh --test seed_egress` or
//! `cargo test -p e2e-multinode --test seed_egress`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipfs_oci::content_id::to_base32;
use ipfs_oci::convert::{ConvertOptions, ConvertedImage, convert};
use ipfs_oci::ipfs::{KuboClient, KuboOptions};
use ipfs_oci::source::{SourceOptions, SourceRegistry};
use serde_json::Value;
use testkit::{
    Agent, Containerd, IpfsDaemon, IpfsNet, NetNode, PushFormat, Registry, TestImage, TestNet,
    add_noise_layers, block_on, build_busybox_layout, push_layout,
};

const NETWORK_KEY: [u8; 32] = *b"seed egress test private network";

/// Nodes that pull (besides the seed).
const NODES: usize = 3;

/// The image's large layer: big enough for many bitswap rounds (4 MiB = 16 blocks of 256 KiB
/// would all be asked for in one want-list).
const LAYER: usize = 24 << 20;

/// Every link's rate: slow enough that the seed's uplink, not loopback memory copies, is what
/// a pull waits on (as on a real cluster), fast enough to keep the test short.
const RATE: &str = "400mbit";

/// Failure guard for each step (readiness is polled; this only bounds a hang).
const STEP: Duration = Duration::from_secs(180);

fn agent_bin() -> PathBuf {
    testkit::workspace_binary("ipfs-image-agent")
}

fn api_call(api: &str, path: &str) -> Value {
    testkit::http_client(STEP)
        .post(format!("{api}/api/v0/{path}"))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("{api}/api/v0/{path}: {e}"))
}

fn num(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// `(DataSent, DataReceived)` of the daemon's bitswap (call inside its node).
fn bitswap(api: &str) -> (u64, u64) {
    let body = api_call(api, "bitswap/stat");
    (num(&body["DataSent"]), num(&body["DataReceived"]))
}

struct Node {
    net: NetNode,
    ipfs: IpfsDaemon,
    agent: Option<Agent>,
    containerd: Option<Containerd>,
}

impl Node {
    fn bitswap(&self) -> (u64, u64) {
        self.net.enter(|| bitswap(&self.ipfs.api_url))
    }

    /// A reading no pending update will change: polled until two readings 1 s apart agree
    /// (blocks still in flight when the last pull ended move it sooner).
    fn bitswap_settled(&self) -> (u64, u64) {
        testkit::settled("bitswap", Duration::from_secs(1), STEP, || self.bitswap())
    }

    fn peer_count(&self) -> usize {
        self.net.enter(|| {
            api_call(&self.ipfs.api_url, "swarm/peers")["Peers"]
                .as_array()
                .map_or(0, Vec::len)
        })
    }
}

fn convert_on(seed: &Node, registry: &Registry) -> ConvertedImage {
    seed.net.enter(|| {
        let source = SourceRegistry::new(&SourceOptions {
            plain_http: true,
            ..Default::default()
        });
        let reference = format!("{}/test/big:1", registry.addr).parse().unwrap();
        let kubo = KuboClient::new(&seed.ipfs.api_url, KuboOptions::default()).unwrap();
        block_on(convert(
            &kubo,
            &source,
            &reference,
            &ConvertOptions::default(),
        ))
        .unwrap()
    })
}

#[test]
fn nodes_pulling_at_once_share_blocks_so_the_seed_sends_less_than_one_copy_each() {
    let started = Instant::now();
    let mut names = vec!["seed".to_owned()];
    names.extend((1..=NODES).map(|i| format!("n{i}")));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    // Declared first, dropped last: daemons stop before their namespaces are deleted.
    let net = TestNet::create(&names).expect("network namespaces (needs root, iproute2)");
    net.shape(RATE).expect("tc shaping (iproute2)");

    // The image: busybox and one layer of incompressible bytes, in a registry inside the seed.
    let dir = tempfile::tempdir().unwrap();
    let layout = build_busybox_layout(dir.path()).unwrap();
    add_noise_layers(&layout, TestImage::AMD64, "big", &[LAYER], 0x5eed_e6e5).unwrap();
    let seed_net = net.node(0).clone();
    let mut registry = seed_net.enter(|| {
        let r = Registry::start().unwrap();
        push_layout(&layout, "big", &r, "test/big:1", PushFormat::Oci).unwrap();
        r
    });

    // Every Kubo first (the agents need each other's addresses), then agents and containerd.
    let mut nodes: Vec<Node> = net
        .nodes
        .iter()
        .map(|n| {
            let ipfs = n
                .enter(|| IpfsDaemon::start_with(IpfsNet::swarm_on(n.ip).private(NETWORK_KEY)))
                .unwrap();
            Node {
                net: n.clone(),
                ipfs,
                agent: None,
                containerd: None,
            }
        })
        .collect();
    let image = convert_on(&nodes[0], &registry);
    registry.stop();
    let cid = to_base32(&image.root_cid);
    eprintln!(
        "seed_egress: converted on the seed: {cid}, {} bytes",
        image.total_size
    );
    let addrs: Vec<String> = nodes.iter().map(|n| n.ipfs.swarm_multiaddr()).collect();
    for (i, node) in nodes.iter_mut().enumerate().skip(1) {
        let peers: Vec<&str> = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, a)| ["--peer", a.as_str()])
            .collect();
        let (agent, containerd) = node.net.enter(|| {
            let agent = Agent::start(&agent_bin(), &node.ipfs.api_url, None, &peers)
                .unwrap_or_else(|e| panic!("agent: {e:#}"));
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
            (agent, c)
        });
        node.agent = Some(agent);
        node.containerd = Some(containerd);
    }
    // Each node's agent connected its Kubo to the seed and to the other nodes.
    let deadline = Instant::now() + STEP;
    for node in &nodes[1..] {
        while node.peer_count() < NODES {
            assert!(
                Instant::now() < deadline,
                "{}: {} peers, want {NODES}",
                node.net.netns.name(),
                node.peer_count()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // All nodes pull at the same moment, each through its own containerd and agent.
    let (sent0, _) = nodes[0].bitswap_settled();
    let received0: Vec<u64> = nodes[1..].iter().map(|n| n.bitswap().1).collect();
    std::thread::scope(|s| {
        let pulls: Vec<_> = nodes[1..]
            .iter()
            .map(|node| {
                let cid = &cid;
                s.spawn(move || {
                    let ctd = node.containerd.as_ref().unwrap();
                    let agent = node.agent.as_ref().unwrap();
                    let reference = format!("{}/ipfs/{cid}:latest", agent.addr);
                    node.net.enter(|| {
                        ctd.pull_with_hosts_dir(&reference).unwrap_or_else(|e| {
                            panic!("pull on {}: {e:#}\n{}", node.net.netns.name(), agent.log())
                        });
                        let out = ctd
                            .run(&reference, &["/bin/busybox", "echo", "pulled"])
                            .unwrap();
                        assert_eq!(out.trim(), "pulled");
                    });
                })
            })
            .collect();
        for p in pulls {
            p.join().expect("a pull thread panicked");
        }
    });

    let (sent1, _) = nodes[0].bitswap_settled();
    let sent = sent1 - sent0;
    let received: Vec<u64> = nodes[1..]
        .iter()
        .zip(&received0)
        .map(|(n, r0)| n.bitswap_settled().1 - r0)
        .collect();
    let size = image.total_size;
    let ratio = sent as f64 / size as f64;
    eprintln!(
        "seed_egress: the seed sent {sent} bytes = {ratio:.2}x the image ({size} bytes) to {NODES} \
         nodes pulling at once; each node received {received:?} over bitswap ({:?})",
        started.elapsed()
    );
    // Every node fetched (nearly) the whole image over bitswap, so the nodes together took at
    // least N copies; the seed sent fewer, so the rest came from one another.
    for (i, r) in received.iter().enumerate() {
        assert!(
            *r >= LAYER as u64,
            "node {} received only {r} bytes of a {size}-byte image over bitswap",
            i + 1
        );
    }
    assert!(
        sent < NODES as u64 * size,
        "the seed sent {sent} bytes, {ratio:.2}x the image: not less than one copy per node \
         ({NODES}x), so the nodes shared nothing (received {received:?})"
    );
    drop(nodes);
    drop(net);
}
