//! The operator never fetches internal addresses on a registry's say-so, on a real
//! kube-apiserver with the operator binary as its ServiceAccount: a real registry behind
//! testkit's proxy (on 127.0.0.2) sends a `WWW-Authenticate` realm on 127.0.0.1 (a listener there
//! must see no connection) or on 169.254.169.254 (in a network namespace of the test's own, with a
//! listener there too), or redirects to such an address or to a name that resolves
//! to one, and each import ends `AddressRefused`. A registry's error
//! body reaches the condition and the Event cut short and without control characters. With a
//! registry allow-list, a source elsewhere is refused before any request reaches it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use testkit::kube_world::{
    ChartWorld, OPERATOR_SA, OperatorProcess, RELEASE_NAMESPACE, USER_NAMESPACE as NS, get_json,
};
use testkit::{Answer, HttpProxy, KubeApi, wait_until};

const STEP: Duration = Duration::from_secs(60);

/// A listener on `ip` that counts the connections it accepts (and answers none).
struct Witness {
    addr: String,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Witness {
    fn start(ip: &str) -> Self {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (accepted, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (count, stopping) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) => {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    // Polling a non-blocking accept, so the thread can be stopped.
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The registry behind a proxy that challenges every request with `realm` (as a registry that
/// wants a token does: none is ever handed out here).
fn with_realm(registry: &str, realm: String) -> HttpProxy {
    with_realm_on(std::net::Ipv4Addr::LOCALHOST, registry, realm)
}

/// [`with_realm`] on another address than 127.0.0.1 (the registry's own host is exempt from
/// the address rules, so a realm on 127.0.0.1 needs a registry elsewhere).
fn with_realm_on(ip: std::net::Ipv4Addr, registry: &str, realm: String) -> HttpProxy {
    HttpProxy::start_on(ip, registry, move |method, path| {
        (method == "GET" && path.starts_with("/v2/")).then(|| {
            Answer::text(401, "").with_header(
                "www-authenticate",
                &format!(r#"Bearer realm="{realm}",service="registry""#),
            )
        })
    })
    .unwrap()
}

fn image(name: &str, source: &str) -> String {
    json!({"apiVersion": "ipfsimage.dev/v1alpha1", "kind": "IpfsImage",
        "metadata": {"name": name, "namespace": NS}, "spec": {"source": source}})
    .to_string()
}

/// `name`'s Ready condition once it is False with `reason` (an outage keeps the phase
/// Importing, a refusal makes it Failed).
fn ready_with(world: &ChartWorld, op: &OperatorProcess, name: &str, reason: &str) -> Value {
    let mut last = Value::Null;
    wait_until(&format!("{name} {reason}"), STEP, || {
        last = get_json(&world.api, "ipfsimg", NS, name)?
            .and_then(|o| o["status"]["conditions"].as_array().cloned())
            .and_then(|c| c.into_iter().find(|c| c["type"] == "Ready"))
            .unwrap_or(Value::Null);
        Ok(last["status"] == "False" && last["reason"] == reason)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{last:#}\noperator log:\n{}", op.log_text()));
    last
}

/// The notes of the Warning Events about `name`.
fn warning_notes(api: &KubeApi, name: &str) -> Vec<String> {
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
        .filter(|e| e["type"] == "Warning")
        .map(|e| e["note"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// The operator binary as its ServiceAccount, with every registry in `plain_http` on plain HTTP.
fn start_operator(
    world: &ChartWorld,
    name: &str,
    plain_http: &[&str],
    more: &[&str],
) -> OperatorProcess {
    let kubeconfig = world
        .api
        .service_account(RELEASE_NAMESPACE, OPERATOR_SA)
        .unwrap();
    let mut args: Vec<&str> = plain_http
        .iter()
        .flat_map(|r| ["--plain-http-registry", r])
        .collect();
    args.extend(more);
    OperatorProcess::start(
        &PathBuf::from(env!("CARGO_BIN_EXE_ipfs-image-operator")),
        &kubeconfig,
        name,
        world,
        &args,
    )
    .unwrap()
}

/// The metadata address for real: the whole world (API server, registry, Kubo, the operator) in
/// a network namespace of the test's own, whose loopback also carries 169.254.169.254, where a
/// listener answers. A registry whose realm points there is refused, and the listener sees no
/// connection (a probe from the namespace first shows that it would).
#[test]
fn a_realm_on_the_metadata_address_is_refused_unsent_with_a_listener_there() {
    // In a process of its own: after this test's network namespace, the daemons the other tests
    // of this file then started in the same process came up inside it (their etcd never
    // answered on the root namespace's 127.0.0.1).
    const CHILD: &str = "SSRF_NETNS_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_realm_on_the_metadata_address_is_refused_unsent_with_a_listener_there",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .status()
            .unwrap();
        assert!(status.success(), "the test in its own process: {status}");
        return;
    }
    let net = testkit::TestNet::create(&["operator"]).unwrap();
    let node = net.node(0).clone();
    node.netns
        .ip(&["addr", "add", "169.254.169.254/32", "dev", "lo"])
        .unwrap();
    let world = ChartWorld::start_in(&node).unwrap();
    let (witness, metadata, op) = node.enter(|| {
        let witness = Witness::start("169.254.169.254");
        std::net::TcpStream::connect(&witness.addr).expect("the listener answers in the namespace");
        wait_until("the probe is counted", STEP, || {
            Ok(witness.accepted.load(Ordering::SeqCst) == 1)
        })
        .unwrap();
        let metadata = with_realm(
            &world.registry.addr,
            format!("http://{}/latest/meta-data/", witness.addr),
        );
        let op = start_operator(&world, "op-metadata", &[&metadata.addr], &[]);
        (witness, metadata, op)
    });
    import_through(&world, &[("metadata", &metadata)]);
    let ready = ready_with(&world, &op, "metadata", "AddressRefused");
    let message = ready["message"].as_str().unwrap();
    assert!(message.contains("169.254.169.254"), "{message}");
    assert_eq!(
        witness.accepted.load(Ordering::SeqCst),
        1,
        "a request reached 169.254.169.254 (beyond the probe)\n{}",
        op.log_text()
    );
    drop(op);
    drop(metadata);
    drop(world);
}

/// One IpfsImage per proxy: `name` imports `test/busybox:1` through it, created by a tenant
/// with the built-in edit role.
fn import_through(world: &ChartWorld, sources: &[(&str, &HttpProxy)]) {
    let tenant = world.editor("tenant").unwrap();
    for (name, proxy) in sources {
        let source = format!("{}/test/busybox:1", proxy.addr);
        world
            .create_as(&tenant, name, &image(name, &source))
            .unwrap();
    }
}

/// Wait until `name` is Ready.
fn wait_ready(world: &ChartWorld, op: &OperatorProcess, name: &str) {
    let mut last = Value::Null;
    wait_until(&format!("{name} Ready"), STEP, || {
        last = get_json(&world.api, "ipfsimg", NS, name)?.unwrap_or(Value::Null);
        Ok(last["status"]["phase"] == "Ready")
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{last:#}\noperator log:\n{}", op.log_text()));
}

#[test]
fn auth_realms_on_internal_addresses_are_refused_unsent_and_bodies_are_cleaned() {
    let world = ChartWorld::start().unwrap();
    // The registry as 127.0.0.2, its realm on 127.0.0.1 where a listener counts connections.
    let witness = Witness::start("127.0.0.1");
    let loopback = with_realm_on(
        std::net::Ipv4Addr::new(127, 0, 0, 2),
        &world.registry.addr,
        format!("http://{}/token", witness.addr),
    );
    let metadata = with_realm(&world.registry.addr, "http://169.254.169.254/token".into());
    // A registry error whose body is long, has control characters and ends in a marker.
    let body = format!("<b>\u{1b}[31mboom\r\n{}\nEND-OF-BODY", "x".repeat(2000));
    let noisy = HttpProxy::start(&world.registry.addr, move |method, path| {
        (method == "GET" && path == "/v2/test/busybox/manifests/1")
            .then(|| Answer::text(500, &body))
    })
    .unwrap();

    let op = start_operator(
        &world,
        "op-ssrf",
        &[&loopback.addr, &metadata.addr, &noisy.addr],
        &[],
    );
    import_through(
        &world,
        &[
            ("loopback", &loopback),
            ("metadata", &metadata),
            ("noisy", &noisy),
        ],
    );

    for (name, target) in [
        ("loopback", witness.addr.clone()),
        ("metadata", "169.254.169.254".to_owned()),
    ] {
        let ready = ready_with(&world, &op, name, "AddressRefused");
        let obj = get_json(&world.api, "ipfsimg", NS, name).unwrap().unwrap();
        assert_eq!(obj["status"]["phase"], "Failed", "{name}");
        let message = ready["message"].as_str().unwrap();
        assert!(message.contains(&target), "{name}: {message}");
    }
    assert_eq!(
        witness.accepted.load(Ordering::SeqCst),
        0,
        "a request reached the realm on 127.0.0.1\n{}",
        op.log_text()
    );

    let ready = ready_with(&world, &op, "noisy", "RegistryUnavailable");
    let message = ready["message"].as_str().unwrap();
    let notes = warning_notes(&world.api, "noisy");
    assert!(!notes.is_empty(), "a Warning Event about noisy");
    for text in notes.iter().map(String::as_str).chain([message]) {
        assert!(text.contains("boom"), "the body's start is kept: {text}");
        assert!(
            !text.contains("END-OF-BODY"),
            "cut short: {} chars",
            text.len()
        );
        assert!(text.chars().count() < 600, "{} chars", text.chars().count());
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }
}

/// `--allowed-registry`: two proxies in front of one real registry, one of them listed. The
/// other's import ends `RegistryNotAllowed` (Failed) and the proxy never sees a request.
#[test]
fn a_registry_outside_the_allow_list_is_refused_before_any_request() {
    let world = ChartWorld::start().unwrap();
    let listed = HttpProxy::start(&world.registry.addr, |_, _| None).unwrap();
    let unlisted = HttpProxy::start(&world.registry.addr, |_, _| None).unwrap();
    let allowed = format!("{},*.registry.example", listed.addr);
    let op = start_operator(
        &world,
        "op-allow-list",
        &[&listed.addr, &unlisted.addr],
        &["--allowed-registry", &allowed],
    );
    import_through(&world, &[("listed", &listed), ("unlisted", &unlisted)]);
    let ready = ready_with(&world, &op, "unlisted", "RegistryNotAllowed");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains(&unlisted.addr) && message.contains("allowed-registry"),
        "{message}"
    );
    let obj = get_json(&world.api, "ipfsimg", NS, "unlisted")
        .unwrap()
        .unwrap();
    assert_eq!(obj["status"]["phase"], "Failed");
    wait_ready(&world, &op, "listed");
    assert!(!listed.requests().is_empty());
    assert_eq!(
        unlisted.requests(),
        Vec::<String>::new(),
        "a request reached the unlisted registry"
    );
}

/// Redirects, which registries send for blobs (to a CDN) and may send for anything, go through
/// the same guard as every connection: a redirect to an internal IP literal and one to a name
/// that resolves to loopback (`localhost`) each end `AddressRefused`, and their listeners see no
/// connection; a redirect to the registry's own host is followed and the import is Ready.
#[test]
fn redirects_to_internal_addresses_are_refused_unsent_and_others_followed() {
    let world = ChartWorld::start().unwrap();
    let literal_witness = Witness::start("127.0.0.2");
    let named_witness = Witness::start("127.0.0.1");
    let named_port = named_witness.addr.rsplit_once(':').unwrap().1.to_owned();
    let to_literal = format!("http://{}/m", literal_witness.addr);
    let literal = HttpProxy::start(&world.registry.addr, move |method, path| {
        (method == "GET" && path == "/v2/test/busybox/manifests/1")
            .then(|| Answer::text(307, "").with_header("location", &to_literal))
    })
    .unwrap();
    let named = HttpProxy::start(&world.registry.addr, move |method, path| {
        (method == "GET" && path.contains("/blobs/")).then(|| {
            Answer::text(307, "")
                .with_header("location", &format!("http://localhost:{named_port}{path}"))
        })
    })
    .unwrap();
    let registry = world.registry.addr.clone();
    let cdn = HttpProxy::start(&world.registry.addr, move |method, path| {
        (method == "GET" && path.contains("/blobs/")).then(|| {
            Answer::text(307, "").with_header("location", &format!("http://{registry}{path}"))
        })
    })
    .unwrap();

    let op = start_operator(
        &world,
        "op-redirects",
        &[&literal.addr, &named.addr, &cdn.addr, &world.registry.addr],
        &[],
    );
    import_through(
        &world,
        &[("literal", &literal), ("named", &named), ("cdn", &cdn)],
    );
    for (name, target) in [
        ("literal", literal_witness.addr.clone()),
        ("named", "localhost".to_owned()),
    ] {
        let ready = ready_with(&world, &op, name, "AddressRefused");
        let message = ready["message"].as_str().unwrap();
        assert!(message.contains(&target), "{name}: {message}");
    }
    wait_ready(&world, &op, "cdn");
    assert!(
        cdn.requests()
            .iter()
            .any(|r| r.contains("/blobs/") && r.ends_with("-> 307 (proxy)")),
        "{:#?}",
        cdn.requests()
    );
    for (what, witness) in [
        ("127.0.0.2", &literal_witness),
        ("localhost", &named_witness),
    ] {
        assert_eq!(
            witness.accepted.load(Ordering::SeqCst),
            0,
            "a redirected request reached {what}\n{}",
            op.log_text()
        );
    }
}
