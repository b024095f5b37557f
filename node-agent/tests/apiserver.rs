//! The agent binary (`serve --kubernetes`) against a real kube-apiserver (testkit::KubeApi),
//! as the chart's agent ServiceAccount with exactly the chart's RBAC, over real Kubo daemons:
//! the mirror catalog from IpfsImages, prefetch pins and this node's status entry, peering by
//! Pod annotations, and two agents sharing `status` with the operator binary by server-side
//! apply. Everything is read back from the API server, Kubo and the agent's registry; the
//! audit log shows which calls each identity made.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ipfs_oci::content_id::to_base32;
use ipfs_oci::convert::{ConvertOptions, convert};
use ipfs_oci::ipfs::{IpfsStore, KuboClient, KuboOptions};
use ipfs_oci::source::{SourceOptions, SourceRegistry};
use serde_json::{Value, json};
use testkit::kube_world::{
    AGENT_GRANTS, AGENT_SA, ChartWorld, OPERATOR_GRANTS, OPERATOR_SA, OperatorProcess,
    RELEASE_NAMESPACE, USER_NAMESPACE as NS, assert_calls_granted, calls_of, get_json, requests_by,
    sa_user,
};
use testkit::{Agent, IpfsDaemon, KubeApi, block_on, wait_until};

const STEP: Duration = Duration::from_secs(60);
const CID_B: &str = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipfs-image-agent"))
}

fn kubo(d: &IpfsDaemon) -> KuboClient {
    KuboClient::new(&d.api_url, KuboOptions::default()).unwrap()
}

/// The agent binary on node `node` as the agent ServiceAccount, with its own state directory.
struct NodeAgent {
    agent: Agent,
    state: tempfile::TempDir,
}

impl NodeAgent {
    fn start(kubeconfig: &Path, ipfs: &IpfsDaemon, node: &str, extra: &[&str]) -> Self {
        let state = tempfile::tempdir().unwrap();
        let state_dir = state.path().display().to_string();
        let mut args = vec!["--node-name", node, "--state-dir", &state_dir];
        args.extend(extra);
        let agent = Agent::start_in_cluster(&agent_bin(), &ipfs.api_url, kubeconfig, &args)
            .unwrap_or_else(|e| panic!("agent {node}: {e:#}"));
        Self { agent, state }
    }

    fn pin_record(&self) -> Option<Value> {
        let text = std::fs::read(self.state.path().join("pins.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

fn image_yaml(name: &str, spec: Value) -> String {
    json!({
        "apiVersion": "ipfsimage.dev/v1alpha1",
        "kind": "IpfsImage",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    })
    .to_string()
}

/// Write `status` as the admin (what the operator would have written).
fn set_status(api: &KubeApi, name: &str, status: Value) {
    api.kubectl(&[
        "patch",
        "ipfsimg",
        "-n",
        NS,
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &json!({ "status": status }).to_string(),
    ])
    .unwrap();
}

fn node_yaml(name: &str, labels: Value) -> String {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}})
        .to_string()
}

fn get_image(api: &KubeApi, name: &str) -> Option<Value> {
    get_json(api, "ipfsimg", NS, name).unwrap()
}

/// `status.nodes` of `name` (empty when none or gone).
fn nodes_of(api: &KubeApi, name: &str) -> Vec<Value> {
    get_image(api, name)
        .and_then(|o| o["status"]["nodes"].as_array().cloned())
        .unwrap_or_default()
}

/// The entry without its `lastTransitionTime` (checked to be an RFC 3339 UTC time).
fn without_time(entry: &Value) -> Value {
    let mut e = entry.clone();
    let t = e
        .as_object_mut()
        .unwrap()
        .remove("lastTransitionTime")
        .unwrap_or_else(|| panic!("no lastTransitionTime: {entry}"));
    assert!(t.as_str().unwrap().ends_with('Z'), "{t}");
    e
}

/// The `managedFields` entry of `manager` on `obj`, if any.
fn managed<'a>(obj: &'a Value, manager: &str, subresource: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|m| m["manager"] == manager && m["subresource"].as_str().unwrap_or("") == subresource)
}

/// Exactly what server-side apply records for one agent: its own `nodes` entry, nothing else.
fn agent_owns_only_its_entry(obj: &Value, node: &str, fields: &[&str]) {
    let manager = format!("ipfs-image-agent-{node}");
    let m = managed(obj, &manager, "status")
        .unwrap_or_else(|| panic!("no {manager} on status: {:#}", obj["metadata"]));
    assert_eq!(m["operation"], "Apply", "{m}");
    let mut entry = serde_json::Map::new();
    entry.insert(".".into(), json!({}));
    for f in fields {
        entry.insert(format!("f:{f}"), json!({}));
    }
    let key = format!("k:{}", json!({ "node": node }));
    assert_eq!(
        m["fieldsV1"],
        json!({"f:status": {"f:nodes": { key: entry }}}),
        "{manager} owns exactly its entry"
    );
}

