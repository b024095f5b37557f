//! Tenancy against a real kube-apiserver: a namespace user bound to the built-in `edit` role (with
//! the chart's users' roles aggregated into it) in `tenant-b` tries to change what a reference means on every node. The operator
//! binary imports for everyone (as its ServiceAccount), the agent binary serves the mirror (as
//! its ServiceAccount, with the chart's default: its own namespace's objects answer references).

use std::time::Duration;

use serde_json::{Value, json};
use testkit::kube_world::{
    AGENT_SA, ChartWorld, OPERATOR_SA, OperatorProcess, RELEASE_NAMESPACE, USER_NAMESPACE,
    get_json, install_user_roles, pull_secret_yaml, user_with_builtin_role, write_file,
};
use testkit::{Agent, PushFormat, Registry, TestImage, push_layout, wait_until};

const TENANT: &str = "tenant-b";
const STEP: Duration = Duration::from_secs(90);

fn image_yaml(namespace: &str, name: &str, source: &str) -> String {
    image_with_spec(namespace, name, json!({"source": source}))
}

fn image_with_spec(namespace: &str, name: &str, spec: Value) -> String {
    json!({
        "apiVersion": "ipfsimage.dev/v1alpha1",
        "kind": "IpfsImage",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
    .to_string()
}

/// The operator binary as its ServiceAccount.
fn start_operator(world: &ChartWorld, extra: &[&str]) -> OperatorProcess {
    OperatorProcess::start(
        &testkit::workspace_binary("ipfs-image-operator"),
        &world
            .api
            .service_account(RELEASE_NAMESPACE, OPERATOR_SA)
            .unwrap(),
        "ipfs-image-operator-test",
        world,
        extra,
    )
    .unwrap()
}

/// The agent binary as its ServiceAccount, as node `node` of the chart's release namespace.
fn start_agent(world: &ChartWorld, node: &str, extra: &[&str]) -> (Agent, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().display().to_string();
    let mut args = vec![
        "--node-name",
        node,
        "--state-dir",
        &state_dir,
        "--pod-namespace",
        RELEASE_NAMESPACE,
    ];
    args.extend_from_slice(extra);
    let agent = Agent::start_in_cluster(
        &testkit::workspace_binary("ipfs-image-agent"),
        &world.ipfs.api_url,
        &world
            .api
            .service_account(RELEASE_NAMESPACE, AGENT_SA)
            .unwrap(),
        &args,
    )
    .unwrap();
    (agent, state)
}

/// `HEAD /v2/<repo>/manifests/<reference>` on the agent: status and `Docker-Content-Digest`.
fn head(agent: &Agent, path: &str, ns: Option<&str>) -> (u16, String) {
    let query = ns.map(|n| format!("?ns={n}")).unwrap_or_default();
    let url = format!("http://{}/v2/{path}{query}", agent.addr);
    match testkit::http_client(Duration::from_secs(20))
        .head(&url)
        .send()
    {
        Ok(r) => (
            r.status().as_u16(),
            r.headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
        ),
        Err(e) => panic!("HEAD {url}: {e}"),
    }
}

/// The digest the registry gives `repo:tag` now.
fn registry_digest(registry: &str, repo: &str, tag: &str) -> String {
    let r = testkit::http_client(Duration::from_secs(10))
        .head(format!("http://{registry}/v2/{repo}/manifests/{tag}"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{repo}:{tag}: {}", r.status());
    r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Wait until `namespace/name` is Ready; its status.
fn ready(world: &ChartWorld, namespace: &str, name: &str, logs: &dyn Fn() -> String) -> Value {
    let mut last = None;
    let done = wait_until(&format!("{namespace}/{name} Ready"), STEP, || {
        last = get_json(&world.api, "ipfsimg", namespace, name)?;
        Ok(last
            .as_ref()
            .is_some_and(|o| o["status"]["phase"] == "Ready"))
    });
    if let Err(e) = done {
        panic!("{e:#}\nlast: {last:#?}\n{}", logs());
    }
    last.unwrap()["status"].clone()
}

#[test]
fn a_namespace_user_cannot_change_what_a_tag_means_for_other_namespaces() {
    let world = ChartWorld::start().unwrap();
    let api = &world.api;
    let registry = world.registry.addr.clone();

    // test/app:1 pointed at an old image, then moved to a new one: the old digest stays
    // pullable by digest, which is what a rollback names.
    push_layout(
        &world.layout,
        TestImage::AMD64,
        &world.registry,
        "test/app:1",
        PushFormat::Oci,
    )
    .unwrap();
    let old = registry_digest(&registry, "test/app", "1");
    push_layout(
        &world.layout,
        TestImage::ARM64,
        &world.registry,
        "test/app:1",
        PushFormat::Oci,
    )
    .unwrap();
    let new = registry_digest(&registry, "test/app", "1");
    assert_ne!(old, new);
    push_layout(
        &world.layout,
        TestImage::AMD64,
        &world.registry,
        "test/marker:1",
        PushFormat::Oci,
    )
    .unwrap();

    // Mallory holds the built-in edit role in her own namespace (with the chart's users' roles
    // folded in by the real aggregation controller), nothing else.
    api.kubectl(&["create", "namespace", TENANT]).unwrap();
    let _aggregation = install_user_roles(api, world.dir.path()).unwrap();
    let mallory = user_with_builtin_role(api, TENANT, "mallory", "edit").unwrap();

    let operator = start_operator(&world, &[]);
    // The chart's agent: its own namespace (POD_NAMESPACE) is the one that answers references.
    let (agent, _state) = start_agent(&world, "node-1", &[]);
    let logs = || {
        format!(
            "operator log:\n{}\nagent log:\n{}",
            operator.log_text(),
            agent.log()
        )
    };

    // The rollback attempt (tag and old digest, mirror on by default), and a plain tag import
    // of her own, both as Mallory.
    let attempts = [
        ("rollback", format!("{registry}/test/app:1@{old}")),
        ("own-busybox", world.busybox()),
    ];
    for (name, source) in &attempts {
        let file = write_file(
            world.dir.path(),
            &format!("{name}.yaml"),
            &image_yaml(TENANT, name, source),
        )
        .unwrap();
        let out = api
            .kubectl_as(Some(&mallory), &["create", "-f", &file])
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rollback = ready(&world, TENANT, "rollback", &logs);
    assert_eq!(rollback["sourceDigest"], old.as_str(), "imported by digest");
    ready(&world, TENANT, "own-busybox", &logs);

    // A marker from the release namespace, made Ready after Mallory's: once the agent answers
    // it, its catalog has seen her objects too (one watch, in order).
    world
        .apply(
            "marker",
            &image_yaml(
                RELEASE_NAMESPACE,
                "marker",
                &format!("{registry}/test/marker:1"),
            ),
        )
        .unwrap();
    ready(&world, RELEASE_NAMESPACE, "marker", &logs);
    let mut last = (0, String::new());
    if let Err(e) = wait_until("marker answered by the mirror", STEP, || {
        last = head(&agent, "test/marker/manifests/1", Some(&registry));
        Ok(last.0 == 200)
    }) {
        panic!("{e:#}: {last:?}\n{}", logs());
    }

    // Her objects answer no original reference: the tag falls back upstream (a miss), and so
    // does her own tag import; her image still serves as ipfs/<CID>.
    assert_eq!(
        head(&agent, "test/app/manifests/1", Some(&registry)),
        (404, String::new()),
        "the rollback must not answer test/app:1\n{}",
        logs()
    );
    assert_eq!(
        head(&agent, "test/busybox/manifests/1", Some(&registry)).0,
        404
    );
    assert_eq!(
        head(
            &agent,
            &format!("test/app/manifests/{old}"),
            Some(&registry)
        )
        .0,
        404
    );
    let cid = rollback["cid"].as_str().unwrap();
    // (By CID the top is the converted index, not the source's manifest.)
    assert_eq!(
        head(&agent, &format!("ipfs/{cid}/manifests/latest"), None).0,
        200,
        "still served by CID"
    );

    // The administrator imports the tag in the release namespace: that is what test/app:1 means,
    // with her rollback still Ready beside it.
    world
        .apply(
            "app",
            &image_yaml(RELEASE_NAMESPACE, "app", &format!("{registry}/test/app:1")),
        )
        .unwrap();
    ready(&world, RELEASE_NAMESPACE, "app", &logs);
    if let Err(e) = wait_until("test/app:1 answered by the mirror", STEP, || {
        last = head(&agent, "test/app/manifests/1", Some(&registry));
        Ok(last.0 == 200)
    }) {
        panic!("{e:#}: {last:?}\n{}", logs());
    }
    assert_eq!(
        last,
        (200, new.clone()),
        "the admin's import, not the rollback"
    );
    assert_eq!(
        head(
            &agent,
            &format!("test/app/manifests/{new}"),
            Some(&registry)
        ),
        (200, new)
    );
}

/// An image imported with `imagePullSecrets`, in a namespace whose objects do answer original
/// references: the mirror serves it only by CID, unless the administrator allows private images
/// (`--mirror-private-images`). The mirror asks a Pod for no credentials.
#[test]
fn a_privately_imported_image_answers_no_original_reference() {
    let world = ChartWorld::start().unwrap();
    let ns = USER_NAMESPACE;
    let private = Registry::start_with(Some(("u", "p"))).unwrap();
    push_layout(
        &world.layout,
        TestImage::AMD64,
        &private,
        "test/secret:1",
        PushFormat::Oci,
    )
    .unwrap();
    // The Secret and the object are a namespace editor's (the built-in edit role).
    let editor = world.editor("erin").unwrap();
    world
        .create_as(
            &editor,
            "regcred",
            &pull_secret_yaml(ns, "regcred", &private.addr, ("u", "p")),
        )
        .unwrap();
    let operator = start_operator(&world, &["--plain-http-registry", &private.addr]);
    let (agent, _a) = start_agent(&world, "node-1", &["--mirror-namespace", ns]);
    let (allowing, _b) = start_agent(
        &world,
        "node-2",
        &["--mirror-namespace", ns, "--mirror-private-images"],
    );
    let logs = || {
        format!(
            "operator log:\n{}\nagent log:\n{}\nagent (private allowed) log:\n{}",
            operator.log_text(),
            agent.log(),
            allowing.log()
        )
    };

    let source = format!("{}/test/secret:1", private.addr);
    world
        .create_as(
            &editor,
            "secret",
            &image_with_spec(
                ns,
                "secret",
                json!({"source": source, "imagePullSecrets": [{"name": "regcred"}]}),
            ),
        )
        .unwrap();
    let status = ready(&world, ns, "secret", &logs);
    // A public image made Ready after it: once an agent answers this one, it has seen the
    // private one too (one watch, in order).
    world
        .apply("marker", &image_yaml(ns, "marker", &world.busybox()))
        .unwrap();
    ready(&world, ns, "marker", &logs);
    let registry = world.registry.addr.clone();
    for a in [&agent, &allowing] {
        let mut last = (0, String::new());
        if let Err(e) = wait_until("marker answered by the mirror", STEP, || {
            last = head(a, "test/busybox/manifests/1", Some(&registry));
            Ok(last.0 == 200)
        }) {
            panic!("{e:#}: {last:?}\n{}", logs());
        }
    }

    let digest = status["sourceDigest"].as_str().unwrap().to_owned();
    let by_tag = head(&agent, "test/secret/manifests/1", Some(&private.addr));
    assert_eq!(
        by_tag,
        (404, String::new()),
        "a private image answered its tag without credentials\n{}",
        logs()
    );
    let by_digest = format!("test/secret/manifests/{digest}");
    assert_eq!(head(&agent, &by_digest, Some(&private.addr)).0, 404);
    let cid = status["cid"].as_str().unwrap();
    assert_eq!(
        head(&agent, &format!("ipfs/{cid}/manifests/latest"), None).0,
        200,
        "still served by CID"
    );
    // The administrator's opt-in: then it answers, with the source's digest.
    assert_eq!(
        head(&allowing, "test/secret/manifests/1", Some(&private.addr)),
        (200, digest),
        "{}",
        logs()
    );
}
