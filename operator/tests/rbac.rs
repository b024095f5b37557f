//! The chart's RBAC on a real API server: each ServiceAccount has exactly the rights the code
//! needs (its SelfSubjectRulesReview, in a user namespace and in the release namespace, equals
//! `testkit::kube_world::*_GRANTS`, which the binary tests check every real call against), the
//! broad rules are gone (real requests refused with 403), and an ordinary namespace user who
//! may edit IpfsImages can neither write their status nor reach another namespace.

use std::collections::BTreeSet;

use ipfs_image_api::IpfsImage;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::Value;
use testkit::kube_world::{
    self, AGENT_GRANTS, AGENT_SA, Grants, OPERATOR_GRANTS, OPERATOR_SA, RELEASE_NAMESPACE,
    USER_NAMESPACE, write_file,
};
use testkit::{KubeApi, block_on};

type Triple = (String, String, String);

fn world() -> (KubeApi, tempfile::TempDir) {
    let api = KubeApi::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    kube_world::install_crd(&api).unwrap();
    kube_world::install_chart_rbac(&api, dir.path()).unwrap();
    for ns in [USER_NAMESPACE, "team-b"] {
        api.kubectl(&["create", "namespace", ns]).unwrap();
    }
    (api, dir)
}

/// What `kubeconfig`'s identity may do in `namespace`, as the server's SelfSubjectRulesReview
/// says — without the self-review rules every authenticated user has (system:basic-user).
fn rules_review(
    api: &KubeApi,
    dir: &std::path::Path,
    kubeconfig: &std::path::Path,
    namespace: &str,
) -> BTreeSet<Triple> {
    let review = format!(
        "apiVersion: authorization.k8s.io/v1\nkind: SelfSubjectRulesReview\nspec:\n  namespace: {namespace}\n"
    );
    let file = write_file(dir, &format!("review-{namespace}.yaml"), &review).unwrap();
    let out = api
        .kubectl_as(
            Some(kubeconfig),
            &["create", "--validate=false", "-f", &file, "-o", "json"],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let review: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(review["status"]["incomplete"], false, "{review:#}");
    let mut triples = BTreeSet::new();
    for rule in review["status"]["resourceRules"].as_array().unwrap() {
        assert!(rule.get("resourceNames").is_none(), "{rule}");
        let list = |k: &str| -> Vec<String> {
            rule[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        for g in list("apiGroups") {
            if g == "authorization.k8s.io" || g == "authentication.k8s.io" {
                continue; // self-reviews: every user's
            }
            for r in list("resources") {
                for v in list("verbs") {
                    triples.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    triples
}

fn owned(perms: &[(&str, &str, &str)]) -> BTreeSet<Triple> {
    perms
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect()
}

fn assert_exact_rights(api: &KubeApi, dir: &std::path::Path, sa: &str, grants: &Grants) {
    let kubeconfig = api.service_account(RELEASE_NAMESPACE, sa).unwrap();
    let cluster = owned(grants.cluster);
    assert_eq!(
        rules_review(api, dir, &kubeconfig, USER_NAMESPACE),
        cluster,
        "{sa} in a user namespace: the cluster-wide grants only"
    );
    let mut home = cluster.clone();
    home.extend(owned(grants.release_namespace));
    assert_eq!(
        rules_review(api, dir, &kubeconfig, RELEASE_NAMESPACE),
        home,
        "{sa} in the release namespace"
    );
}

/// Run kubectl as `kubeconfig`; true when the server refused it as Forbidden.
fn forbidden(api: &KubeApi, kubeconfig: &std::path::Path, args: &[&str]) -> bool {
    let out = api.kubectl_as(Some(kubeconfig), args).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return false;
    }
    assert!(
        stderr.contains("Forbidden") || stderr.contains("forbidden"),
        "{args:?} failed, but not for RBAC: {stderr}"
    );
    true
}

fn allowed(api: &KubeApi, kubeconfig: &std::path::Path, args: &[&str]) {
    let out = api.kubectl_as(Some(kubeconfig), args).unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const PEER_PATCH: &str = r#"{"metadata":{"annotations":{"ipfsimage.dev/peer":"{}"}}}"#;

#[test]
fn each_service_account_has_exactly_the_rights_its_code_uses() {
    let (api, dir) = world();
    assert_exact_rights(&api, dir.path(), OPERATOR_SA, &OPERATOR_GRANTS);
    assert_exact_rights(&api, dir.path(), AGENT_SA, &AGENT_GRANTS);

    // Real requests: a Pod in a user namespace and one in the release namespace.
    let pod = |ns: &str, name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  automountServiceAccountToken: false\n  containers: [{{name: c, image: busybox:1.36}}]\n"
        )
    };
    let user_pod = write_file(dir.path(), "user-pod.yaml", &pod(USER_NAMESPACE, "app")).unwrap();
    let own_pod = write_file(
        dir.path(),
        "own-pod.yaml",
        &pod(RELEASE_NAMESPACE, "agent-x"),
    )
    .unwrap();
    // No controller-manager here makes the `default` ServiceAccounts Pods need.
    for ns in [USER_NAMESPACE, RELEASE_NAMESPACE] {
        api.kubectl(&["create", "serviceaccount", "default", "-n", ns])
            .unwrap();
    }
    api.kubectl(&["create", "-f", &user_pod, "-f", &own_pod])
        .unwrap();

    let agent = api.service_account(RELEASE_NAMESPACE, AGENT_SA).unwrap();
    let operator = api.service_account(RELEASE_NAMESPACE, OPERATOR_SA).unwrap();
    block_on(async {
        let agent = KubeApi::client_with(&agent).await.unwrap();
        let operator = KubeApi::client_with(&operator).await.unwrap();
        let pods = |c: &kube::Client, ns: &str| Api::<Pod>::namespaced(c.clone(), ns);
        let peer = Patch::Merge(serde_json::from_str::<Value>(PEER_PATCH).unwrap());
        let params = PatchParams::default();
        // The agent, in its own namespace: reading the peers' Pods and annotating its own work …
        assert_eq!(
            answer(
                pods(&agent, RELEASE_NAMESPACE)
                    .list(&Default::default())
                    .await
            ),
            200
        );
        assert_eq!(
            answer(
                pods(&agent, RELEASE_NAMESPACE)
                    .patch("agent-x", &params, &peer)
                    .await
            ),
            200
        );
        // … but no Pod elsewhere is readable or writable (the old cluster-wide `pods patch`).
        assert_eq!(
            answer(
                pods(&agent, USER_NAMESPACE)
                    .patch("app", &params, &peer)
                    .await
            ),
            403
        );
        assert_eq!(
            answer(pods(&agent, USER_NAMESPACE).list(&Default::default()).await),
            403
        );
        assert_eq!(
            answer(
                Api::<Pod>::all(agent.clone())
                    .list(&Default::default())
                    .await
            ),
            403
        );
        // Nor Secrets, nor the IpfsImages themselves (only their status).
        let secrets = Api::<Secret>::namespaced(agent.clone(), USER_NAMESPACE);
        assert_eq!(answer(secrets.get("any").await), 403);
        let images = Api::<IpfsImage>::namespaced(agent.clone(), USER_NAMESPACE);
        assert_eq!(answer(images.delete("any", &Default::default()).await), 403);
        let spec = Patch::Merge(serde_json::json!({"spec": {"mirror": false}}));
        assert_eq!(answer(images.patch("any", &params, &spec).await), 403);

        // The operator writes Pods only at home (RBAC; the admission policy narrows that to its
        // own Pod, see below), and its Lease only at home.
        assert_eq!(
            answer(
                pods(&operator, RELEASE_NAMESPACE)
                    .patch("agent-x", &params, &peer)
                    .await
            ),
            200
        );
        assert_eq!(
            answer(
                pods(&operator, USER_NAMESPACE)
                    .patch("app", &params, &peer)
                    .await
            ),
            403
        );
        assert_eq!(
            answer(
                pods(&operator, RELEASE_NAMESPACE)
                    .list(&Default::default())
                    .await
            ),
            403
        );
        let leases = Api::<Lease>::namespaced(operator.clone(), USER_NAMESPACE);
        assert_eq!(answer(leases.get("ipfs-image-operator").await), 403);
        let home = Api::<Lease>::namespaced(operator.clone(), RELEASE_NAMESPACE);
        assert_eq!(
            answer(home.get("ipfs-image-operator").await),
            404,
            "allowed, and absent"
        );
        // Pull Secrets are read by name (absent here: 404), never listed.
        let secrets = Api::<Secret>::namespaced(operator.clone(), USER_NAMESPACE);
        assert_eq!(answer(secrets.get("regcred").await), 404);
        assert_eq!(answer(secrets.list(&Default::default()).await), 403);
    });
}

/// The HTTP status the server answered (200 for any success).
fn answer<T>(result: Result<T, kube::Error>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(kube::Error::Api(status)) => status.code,
        Err(e) => panic!("not an answer from the server: {e}"),
    }
}

#[test]
fn a_namespace_user_edits_ipfs_images_but_not_their_status_nor_other_namespaces() {
    let (api, dir) = world();
    // An ordinary user with a Role that edits IpfsImages in its own namespace.
    let role = format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: ipfsimage-editor, namespace: {USER_NAMESPACE}}}
rules:
  - apiGroups: [ipfsimage.dev]
    resources: [ipfsimages]
    verbs: [get, list, watch, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: alice-edits, namespace: {USER_NAMESPACE}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: ipfsimage-editor}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}}]