/// `HEAD` of `repo:tag` of `registry` through the agent's mirror: the status code.
fn mirror_head(agent: &Agent, registry: &str, repo_tag: &str) -> u16 {
    let (repo, tag) = repo_tag.rsplit_once(':').unwrap();
    testkit::http_client(Duration::from_secs(10))
        .head(format!(
            "http://{}/v2/{repo}/manifests/{tag}?ns={registry}",
            agent.addr
        ))
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[test]
fn the_agent_binary_keeps_catalog_pins_and_its_status_entries() {
    let world = ChartWorld::start().unwrap();
    let api = &world.api;
    let ipfs = kubo(&world.ipfs);
    let source = world.busybox();
    let registry = world.registry.addr.clone();

    // busybox converted into the agent's Kubo, then unpinned: the agent is to pin it. A pin
    // somebody else made, and content for an image selected by a label that goes away.
    let plain = SourceRegistry::new(&SourceOptions {
        plain_http: true,
        ..Default::default()
    });
    let (image, foreign, ssd) = block_on(async {
        let image = convert(
            &ipfs,
            &plain,
            &source.parse().unwrap(),
            &ConvertOptions::default(),
        )
        .await
        .unwrap();
        ipfs.pin_rm(&image.layout_cid).await.unwrap();
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
        (image, foreign, ssd)
    });
    let (root, layout) = (to_base32(&image.root_cid), to_base32(&image.layout_cid));
    let (foreign_s, ssd_s) = (to_base32(&foreign), to_base32(&ssd));
    let size = image.total_size;

    world
        .apply(
            "node-1",
            &node_yaml("node-1", json!({"pool": "cache", "disk": "ssd"})),
        )
        .unwrap();
    let tagged = |tag: &str| format!("{}:{tag}", source.rsplit_once(':').unwrap().0);
    let objects = [
        (
            "app",
            json!({"source": source, "prefetch": {"nodeSelector": {"pool": "cache"}}}),
            json!({"phase": "Ready", "cid": root, "layoutCid": layout, "size": size}),
        ),
        (
            "foreign",
            json!({"cid": foreign_s, "prefetch": {"nodeSelector": {}}}),
            json!({"phase": "Ready", "cid": foreign_s, "layoutCid": foreign_s, "size": 22}),
        ),
        (
            "ssd",
            json!({"cid": ssd_s, "prefetch": {"nodeSelector": {"disk": "ssd"}}}),
            json!({"phase": "Ready", "cid": ssd_s, "layoutCid": ssd_s, "size": 17}),
        ),
        (
            "gpu-only",
            json!({"cid": CID_B, "prefetch": {"nodeSelector": {"pool": "gpu"}}}),
            json!({"phase": "Ready", "cid": CID_B, "layoutCid": CID_B, "size": 5}),
        ),
        (
            "pending",
            json!({"source": tagged("pending")}),
            json!({"phase": "Pinning", "cid": root}),
        ),
        (
            "unmirrored",
            json!({"source": tagged("unmirrored"), "mirror": false}),
            json!({"phase": "Ready", "cid": root}),
        ),
    ];
    for (name, spec, status) in &objects {
        world.apply(name, &image_yaml(name, spec.clone())).unwrap();
        set_status(api, name, status.clone());
    }

    // The agent binary, as its ServiceAccount, on node-1.
    let kubeconfig = api.service_account(RELEASE_NAMESPACE, AGENT_SA).unwrap();
    const INTERVAL: Duration = Duration::from_secs(4);
    let agent = NodeAgent::start(
        &kubeconfig,
        &world.ipfs,
        "node-1",
        // The objects live in the user namespace: the administrator lets it answer references.
        &["--status-interval", "4s", "--mirror-namespace", NS],
    );
    let repo_tag = |s: &str| s.split_once('/').unwrap().1.to_owned();
    let fail = |what: &str, e: anyhow::Error| -> ! {
        panic!("{what}: {e:#}\nagent log:\n{}", agent.agent.log())
    };

    // Catalog: the Ready, mirrored source is served from IPFS; the others are fast misses.
    wait_until("app in the mirror catalog", STEP, || {
        Ok(mirror_head(&agent.agent, &registry, &repo_tag(&source)) == 200)
    })
    .unwrap_or_else(|e| fail("catalog", e));
    for tag in ["pending", "unmirrored"] {
        let code = mirror_head(&agent.agent, &registry, &repo_tag(&tagged(tag)));
        assert_eq!(code, 404, "{tag} is not in the catalog");
    }

    // The first write of `ssd` (after its pin): then the node loses `disk`, at once, so the
    // release is due only one status interval after that write.
    wait_until("ssd's entry", STEP, || Ok(!nodes_of(api, "ssd").is_empty()))
        .unwrap_or_else(|e| fail("ssd entry", e));
    let ssd_written = Instant::now();
    let mut expected_pins = vec![layout.clone(), ssd_s.clone()];
    expected_pins.sort();
    assert_eq!(agent.pin_record(), Some(json!({ "pins": expected_pins })));
    api.kubectl(&["label", "node", "node-1", "disk-"]).unwrap();

    // Pins: the matching images; the foreign pin stays as it is (and is not recorded).
    block_on(async {
        assert!(ipfs.is_pinned(&image.layout_cid).await.unwrap());
        assert!(ipfs.is_pinned(&foreign).await.unwrap());
    });

    // Status: this node's entry, and only it, on each matching object.
    let entry = |cid: &str, bytes: u64| json!({"node": "node-1", "cid": cid, "pinned": true, "bytes": bytes});
    for (name, want) in [
        ("app", entry(&root, size)),
        ("foreign", entry(&foreign_s, 22)),
    ] {
        wait_until(&format!("{name}'s entry"), STEP, || {
            Ok(nodes_of(api, name).len() == 1)
        })
        .unwrap_or_else(|e| fail(name, e));
        let nodes = nodes_of(api, name);
        assert_eq!(without_time(&nodes[0]), want, "{name}");
        let obj = get_image(api, name).unwrap();
        agent_owns_only_its_entry(
            &obj,
            "node-1",
            &["node", "cid", "pinned", "bytes", "lastTransitionTime"],
        );
        // The admin's status write is still there, untouched.
        assert_eq!(obj["status"]["phase"], "Ready");
    }
    for name in ["gpu-only", "pending", "unmirrored"] {
        assert!(
            nodes_of(api, name).is_empty(),
            "{name} does not select node-1"
        );
    }

    // The node stopped matching `ssd`: unpinned, and the entry released — but not before the
    // status interval since the entry's first write.
    wait_until("ssd released", STEP, || Ok(nodes_of(api, "ssd").is_empty()))
        .unwrap_or_else(|e| fail("ssd release", e));
    let gap = ssd_written.elapsed();
    // Slack: `ssd_written` was taken up to one kubectl poll after the write itself.
    assert!(
        gap >= INTERVAL - Duration::from_secs(1),
        "rate limit: {gap:?}"
    );
    assert!(!block_on(ipfs.is_pinned(&ssd)).unwrap());
    let ssd_obj = get_image(api, "ssd").unwrap();
    assert!(
        managed(&ssd_obj, "ipfs-image-agent-node-1", "status").is_none(),
        "a manager that owns nothing more is dropped: {:#}",
        ssd_obj["metadata"]["managedFields"]
    );

    // Objects go: `foreign` first (not the agent's pin: kept), then `app` (its pin: removed,
    // and its source leaves the catalog). Once `app` is handled, so is `foreign`.
    api.kubectl(&["delete", "ipfsimg", "-n", NS, "foreign"])
        .unwrap();
    api.kubectl(&["delete", "ipfsimg", "-n", NS, "app"])
        .unwrap();
    wait_until("app unpinned and out of the catalog", STEP, || {
        let pinned = block_on(ipfs.is_pinned(&image.layout_cid))?;
        Ok(!pinned && mirror_head(&agent.agent, &registry, &repo_tag(&source)) == 404)
    })
    .unwrap_or_else(|e| fail("app gone", e));
    assert!(
        block_on(ipfs.is_pinned(&foreign)).unwrap(),
        "a foreign pin survives"
    );
    assert_eq!(agent.pin_record(), Some(json!({ "pins": [] })));

    // What it asked the server for: only what the chart grants (reads of IpfsImages and its
    // Node, writes of status), nothing refused, and one write per change (app, foreign, ssd,
    // ssd's release).
    let (calls, _) = calls_of(api, &sa_user(RELEASE_NAMESPACE, AGENT_SA)).unwrap();
    let called: BTreeSet<&str> = calls.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(
        called,
        BTreeSet::from(["ipfsimages", "ipfsimages/status", "nodes"])
    );
    assert_calls_granted(api, AGENT_SA, &AGENT_GRANTS);
    let writes = requests_by(api, &sa_user(RELEASE_NAMESPACE, AGENT_SA))
        .unwrap()
        .into_iter()
        .filter(|e| e["verb"] == "patch")
        .inspect(|e| {
            // Server-side apply under this node's own manager, forced (no conflicts to retry).
            let uri = e["requestURI"].as_str().unwrap();
            assert!(
                uri.contains("fieldManager=ipfs-image-agent-node-1"),
                "{uri}"
            );
            assert!(uri.contains("force=true"), "{uri}");
        })
        .count();
    assert_eq!(writes, 4, "one write per change");
}

fn pod_yaml(name: &str, annotation: Option<String>) -> String {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": RELEASE_NAMESPACE,
            "labels": {"app.kubernetes.io/component": "agent"},
        },
        // Never scheduled (no kubelet here): the Pod object is what peering reads and writes.
        "spec": {
            "serviceAccountName": AGENT_SA,
            "automountServiceAccountToken": false,
            "containers": [{"name": "agent", "image": "ipfs-image-agent:test"}],
        },
    });
    if let Some(a) = annotation {
        pod["metadata"]["annotations"] = json!({ (ipfs_image_api::peer::PEER_ANNOTATION): a });
    }
    pod.to_string()
}

