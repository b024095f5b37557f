//! What the tests against a real API server share: the CRD and the chart's ServiceAccounts and
//! RBAC (rendered by `helm template`, so the tests run with exactly the rights the chart grants),
//! reads of stored objects, the audit log by identity, and the operator binary as a process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::{Daemon, IpfsDaemon, KubeApi, Registry, free_port, workspace_root};

/// The namespace the chart is "installed" in (its ServiceAccounts live there).
pub const RELEASE_NAMESPACE: &str = "ipfs-image";

/// A user namespace for the test objects.
pub const USER_NAMESPACE: &str = "team-a";

/// The chart's ServiceAccount names (release `ipfs-image`, default values).
pub const OPERATOR_SA: &str = "ipfs-image-operator";
pub const AGENT_SA: &str = "ipfs-image-agent";

/// Apply `crds/` and wait until the API serves it.
pub fn install_crd(api: &KubeApi) -> Result<()> {
    let crd = workspace_root().join("crds/ipfsimage.dev_ipfsimages.yaml");
    api.kubectl(&["apply", "--server-side", "-f", &crd.display().to_string()])?;
    api.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/ipfsimages.ipfsimage.dev",
        "--timeout=60s",
    ])?;
    Ok(())
}

/// `helm template` of the chart (release `ipfs-image` in [`RELEASE_NAMESPACE`]), only the
/// templates named.
pub fn helm_template(templates: &[&str]) -> Result<String> {
    let helm = workspace_root().join("e2e/.deps/helm/bin/helm");
    ensure!(
        helm.exists(),
        "no helm at {}: run bash e2e/chart/deps.sh",
        helm.display()
    );
    let mut cmd = Command::new(&helm);
    cmd.args(["template", "ipfs-image"])
        .arg(workspace_root().join("charts/ipfs-image"))
        .args(["--namespace", RELEASE_NAMESPACE]);
    for t in templates {
        cmd.args(["--show-only", t]);
    }
    let out = cmd.output().context("run helm")?;
    ensure!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Create [`RELEASE_NAMESPACE`] and apply the chart's ServiceAccounts and RBAC into it.
pub fn install_chart_rbac(api: &KubeApi, dir: &Path) -> Result<()> {
    let rbac = helm_template(&["templates/serviceaccounts.yaml", "templates/rbac.yaml"])?;
    let file = write_file(dir, "chart-rbac.yaml", &rbac)?;
    api.kubectl(&["create", "namespace", RELEASE_NAMESPACE])?;
    api.kubectl(&["apply", "-f", &file])?;
    Ok(())
}

/// The chart's users' roles (`userRoles.aggregate`) folded into the built-in `admin`, `edit`
/// and `view` by the real clusterrole-aggregation controller, which runs until the returned
/// [`Daemon`] is dropped. After this, binding a user to `edit` gives exactly what an ordinary
/// namespace editor of a cluster with the chart has.
pub fn install_user_roles(api: &KubeApi, dir: &Path) -> Result<Daemon> {
    let aggregation = api.start_role_aggregation()?;
    let roles = helm_template(&["templates/user-roles.yaml"])?;
    api.kubectl(&["apply", "-f", &write_file(dir, "user-roles.yaml", &roles)?])?;
    crate::wait_until(
        "admin, edit and view aggregate the chart's rules",
        Duration::from_secs(60),
        || {
            let list: Value = serde_json::from_str(&api.kubectl(&[
                "get",
                "clusterrole",
                "admin",
                "edit",
                "view",
                "-o",
                "json",
            ])?)?;
            Ok(list["items"].as_array().is_some_and(|roles| {
                roles.len() == 3
                    && roles.iter().all(|role| {
                        role["rules"].as_array().is_some_and(|rules| {
                            rules
                                .iter()
                                .any(|r| r["resources"].to_string().contains("\"ipfsimages\""))
                        })
                    })
            }))
        },
    )?;
    Ok(aggregation)
}

/// A kubeconfig for `user`, bound in `namespace` to the built-in ClusterRole `role` (`edit`,
/// `view`…) and to nothing else.
pub fn user_with_builtin_role(
    api: &KubeApi,
    namespace: &str,
    user: &str,
    role: &str,
) -> Result<PathBuf> {
    api.kubectl(&[
        "create",
        "rolebinding",
        &format!("{user}-{role}"),
        "-n",
        namespace,
        &format!("--clusterrole={role}"),
        &format!("--user={user}"),
    ])?;
    api.kubeconfig_for(user, &["system:authenticated"])
}

/// Write `text` to `dir/name`; the path as a string (for kubectl's `-f`).
pub fn write_file(dir: &Path, name: &str, text: &str) -> Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path.display().to_string())
}