"
    );
    let file = write_file(dir.path(), "alice.yaml", &role).unwrap();
    api.kubectl(&["apply", "-f", &file]).unwrap();
    let alice = api
        .kubeconfig_for("alice", &["system:authenticated"])
        .unwrap();
    let image = |ns: &str| {
        format!(
            "apiVersion: ipfsimage.dev/v1alpha1\nkind: IpfsImage\nmetadata:\n  name: app\n  namespace: {ns}\nspec:\n  source: docker.io/library/busybox:1.36\n"
        )
    };
    let mine = write_file(dir.path(), "mine.yaml", &image(USER_NAMESPACE)).unwrap();
    allowed(&api, &alice, &["create", "-f", &mine]);
    allowed(
        &api,
        &alice,
        &[
            "patch",
            "ipfsimg",
            "-n",
            USER_NAMESPACE,
            "app",
            "--type=merge",
            "-p",
            r#"{"spec":{"mirror":false}}"#,
        ],
    );

    // The status is the operator's and the agents' word: a user cannot forge it (a Ready phase
    // with a CID of their choosing would make the mirrors serve it).
    block_on(async {
        let alice_client = KubeApi::client_with(&alice).await.unwrap();
        let images = Api::<IpfsImage>::namespaced(alice_client.clone(), USER_NAMESPACE);
        let forged = serde_json::json!({"status": {"phase": "Ready", "cid": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"}});
        let merge = images
            .patch_status("app", &PatchParams::default(), &Patch::Merge(&forged))
            .await;
        assert_eq!(answer(merge), 403);
        // Nor pose as an agent: a node entry applied under an agent's field manager.
        let entry = serde_json::json!({
            "apiVersion": "ipfsimage.dev/v1alpha1", "kind": "IpfsImage",
            "metadata": {"name": "app", "namespace": USER_NAMESPACE},
            "status": {"nodes": [{"node": "n1", "pinned": true}]},
        });
        let params = PatchParams::apply("ipfs-image-agent-n1").force();
        assert_eq!(
            answer(
                images
                    .patch_status("app", &params, &Patch::Apply(&entry))
                    .await
            ),
            403
        );
        assert_eq!(
            answer(images.get_status("app").await),
            403,
            "status has its own rule"
        );
        // A status sent with the object itself is accepted, and dropped (see below).
        let with_status = images
            .patch("app", &PatchParams::default(), &Patch::Merge(&forged))
            .await;
        assert_eq!(answer(with_status), 200);
    });
    // A status sent with the object is dropped by the status subresource, not stored.
    let stored = kube_world::get_json(&api, "ipfsimg", USER_NAMESPACE, "app")
        .unwrap()
        .unwrap();
    assert!(
        stored.get("status").is_none_or(|s| s["phase"].is_null()),
        "{stored:#}"
    );

    // Other namespaces, and the cluster-wide view, are out of reach.
    let theirs = write_file(dir.path(), "theirs.yaml", &image("team-b")).unwrap();
    assert!(forbidden(&api, &alice, &["create", "-f", &theirs]));
    let release = write_file(dir.path(), "release.yaml", &image(RELEASE_NAMESPACE)).unwrap();
    assert!(forbidden(&api, &alice, &["create", "-f", &release]));
    assert!(forbidden(
        &api,
        &alice,
        &["get", "ipfsimg", "--all-namespaces"]
    ));
    assert!(forbidden(&api, &alice, &["get", "ipfsimg", "-n", "team-b"]));
}

#[test]
fn the_built_in_edit_and_view_roles_manage_and_read_ipfs_images_but_never_write_status() {
    let (api, dir) = world();
    // The real aggregation controller, and the chart's users' roles (userRoles.aggregate).
    let _aggregation = kube_world::install_user_roles(&api, dir.path()).unwrap();
    // bob holds the built-in edit role in his namespace, carol view: nothing made for us.
    let bob = kube_world::user_with_builtin_role(&api, USER_NAMESPACE, "bob", "edit").unwrap();
    let carol = kube_world::user_with_builtin_role(&api, USER_NAMESPACE, "carol", "view").unwrap();
    let image = |ns: &str| {
        format!(
            "apiVersion: ipfsimage.dev/v1alpha1\nkind: IpfsImage\nmetadata:\n  name: app\n  namespace: {ns}\nspec:\n  source: docker.io/library/busybox:1.36\n"
        )
    };
    let mine = write_file(dir.path(), "mine.yaml", &image(USER_NAMESPACE)).unwrap();
    let in_ns = |args: &[&'static str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-n", USER_NAMESPACE]);
        all
    };
    let spec_patch = in_ns(&[
        "patch",
        "ipfsimg",
        "app",
        "--type=merge",
        "-p",
        r#"{"spec":{"mirror":false}}"#,
    ]);
    let status_patch = in_ns(&[
        "patch",
        "ipfsimg",
        "app",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Ready","cid":"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"}}"#,
    ]);
    let read_status = in_ns(&["get", "ipfsimg", "app", "--subresource=status"]);

    // view: reads, status included; writes nothing.
    assert!(forbidden(&api, &carol, &["create", "-f", &mine]));
    allowed(&api, &bob, &["create", "-f", &mine]);
    allowed(&api, &carol, &in_ns(&["get", "ipfsimg"]));
    allowed(&api, &carol, &read_status);
    assert!(forbidden(&api, &carol, &spec_patch));
    assert!(forbidden(&api, &carol, &status_patch));
    assert!(forbidden(
        &api,
        &carol,
        &in_ns(&["delete", "ipfsimg", "app"])
    ));

    // edit: every write on the object, none on its status, nothing in other namespaces.
    allowed(&api, &bob, &spec_patch);
    allowed(&api, &bob, &read_status);
    assert!(forbidden(&api, &bob, &status_patch));
    let theirs = write_file(dir.path(), "theirs.yaml", &image("team-b")).unwrap();
    assert!(forbidden(&api, &bob, &["create", "-f", &theirs]));
    assert!(forbidden(
        &api,
        &bob,
        &["get", "ipfsimg", "--all-namespaces"]
    ));
    allowed(&api, &bob, &in_ns(&["delete", "ipfsimg", "app"]));
}

/// The chart's operator admission policy on a real API server, with a token bound to the
/// operator's Pod (as kubelet requests it): the operator patches its own Pod, and the server
/// refuses it an agent's Pod and refuses any Pod to an operator credential bound to no Pod.
#[test]
fn the_admission_policy_keeps_the_operator_to_its_own_pod() {
    let (api, dir) = world();
    let policy = kube_world::helm_template(&["templates/operator-admission-policy.yaml"]).unwrap();
    let file = write_file(dir.path(), "operator-policy.yaml", &policy).unwrap();
    api.kubectl(&["apply", "-f", &file]).unwrap();
    for (pod, sa) in [("operator-0", OPERATOR_SA), ("agent-x", AGENT_SA)] {
        let spec = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {RELEASE_NAMESPACE}}}\nspec:\n  serviceAccountName: {sa}\n  automountServiceAccountToken: false\n  containers: [{{name: c, image: busybox:1.36}}]\n"
        );
        let file = write_file(dir.path(), &format!("{pod}.yaml"), &spec).unwrap();
        api.kubectl(&["apply", "-f", &file]).unwrap();
    }
    let bound = api
        .pod_token_kubeconfig(RELEASE_NAMESPACE, OPERATOR_SA, "operator-0")
        .unwrap();
    let unbound = api.service_account(RELEASE_NAMESPACE, OPERATOR_SA).unwrap();
    let patch = |kubeconfig: &std::path::Path, pod: &str| {
        block_on(async {
            let client = KubeApi::client_with(kubeconfig).await.unwrap();
            let peer = Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {"ipfsimage.dev/peer": "{}"}}}),
            );
            match Api::<Pod>::namespaced(client, RELEASE_NAMESPACE)
                .patch(pod, &PatchParams::default(), &peer)
                .await
            {
                Ok(_) => (200, String::new()),
                Err(kube::Error::Api(status)) => (status.code, status.message),
                Err(e) => panic!("not an answer from the server: {e}"),
            }
        })
    };
    // The policy takes effect once the server has compiled it: until then RBAC alone lets the
    // agent's Pod be written, so wait for the first refusal.
    let mut last = (0, String::new());
    testkit::wait_until(
        "the policy refuses the operator an agent's Pod",
        std::time::Duration::from_secs(60),
        || {
            last = patch(&bound, "agent-x");
            Ok(last.0 == 403)
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}: {last:?}"));
    assert!(last.1.contains("only its own Pod"), "{}", last.1);
    assert_eq!(patch(&bound, "operator-0"), (200, String::new()));
    let (code, message) = patch(&unbound, "operator-0");
    assert_eq!(code, 403, "a credential bound to no Pod: {message}");
    assert!(message.contains("no Pod"), "{message}");
}
