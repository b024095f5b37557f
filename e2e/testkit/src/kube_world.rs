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
    pub ipfs: IpfsDaemon,
}

impl ChartWorld {
    pub fn start() -> Result<Self> {
        let api = KubeApi::start()?;
        let dir = tempfile::tempdir()?;
        install_crd(&api)?;
        install_chart_rbac(&api, dir.path())?;
        api.kubectl(&["create", "namespace", USER_NAMESPACE])?;
        let (registry, _) = crate::registry_with_busybox(dir.path())?;
        let ipfs = IpfsDaemon::start()?;
        Ok(Self {
            api,
            dir,
            registry,
            ipfs,
        })
    }

    /// `registry/test/busybox:1`, the image the registry holds.
    pub fn busybox(&self) -> String {
        format!("{}/test/busybox:1", self.registry.addr)
    }

    /// Apply a manifest as the admin.
    pub fn apply(&self, name: &str, yaml: &str) -> Result<()> {
        let file = write_file(self.dir.path(), &format!("{name}.yaml"), yaml)?;
        self.api.kubectl(&["apply", "-f", &file])?;
        Ok(())
    }
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
            .args(extra);
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