#[test]
fn the_agent_binary_publishes_its_peer_and_follows_the_pods() {
    let world = ChartWorld::start().unwrap();
    let api = &world.api;
    let a = &world.ipfs;
    let b = IpfsDaemon::start().unwrap();
    let (ipfs_a, ipfs_b) = (kubo(a), kubo(&b));
    let (id_a, id_b) = block_on(async { (ipfs_a.id().await.unwrap(), ipfs_b.id().await.unwrap()) });
    world.apply("agent-a", &pod_yaml("agent-a", None)).unwrap();
    let b_peer = json!({"id": id_b.peer_id, "addrs": [b.swarm_multiaddr()]}).to_string();
    world
        .apply("agent-b", &pod_yaml("agent-b", Some(b_peer)))
        .unwrap();

    let kubeconfig = api.service_account(RELEASE_NAMESPACE, AGENT_SA).unwrap();
    let agent = NodeAgent::start(
        &kubeconfig,
        a,
        "node-a",
        &[
            "--pod-name",
            "agent-a",
            "--pod-namespace",
            RELEASE_NAMESPACE,
            "--peer-selector",
            "app.kubernetes.io/component=agent",
        ],
    );
    let fail = |what: &str, e: anyhow::Error| -> ! {
        panic!("{what}: {e:#}\nagent log:\n{}", agent.agent.log())
    };
    let pod = |name: &str| get_json(api, "pod", RELEASE_NAMESPACE, name).unwrap();
    let annotation = |name: &str| {
        pod(name).and_then(|p| {
            p["metadata"]["annotations"][ipfs_image_api::peer::PEER_ANNOTATION]
                .as_str()
                .map(str::to_owned)
        })
    };

    // Published on its own Pod: this daemon's ID and addresses, as the server stores them.
    wait_until("agent-a's peer annotation", STEP, || {
        Ok(annotation("agent-a").is_some())
    })
    .unwrap_or_else(|e| fail("publish", e));
    let published: Value = serde_json::from_str(&annotation("agent-a").unwrap()).unwrap();
    assert_eq!(
        published,
        json!({"id": id_a.peer_id, "addrs": id_a.addresses})
    );
    // A merge patch of that one annotation, recorded under the agent's own manager name (its
    // User-Agent), not `unknown`.
    let stored = pod("agent-a").unwrap();
    let m = managed(&stored, "ipfs-image-agent", "")
        .unwrap_or_else(|| panic!("no ipfs-image-agent manager: {:#}", stored["metadata"]));
    assert_eq!(m["operation"], "Update");
    assert_eq!(
        m["fieldsV1"],
        json!({"f:metadata": {"f:annotations": {"f:ipfsimage.dev/peer": {}}}}),
        "the agent wrote one annotation, nothing else"
    );

    // Connected to b, found through b's Pod.
    wait_until("a connected to b", STEP, || {
        let peers = block_on(ipfs_a.swarm_peers())?;
        Ok(peers.iter().any(|p| p.peer_id == id_b.peer_id))
    })
    .unwrap_or_else(|e| fail("peer b", e));

    // b's Pod leaves: a drops b and closes the connection.
    api.kubectl(&[
        "delete",
        "pod",
        "-n",
        RELEASE_NAMESPACE,
        "agent-b",
        "--wait=true",
    ])
    .unwrap();
    wait_until("a closed its connection to b", STEP, || {
        let peers = block_on(ipfs_a.swarm_peers())?;
        Ok(peers.iter().all(|p| p.peer_id != id_b.peer_id))
    })
    .unwrap_or_else(|e| fail("drop b", e));

    // Its calls: it read the Pods of its namespace and wrote its own Pod, nothing else.
    let user = sa_user(RELEASE_NAMESPACE, AGENT_SA);
    assert_calls_granted(api, AGENT_SA, &AGENT_GRANTS);
    let (calls, _) = calls_of(api, &user).unwrap();
    for verb in ["list", "watch", "patch"] {
        let call = (
            String::new(),
            "pods".to_owned(),
            verb.to_owned(),
            Some(RELEASE_NAMESPACE.to_owned()),
        );
        assert!(calls.contains(&call), "{call:?} not made: {calls:#?}");
    }
    let pod_writes: Vec<String> = requests_by(api, &user)
        .unwrap()
        .iter()
        .filter(|e| e["verb"] == "patch" && e["objectRef"]["resource"] == "pods")
        .map(|e| e["objectRef"]["name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(pod_writes, ["agent-a"], "only its own Pod, once");
}

#[test]
fn two_agents_and_the_operator_share_the_status_by_server_side_apply() {
    let world = ChartWorld::start().unwrap();
    let api = &world.api;
    let nodes = ["n1", "n2"];
    for n in nodes {
        world
            .apply(n, &node_yaml(n, json!({"pool": "cache"})))
            .unwrap();
    }

    // The operator binary, as its ServiceAccount, on the world's Kubo; an agent per node with
    // its own Kubo, peered to the operator's (where the image's blocks come from).
    let operator_kubeconfig = api.service_account(RELEASE_NAMESPACE, OPERATOR_SA).unwrap();
    let operator = OperatorProcess::start(
        &testkit::workspace_binary("ipfs-image-operator"),
        &operator_kubeconfig,
        "ipfs-image-operator-test",
        &world,
        &[],
    )
    .unwrap();
    let agent_kubeconfig = api.service_account(RELEASE_NAMESPACE, AGENT_SA).unwrap();
    let seed = world.ipfs.swarm_multiaddr();
    let kubos: Vec<IpfsDaemon> = nodes.iter().map(|_| IpfsDaemon::start().unwrap()).collect();
    let agents: Vec<NodeAgent> = nodes
        .iter()
        .zip(&kubos)
        .map(|(n, k)| {
            NodeAgent::start(
                &agent_kubeconfig,
                k,
                n,
                &["--status-interval", "1s", "--peer", &seed],
            )
        })
        .collect();
    let logs = || {
        let mut text = format!("operator log:\n{}", operator.log_text());
        for (n, a) in nodes.iter().zip(&agents) {
            text.push_str(&format!("\nagent {n} log:\n{}", a.agent.log()));
        }
        text
    };

    let spec = json!({
        "source": world.busybox(),
        "prefetch": {"nodeSelector": {"pool": "cache"}},
        "minReplicas": 2,
    });
    world.apply("shared", &image_yaml("shared", spec)).unwrap();

    // Ready needs both nodes' pins: the operator's last status write comes after both agents'.
    let mut last = None;
    wait_until(
        "shared Ready on two nodes",
        Duration::from_secs(120),
        || {
            last = get_image(api, "shared");
            let o = last.as_ref();
            let pinned = o
                .and_then(|o| o["status"]["nodes"].as_array())
                .map(|n| n.iter().filter(|e| e["pinned"] == true).count());
            Ok(o.map(|o| o["status"]["phase"] == "Ready").unwrap_or(false) && pinned == Some(2))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{last:#?}\n{}", logs()));
    let obj = get_image(api, "shared").unwrap();
    let status = &obj["status"];
    let cid = status["cid"].as_str().unwrap().to_owned();
    // In the order the agents first wrote them: sort for the comparison.
    let mut entries: Vec<Value> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(without_time)
        .collect();
    entries.sort_by_key(|e| e["node"].as_str().unwrap().to_owned());
    let size = status["size"].as_u64().unwrap();
    let entry = |n: &str| json!({"node": n, "cid": cid, "pinned": true, "bytes": size});
    assert_eq!(entries, [entry("n1"), entry("n2")], "both nodes' entries");
    for field in [
        "phase",
        "cid",
        "image",
        "layoutCid",
        "sourceDigest",
        "size",
        "observedGeneration",
    ] {
        assert!(
            !status[field].is_null(),
            "operator field {field}: {status:#}"
        );
    }
    let ready = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "True", "{ready}");

    // managedFields: each agent owns its own entry (Apply, status subresource) and nothing
    // else; the operator's status writes (merge patches: Update) own its fields and no entry.
    let fields = ["node", "cid", "pinned", "bytes", "lastTransitionTime"];
    for n in nodes {
        agent_owns_only_its_entry(&obj, n, &fields);
    }
    let op = managed(&obj, "ipfs-image-operator", "status")
        .unwrap_or_else(|| panic!("no operator status manager: {:#}", obj["metadata"]));
    assert_eq!(op["operation"], "Update", "{op}");
    let owned: BTreeSet<&str> = op["fieldsV1"]["f:status"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for f in [
        "f:phase",
        "f:cid",
        "f:image",
        "f:layoutCid",
        "f:conditions",
        "f:observedGeneration",
    ] {
        assert!(owned.contains(f), "operator owns {f}: {owned:?}");
    }
    assert!(
        !owned.contains("f:nodes"),
        "the operator owns no node entry: {owned:?}"
    );
    // The finalizer (kube's finalizer helper, no explicit manager) under the operator's name.
    let main = managed(&obj, "ipfs-image-operator", "")
        .unwrap_or_else(|| panic!("no operator manager: {:#}", obj["metadata"]));
    assert_eq!(
        main["fieldsV1"]["f:metadata"]["f:finalizers"],
        json!({".": {}, "v:\"ipfsimage.dev/unpin\"": {}}),
        "{main}"
    );
    eprintln!("managedFields: {:#}", obj["metadata"]["managedFields"]);

    // n2 leaves the pool: its agent unpins and releases its entry; the operator then writes
    // Pinning (1 of 2). n1's entry and the operator's fields survive both writes.
    let n1_before = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["node"] == "n1")
        .unwrap()
        .clone();
    api.kubectl(&["label", "node", "n2", "pool-"]).unwrap();
    wait_until("n2 released, shared back to Pinning", STEP, || {
        last = get_image(api, "shared");
        let o = last.as_ref().unwrap();
        Ok(o["status"]["nodes"].as_array().map(Vec::len) == Some(1)
            && o["status"]["phase"] == "Pinning")
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{last:#?}\n{}", logs()));
    let after = get_image(api, "shared").unwrap();
    assert_eq!(
        after["status"]["nodes"],
        json!([n1_before]),
        "n1's entry untouched"
    );
    assert_eq!(after["status"]["cid"], cid.as_str());
    assert!(managed(&after, "ipfs-image-agent-n2", "status").is_none());
    agent_owns_only_its_entry(&after, "n1", &fields);
    let layout = ipfs_oci::content_id::parse_cid(status["layoutCid"].as_str().unwrap()).unwrap();
    assert!(block_on(kubo(&kubos[0]).is_pinned(&layout)).unwrap());
    assert!(!block_on(kubo(&kubos[1]).is_pinned(&layout)).unwrap());

    // Each identity made only calls the chart grants it, and none was refused.
    assert_calls_granted(api, OPERATOR_SA, &OPERATOR_GRANTS);
    assert_calls_granted(api, AGENT_SA, &AGENT_GRANTS);
}

/// `--prefetch-budget`: a node holds at most that many bytes of prefetched images. Two images
/// fit and are pinned; a third, created later, does not and says why, without pushing either
/// out; once one of the first goes, the third is pinned.
#[test]
fn prefetch_keeps_to_the_nodes_budget() {
    let world = ChartWorld::start().unwrap();
    let api = &world.api;
    let ipfs = kubo(&world.ipfs);
    let cids: Vec<_> = block_on(async {
        let mut out = Vec::new();
        for text in ["first image", "second image", "late image"] {
            out.push(ipfs.add_bytes(Bytes::from(text)).await.unwrap().cid);
        }
        out
    });
    world
        .apply("node-1", &node_yaml("node-1", json!({})))
        .unwrap();
    let declare = |name: &str, cid: &ipfs_oci::Cid| {
        let c = to_base32(cid);
        world
            .apply(
                name,
                &image_yaml(name, json!({"cid": c, "prefetch": {"nodeSelector": {}}})),
            )
            .unwrap();
        // 100 MB each, as the operator would have measured them.
        set_status(
            api,
            name,
            json!({"phase": "Ready", "cid": c, "layoutCid": c, "size": 100_000_000}),
        );
    };
    declare("first", &cids[0]);
    declare("second", &cids[1]);
    let kubeconfig = api.service_account(RELEASE_NAMESPACE, AGENT_SA).unwrap();
    let agent = NodeAgent::start(
        &kubeconfig,
        &world.ipfs,
        "node-1",
        &["--status-interval", "1s", "--prefetch-budget", "250MB"],
    );
    let fail = |what: &str, e: anyhow::Error| -> ! {
        panic!("{what}: {e:#}\nagent log:\n{}", agent.agent.log())
    };
    let pinned = |i: usize| block_on(ipfs.is_pinned(&cids[i])).unwrap();
    let entry = |name: &str| nodes_of(api, name).into_iter().next();
    wait_until("first and second pinned", STEP, || {
        Ok(pinned(0)
            && pinned(1)
            && entry("first").is_some_and(|e| e["pinned"] == true)
            && entry("second").is_some_and(|e| e["pinned"] == true))
    })
    .unwrap_or_else(|e| fail("within budget", e));

    // The late image (250 MB = 262 144 000 bytes of budget; 200 000 000 held): refused.
    declare("aa-late", &cids[2]);
    // (Its first entry may say it waits for the import: the status came after the object.)
    wait_until("aa-late's entry names the budget", STEP, || {
        Ok(entry("aa-late").is_some_and(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("prefetch budget"))
        }))
    })
    .unwrap_or_else(|e| fail("over budget", e));
    let late = entry("aa-late").unwrap();
    assert_eq!(late["pinned"], false, "{late}");
    let message = late["message"].as_str().unwrap();
    assert!(
        message.contains("prefetch budget") && message.contains("--prefetch-budget"),
        "{message}"
    );
    assert!(!pinned(2), "over the budget");
    assert!(pinned(0) && pinned(1), "a new object pushed out a held one");

    // Room again: the late image is pinned.
    api.kubectl(&["delete", "ipfsimg", "-n", NS, "second"])
        .unwrap();
    wait_until("aa-late pinned once second is gone", STEP, || {
        Ok(pinned(2) && !pinned(1) && entry("aa-late").is_some_and(|e| e["pinned"] == true))
    })
    .unwrap_or_else(|e| fail("room again", e));
    assert!(pinned(0));
}

/// The chart's admission policy on a real API server, with tokens bound to agent Pods on two
/// nodes (as kubelet requests them): an agent patches its own Pod and its own node's
/// `status.nodes` entry, and the server refuses it the other agent's Pod, the other node's entry
/// and every other status field. The agent binary works under it with such a token.
#[test]
fn the_admission_policy_keeps_each_agent_to_its_pod_and_its_node_entry() {
    let world = ChartWorld::start().unwrap();
    let api = &world.api;
    let policy =
        testkit::kube_world::helm_template(&["templates/agent-admission-policy.yaml"]).unwrap();
    world.apply("agent-policy", &policy).unwrap();
    for (node, pod) in [("node-1", "agent-a"), ("node-2", "agent-b")] {
        world.apply(node, &node_yaml(node, json!({}))).unwrap();
        let spec = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": RELEASE_NAMESPACE},
            "spec": {"nodeName": node, "serviceAccountName": AGENT_SA,
                     "automountServiceAccountToken": false,
                     "containers": [{"name": "agent", "image": "agent:1"}]}});
        world.apply(pod, &spec.to_string()).unwrap();
    }
    let a = api
        .pod_token_kubeconfig(RELEASE_NAMESPACE, AGENT_SA, "agent-a")
        .unwrap();
    // Raw patches as agent-a (kubectl would `get` first, which the agent may not).
    // `pod`: that Pod; else the IpfsImage `object`'s status.
    let patch_as =
        |kubeconfig: &Path, pod: Option<&str>, object: &str, kind: &str, patch: Value| {
            block_on(async {
                let client = KubeApi::client_with(kubeconfig).await.unwrap();
                let params = kube::api::PatchParams::default();
                let patch = match kind {
                    "json" => {
                        kube::api::Patch::Json::<Value>(serde_json::from_value(patch).unwrap())
                    }
                    _ => kube::api::Patch::Merge(patch),
                };
                let result = match pod {
                    Some(pod) => kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(
                        client,
                        RELEASE_NAMESPACE,
                    )
                    .patch(pod, &params, &patch)
                    .await
                    .map(|_| ()),
                    None => kube::Api::<ipfs_image_api::IpfsImage>::namespaced(client, NS)
                        .patch_status(object, &params, &patch)
                        .await
                        .map(|_| ()),
                };
                match result {
                    Ok(()) => (true, String::new()),
                    Err(kube::Error::Api(status)) => (false, status.message),
                    Err(e) => panic!("not an answer from the server: {e}"),
                }
            })
        };
    let annotate = |pod: &str, value: &str| {
        let patch = json!({"metadata": {"annotations": {"test.ipfsimage.dev/probe": value}}});
        patch_as(&a, Some(pod), "", "merge", patch)
    };
    // The policy takes effect once the server has compiled it: until then the other Pod is
    // still writable (RBAC allows it), so wait for the first refusal.
    let mut last = (true, String::new());
    wait_until(
        "the policy refuses agent-a the Pod of agent-b",
        STEP,
        || {
            last = annotate("agent-b", "x");
            Ok(!last.0)
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}: {last:?}"));
    assert!(last.1.contains("only its own Pod"), "{}", last.1);
    let own = annotate("agent-a", "x");
    assert!(own.0, "its own Pod: {}", own.1);

    // An object with node-2's entry (as node-2's agent wrote it) and the operator's fields.
    let ipfs = kubo(&world.ipfs);
    let cid = block_on(ipfs.add_bytes(Bytes::from_static(b"policy test image")))
        .unwrap()
        .cid;
    let c = to_base32(&cid);
    world
        .apply(
            "img",
            &image_yaml("img", json!({"cid": c, "prefetch": {"nodeSelector": {}}})),
        )
        .unwrap();
    // Every field the operator writes (the policy compares each one before and after).
    set_status(
        api,
        "img",
        json!({"phase": "Ready", "cid": c, "layoutCid": c, "size": 17,
               "image": format!("localhost:5050/ipfs/{c}"), "observedGeneration": 1,
               "importedSpec": {"cid": c}, "platforms": ["linux/amd64"],
               "summary": {"size": "17B", "nodes": "2/0"},
               "lastCheckTime": "2026-12-04T01:02:03Z",
               "conditions": [{"type": "Ready", "status": "True", "reason": "Pinned",
                               "message": "pinned", "observedGeneration": 1,
                               "lastTransitionTime": "2026-12-04T01:02:03Z"}],
               "nodes": [{"node": "node-2", "cid": c, "pinned": true, "bytes": 17,
                          "lastTransitionTime": "2026-12-04T01:02:04Z"}]}),
    );
    // And one the operator has not written yet: the agent's entry creates `status`.
    world
        .apply(
            "fresh",
            &image_yaml("fresh", json!({"cid": c, "prefetch": {"nodeSelector": {}}})),
        )
        .unwrap();
    let status_patch = |kubeconfig: &Path, kind: &str, patch: Value| {
        patch_as(kubeconfig, None, "img", kind, patch)
    };
    let refused = [
        (
            "json",
            json!([{"op": "replace", "path": "/status/nodes/0/pinned", "value": false}]),
            "only its own node's status.nodes entry",
        ),
        (
            "merge",
            json!({"status": {"phase": "Failed"}}),
            "only status.nodes",
        ),
        (
            "json",
            json!([{"op": "add", "path": "/status/nodes/-",
                    "value": {"node": "node-3", "pinned": true}}]),
            "only its own node's status.nodes entry",
        ),
    ];
    for (kind, patch, why) in &refused {
        let (ok, stderr) = status_patch(&a, kind, patch.clone());
        assert!(!ok && stderr.contains(why), "{patch}: {stderr}");
    }
    // The same ServiceAccount without a Pod-bound token (a client certificate): no node, no
    // status writes.
    let unbound = api.service_account(RELEASE_NAMESPACE, AGENT_SA).unwrap();
    let own_entry = json!([{"op": "add", "path": "/status/nodes/-", "value": {"node": "node-1", "pinned": false}}]);
    let (ok, stderr) = status_patch(&unbound, "json", own_entry.clone());
    assert!(!ok && stderr.contains("bound to its Pod"), "{stderr}");
    let before = get_image(api, "img").unwrap()["status"].clone();

    // The agent binary with agent-a's token, as node-1: it pins the image, writes its entry and
    // publishes its peer on its own Pod, all through the policy.
    let agent = NodeAgent::start(
        &a,
        &world.ipfs,
        "node-1",
        &[
            "--status-interval",
            "1s",
            "--pod-name",
            "agent-a",
            "--pod-namespace",
            RELEASE_NAMESPACE,
        ],
    );
    wait_until("node-1's entries and agent-a's peer", STEP, || {
        let entry = nodes_of(api, "img")
            .into_iter()
            .any(|n| n["node"] == "node-1" && n["pinned"] == true);
        let waiting = nodes_of(api, "fresh").into_iter().any(|n| {
            n["node"] == "node-1" && n["message"] == "waiting for the image to be imported"
        });
        let pod = get_json(api, "pod", RELEASE_NAMESPACE, "agent-a")?.unwrap_or(Value::Null);
        Ok(entry && waiting && pod["metadata"]["annotations"]["ipfsimage.dev/peer"].is_string())
    })
    .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", agent.agent.log()));
    let after = get_image(api, "img").unwrap()["status"].clone();
    let node2 = |s: &Value| {
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == "node-2")
            .cloned()
    };
    assert_eq!(node2(&after), node2(&before), "node-2's entry untouched");
    // Where the operator has written nothing yet, the agent may still add nothing but its entry.
    let (ok, stderr) = patch_as(
        &a,
        None,
        "fresh",
        "merge",
        json!({"status": {"phase": "Ready"}}),
    );
    assert!(!ok && stderr.contains("only status.nodes"), "{stderr}");
    let operators = |s: &Value| {
        let mut s = s.clone();
        s.as_object_mut().unwrap().remove("nodes");
        s
    };
    assert_eq!(
        operators(&after),
        operators(&before),
        "the operator's fields untouched"
    );
    assert!(
        !agent.agent.log().contains("denied the request"),
        "{}",
        agent.agent.log()
    );
}
