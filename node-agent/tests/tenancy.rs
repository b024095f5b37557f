//! Tenancy against a real kube-apiserver: a namespace user with an ordinary edit Role on
//! IpfsImages in `tenant-b` tries to change what a reference means on every node. The operator
//! binary imports for everyone (as its ServiceAccount), the agent binary serves the mirror (as
//! its ServiceAccount, with the chart's default: its own namespace's objects answer references).

use std::time::Duration;

use serde_json::{Value, json};
use testkit::kube_world::{
    AGENT_SA, ChartWorld, OPERATOR_SA, OperatorProcess, RELEASE_NAMESPACE, get_json, write_file,
};
use testkit::{Agent, PushFormat, TestImage, push_layout, wait_until};

const TENANT: &str = "tenant-b";
const STEP: Duration = Duration::from_secs(90);

fn image_yaml(namespace: &str, name: &str, source: &str) -> String {
    json!({
        "apiVersion": "ipfsimage.dev/v1alpha1",
        "kind": "IpfsImage",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"source": source},
    })
    .to_string()
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

    // Mallory edits IpfsImages in her own namespace, nothing else.
    api.kubectl(&["create", "namespace", TENANT]).unwrap();
    let role = format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: ipfsimage-editor, namespace: {TENANT}}}
rules:
  - apiGroups: [ipfsimage.dev]
    resources: [ipfsimages]
    verbs: [get, list, watch, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: mallory-edits, namespace: {TENANT}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: ipfsimage-editor}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: mallory}}]
"
    );
    let file = write_file(world.dir.path(), "mallory.yaml", &role).unwrap();
    api.kubectl(&["apply", "-f", &file]).unwrap();
    let mallory = api
        .kubeconfig_for("mallory", &["system:authenticated"])
        .unwrap();

    let operator = OperatorProcess::start(
        &testkit::workspace_binary("ipfs-image-operator"),
        &api.service_account(RELEASE_NAMESPACE, OPERATOR_SA).unwrap(),
        "ipfs-image-operator-test",
        &world,
        &[],
    )
    .unwrap();
    // The chart's agent: its own namespace (POD_NAMESPACE) is the one that answers references.
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start_in_cluster(
        &testkit::workspace_binary("ipfs-image-agent"),
        &world.ipfs.api_url,
        &api.service_account(RELEASE_NAMESPACE, AGENT_SA).unwrap(),
        &[
            "--node-name",
            "node-1",
            "--state-dir",
            &state.path().display().to_string(),
            "--pod-namespace",
            RELEASE_NAMESPACE,
        ],
    )
    .unwrap();
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