/// `kubectl get <kind> -n <namespace> <name> -o json` as the admin, `managedFields` included
/// (kubectl leaves them out by default); `None` when it is not found.
pub fn get_json(api: &KubeApi, kind: &str, namespace: &str, name: &str) -> Result<Option<Value>> {
    let args = ["get", kind, "-n", namespace, name, "-o", "json"];
    let out = api.kubectl_as(None, &[&args[..], &["--show-managed-fields"]].concat())?;
    if out.status.success() {
        return Ok(Some(serde_json::from_slice(&out.stdout)?));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(stderr.contains("NotFound"), "kubectl get {kind}: {stderr}");
    Ok(None)
}

/// The audit events of requests made by `user`.
pub fn requests_by(api: &KubeApi, user: &str) -> Result<Vec<Value>> {
    Ok(api
        .audit_events()?
        .into_iter()
        .filter(|e| e["user"]["username"] == user)
        .collect())
}

/// A ServiceAccount's user name as the API server authenticates it.
pub fn sa_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// A real API server with the CRD, the chart's ServiceAccounts and RBAC and a [`USER_NAMESPACE`];
/// a registry holding busybox; Kubo (the operator's). `dir` holds logs and manifests.
pub struct ChartWorld {
    pub api: KubeApi,
    pub dir: tempfile::TempDir,
    pub registry: Registry,
    /// The OCI layout `registry` was filled from (to push other platforms of it).
    pub layout: PathBuf,
    pub ipfs: IpfsDaemon,
}

impl ChartWorld {
    pub fn start() -> Result<Self> {
        Self::with_api(KubeApi::start()?)
    }

    /// The same world inside `node`'s network namespace: the API server on the node's address,
    /// the registry and Kubo on its own 127.0.0.1. Start whatever talks to them (the operator,
    /// proxies, listeners) inside `node.enter` too.
    pub fn start_in(node: &crate::NetNode) -> Result<Self> {
        let api = KubeApi::start_in(node)?;
        node.enter(|| Self::with_api(api))
    }

    fn with_api(api: KubeApi) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        install_crd(&api)?;
        install_chart_rbac(&api, dir.path())?;
        api.kubectl(&["create", "namespace", USER_NAMESPACE])?;
        let (registry, layout) = crate::registry_with_busybox(dir.path())?;
        let ipfs = IpfsDaemon::start()?;
        Ok(Self {
            api,
            dir,
            registry,
            layout,
            ipfs,
        })
    }

    /// `registry/test/busybox:1`, the image the registry holds.
    pub fn busybox(&self) -> String {
        format!("{}/test/busybox:1", self.registry.addr)
    }

    /// Kill the operator's Kubo (SIGKILL) and start it again on the same repo and ports, or on
    /// the repo at `repo` when given (a fresh one there if it is new).
    pub fn restart_ipfs(&mut self, repo: Option<&Path>) -> Result<()> {
        let net = self.ipfs.net();
        self.ipfs.kill();
        let kept = self.ipfs.keep_repo();
        let repo = repo.map_or_else(|| self.ipfs.repo.clone(), Path::to_path_buf);
        let mut next = IpfsDaemon::start_in_with(&repo, net)?;
        next.adopt_repo_dir(kept);
        self.ipfs = next;
        Ok(())
    }

    /// Apply a manifest as the admin.
    pub fn apply(&self, name: &str, yaml: &str) -> Result<()> {
        let file = write_file(self.dir.path(), &format!("{name}.yaml"), yaml)?;
        self.api.kubectl(&["apply", "-f", &file])?;
        Ok(())
    }

    /// A tenant of [`USER_NAMESPACE`]: `user`, bound there to the built-in `edit` role with the
    /// chart's users' roles folded in (see [`install_user_roles`]), and nothing else.
    pub fn editor(&self, user: &str) -> Result<Editor> {
        let aggregation = install_user_roles(&self.api, self.dir.path())?;
        let kubeconfig = user_with_builtin_role(&self.api, USER_NAMESPACE, user, "edit")?;
        Ok(Editor {
            kubeconfig,
            _aggregation: aggregation,
        })
    }

    /// Create a manifest as `editor`; an error unless the server allows it.
    pub fn create_as(&self, editor: &Editor, name: &str, yaml: &str) -> Result<()> {
        let file = write_file(self.dir.path(), &format!("{name}.yaml"), yaml)?;
        let out = self
            .api
            .kubectl_as(Some(&editor.kubeconfig), &["create", "-f", &file])?;
        ensure!(
            out.status.success(),
            "{name} as an editor: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

/// A namespace user with an ordinary `edit` role (from [`ChartWorld::editor`]); the
/// aggregation controller runs while it lives.
pub struct Editor {
    pub kubeconfig: PathBuf,
    _aggregation: Daemon,
}

/// A `kubernetes.io/dockerconfigjson` Secret `namespace/name` with a login for `registry`.
pub fn pull_secret_yaml(
    namespace: &str,
    name: &str,
    registry: &str,
    (user, password): (&str, &str),
) -> String {
    use base64::Engine as _;
    let config = serde_json::json!({"auths": {registry: {"username": user, "password": password}}});
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&config).expect("JSON"));
    serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": encoded}})
    .to_string()
}

/// The operator binary (`run`) as the identity of `kubeconfig`, one replica named `pod`, with
/// short backoffs and no peer publishing (it has no Pod of its own here).
pub struct OperatorProcess {
    pub metrics: String,
    pub log: PathBuf,
    pub daemon: Daemon,
}

impl OperatorProcess {
    pub fn start(
        bin: &Path,
        kubeconfig: &Path,
        pod: &str,
        world: &ChartWorld,
        extra: &[&str],
    ) -> Result<Self> {
        Self::start_with_env(bin, kubeconfig, pod, world, extra, &[])
    }

    /// [`OperatorProcess::start`] with more environment (`FAILPOINTS` for the crash tests).
    pub fn start_with_env(
        bin: &Path,
        kubeconfig: &Path,
        pod: &str,
        world: &ChartWorld,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let metrics = format!("127.0.0.1:{}", free_port());
        let log = world.dir.path().join(format!("{pod}.log"));
        let mut cmd = Command::new(bin);
        cmd.env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", RELEASE_NAMESPACE)
            .env("POD_NAME", pod)
            .args(["--ipfs-api", &world.ipfs.api_url, "run"])
            .args(["--metrics-listen", &metrics])
            .args(["--plain-http-registry", &world.registry.addr])
            .args(["--error-backoff", "1s", "--max-backoff", "5s"])
            .args(["--publish-peer", "false"])
            .args(extra)
            .envs(env.iter().copied());
        let daemon = Daemon::spawn("ipfs-image-operator", cmd, &log)?;
        Ok(Self {
            metrics,
            log,
            daemon,
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `ipfs_image_operator_leader`, or `None` while /metrics does not answer.
    pub fn leader_gauge(&self) -> Option<f64> {
        let text = crate::http_client(Duration::from_secs(2))
            .get(format!("http://{}/metrics", self.metrics))
            .send()
            .ok()?
            .text()
            .ok()?;
        Some(crate::sum_metric(&text, "ipfs_image_operator_leader", &[]))
    }
}

/// One permission: `(API group, resource[/subresource], verb)`.
pub type Permission = (&'static str, &'static str, &'static str);

/// What the chart grants a ServiceAccount: cluster-wide, and in [`RELEASE_NAMESPACE`] only.
pub struct Grants {
    pub cluster: &'static [Permission],
    pub release_namespace: &'static [Permission],
}

/// The operator's rights: what its code calls (e2e/chart/assertions.py checks the same sets).
pub const OPERATOR_GRANTS: Grants = Grants {
    cluster: &[
        ("ipfsimage.dev", "ipfsimages", "list"),
        ("ipfsimage.dev", "ipfsimages", "watch"),
        ("ipfsimage.dev", "ipfsimages", "patch"),
        ("ipfsimage.dev", "ipfsimages/status", "patch"),
        ("", "secrets", "get"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
        ("", "nodes", "list"),
        ("", "nodes", "watch"),
    ],
    release_namespace: &[
        ("", "pods", "patch"),
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "update"),
    ],
};

/// The agents' rights.
pub const AGENT_GRANTS: Grants = Grants {
    cluster: &[
        ("ipfsimage.dev", "ipfsimages", "list"),
        ("ipfsimage.dev", "ipfsimages", "watch"),
        ("ipfsimage.dev", "ipfsimages/status", "patch"),
        ("", "nodes", "list"),
        ("", "nodes", "watch"),
    ],
    release_namespace: &[
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods", "patch"),
    ],
};

impl Grants {
    /// Whether a request for `permission` in `namespace` (`None`: cluster-wide or all
    /// namespaces) falls under these grants.
    pub fn allow(&self, permission: (&str, &str, &str), namespace: Option<&str>) -> bool {
        self.cluster.contains(&permission)
            || (namespace == Some(RELEASE_NAMESPACE)
                && self.release_namespace.contains(&permission))
    }
}

/// A request from the audit log: `(group, resource[/subresource], verb, namespace)`.
pub type Call = (String, String, String, Option<String>);

/// Every API call `user` made (resource requests only), and the events of those the server
/// refused with 403.
pub fn calls_of(
    api: &KubeApi,
    user: &str,
) -> Result<(std::collections::BTreeSet<Call>, Vec<Value>)> {
    let events = requests_by(api, user)?;
    let refused = events
        .iter()
        .filter(|e| e["responseStatus"]["code"] == 403)
        .cloned()
        .collect();
    let calls = events
        .iter()
        .filter_map(|e| {
            let r = &e["objectRef"];
            let mut resource = r["resource"].as_str()?.to_owned();
            if let Some(sub) = r["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            Some((
                r["apiGroup"].as_str().unwrap_or("").to_owned(),
                resource,
                e["verb"].as_str()?.to_owned(),
                r["namespace"].as_str().map(str::to_owned),
            ))
        })
        .collect();
    Ok((calls, refused))
}

/// Fails unless every call ServiceAccount `sa` made was granted and none was refused.
pub fn assert_calls_granted(api: &KubeApi, sa: &str, grants: &Grants) {
    let (calls, refused) = calls_of(api, &sa_user(RELEASE_NAMESPACE, sa)).unwrap();
    assert!(refused.is_empty(), "{sa} was refused: {refused:#?}");
    assert!(!calls.is_empty(), "{sa} made no call at all");
    for (group, resource, verb, ns) in &calls {
        assert!(
            grants.allow((group, resource, verb), ns.as_deref()),
            "{sa} called {verb} {group}/{resource} in {ns:?}, which the grants do not list"
        );
    }
}
