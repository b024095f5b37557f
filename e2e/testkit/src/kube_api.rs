//! A real Kubernetes API server for a test: etcd and kube-apiserver (built by `e2e/deps.sh` from
//! their Go modules) on free loopback ports, with their own CA, RBAC authorization on, and client
//! certificates for any identity — the admin (`system:masters`), a ServiceAccount, a user — so a
//! test acts with exactly the rights the chart's RBAC grants. Stopped (by PID) when dropped.
//!
//! [`KubeApi::start_in`] runs both inside a [`NetNode`] instead (a test's "control-plane"
//! namespace): etcd on that namespace's own loopback, the API server on its address on the test
//! bridge (in the serving certificate), so agents in the other nodes reach it over the bridge and
//! nothing listens in the root namespace. `kubectl` calls then run inside that namespace too.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::NetNode;
use crate::process::{Daemon, free_port, log_tail as tail, wait_until};

/// A binary `e2e/deps.sh` linked into `e2e/.deps/bin`; panics when missing, so a test that
/// needs it fails instead of passing vacuously.
pub fn deps_binary(name: &str) -> PathBuf {
    let path = crate::workspace_root().join("e2e/.deps/bin").join(name);
    assert!(
        path.exists(),
        "no {name} at {}: run `bash e2e/deps.sh`",
        path.display()
    );
    path
}

/// `kube-apiserver --version` of the binary the tests use, asked once per process.
pub fn kube_apiserver_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let out = Command::new(deps_binary("kube-apiserver"))
            .arg("--version")
            .output()
            .expect("run kube-apiserver --version");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
}

pub struct KubeApi {
    /// `https://127.0.0.1:<port>` (or the node's address, see [`KubeApi::start_in`])
    pub url: String,
    /// The namespace it runs in, where `kubectl` is run; `None`: the caller's.
    node: Option<NetNode>,
    /// The admin's kubeconfig (`system:masters`).
    pub admin: PathBuf,
    dir: tempfile::TempDir,
    // Dropped in this order: the API server before its etcd.
    apiserver: Daemon,
    etcd: Daemon,
}

impl KubeApi {
    pub fn start() -> Result<Self> {
        Self::start_at(Ipv4Addr::LOCALHOST, None)
    }

    /// Inside `node`'s network namespace: the API server listens on `node.ip` (the test bridge),
    /// etcd on the namespace's loopback. Processes and `kubectl` run there.
    pub fn start_in(node: &NetNode) -> Result<Self> {
        node.enter(|| Self::start_at(node.ip, Some(node.clone())))
    }

    fn start_at(ip: Ipv4Addr, node: Option<NetNode>) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("testkit-kube-").tempdir()?;
        let pki = dir.path().join("pki");
        std::fs::create_dir_all(&pki)?;
        make_pki(&pki, ip)?;
        let mut last = None;
        for _ in 0..3 {
            match Self::start_daemons(&dir, ip) {
                Ok((etcd, apiserver, url)) => {
                    let admin = dir.path().join("admin.kubeconfig");
                    let this = Self {
                        url,
                        node: node.clone(),
                        admin,
                        dir,
                        apiserver,
                        etcd,
                    };
                    this.write_kubeconfig(&this.admin, "admin", &["system:masters"])?;
                    eprintln!("testkit: {} at {}", kube_apiserver_version(), this.url);
                    return Ok(this);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried at least once"))
    }

    fn start_daemons(dir: &tempfile::TempDir, ip: Ipv4Addr) -> Result<(Daemon, Daemon, String)> {
        let root = dir.path();
        let pki = root.join("pki");
        let (client, peer) = (free_port(), free_port());
        let data = root.join("etcd");
        let _ = std::fs::remove_dir_all(&data);
        let mut cmd = Command::new(deps_binary("etcd"));
        cmd.arg(format!("--data-dir={}", data.display()))
            .arg("--name=testkit")
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=testkit=http://127.0.0.1:{peer}"))
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn");
        let mut etcd = Daemon::spawn("etcd", cmd, &root.join("etcd.log"))?;
        let http = crate::http_client(Duration::from_secs(2));
        wait_until("etcd", Duration::from_secs(30), || {
            if !etcd.is_running() {
                bail!("etcd exited: {}", tail(&root.join("etcd.log")));
            }
            Ok(http
                .get(format!("http://127.0.0.1:{client}/health"))
                .send()
                .map(|r| r.status().is_success())
                .unwrap_or(false))
        })?;

        let port = free_port();
        let p = |name: &str| pki.join(name).display().to_string();
        // Every request's metadata, so a test can show which calls each identity made and
        // what the server answered (RBAC refusals included).
        let policy = root.join("audit-policy.yaml");
        std::fs::write(&policy, AUDIT_POLICY)?;
        let audit = root.join("audit.log");
        let _ = std::fs::remove_file(&audit);
        let mut cmd = Command::new(deps_binary("kube-apiserver"));
        cmd.arg(format!("--etcd-servers=http://127.0.0.1:{client}"))
            .arg(format!("--bind-address={ip}"))
            .arg(format!("--advertise-address={ip}"))
            .arg(format!("--secure-port={port}"))
            .arg(format!("--cert-dir={}", root.join("certs").display()))
            .arg(format!("--tls-cert-file={}", p("server.crt")))
            .arg(format!("--tls-private-key-file={}", p("server.key")))
            .arg(format!("--client-ca-file={}", p("ca.crt")))
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", p("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                p("sa.key")
            ))
            // Inside nothing: no node or Service of this cluster is ever reached.
            .arg("--service-cluster-ip-range=10.97.0.0/24")
            .arg("--authorization-mode=RBAC")
            .arg(format!("--audit-policy-file={}", policy.display()))
            .arg(format!("--audit-log-path={}", audit.display()))
            .arg("--audit-log-mode=blocking")
            .arg("--profiling=false")
            .arg("--v=1");
        let mut apiserver = Daemon::spawn("kube-apiserver", cmd, &root.join("apiserver.log"))?;
        let url = format!("https://{ip}:{port}");
        let https = ca_client(&pki)?;
        let ready = wait_until("kube-apiserver", Duration::from_secs(90), || {
            if !apiserver.is_running() {
                bail!(
                    "kube-apiserver exited: {}",
                    tail(&root.join("apiserver.log"))
                );
            }
            // /readyz is public (system:public-info-viewer); ready once RBAC's bootstrap roles exist.
            Ok(https
                .get(format!("{url}/readyz"))
                .send()
                .map(|r| r.status().is_success())
                .unwrap_or(false))
        });
        if let Err(e) = ready {
            apiserver.stop();
            etcd.stop();
            bail!("{e:#}\n{}", tail(&root.join("apiserver.log")));
        }
        Ok((etcd, apiserver, url))
    }

    /// A kubeconfig for `user` in `groups`, with a client certificate signed by this server's CA.
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> Result<PathBuf> {
        let safe: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = self.dir.path().join(format!("{safe}.kubeconfig"));
        self.write_kubeconfig(&path, user, groups)?;
        Ok(path)
    }

    /// The kubeconfig of ServiceAccount `namespace/name`: the identity, and groups, the API
    /// server gives that ServiceAccount's tokens.
    pub fn service_account(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        self.kubeconfig_for(
            &format!("system:serviceaccount:{namespace}:{name}"),
            &[
                "system:serviceaccounts",
                &format!("system:serviceaccounts:{namespace}"),
                "system:authenticated",
            ],
        )
    }

    /// A kubeconfig for a token of ServiceAccount `namespace/name` bound to Pod `pod` (a
    /// TokenRequest, as kubelet makes for the Pod's projected token): the server adds the Pod's
    /// and its node's names to the identity (`authentication.kubernetes.io/pod-name`,
    /// `…/node-name`), which admission policies can check.
    pub fn pod_token_kubeconfig(&self, namespace: &str, name: &str, pod: &str) -> Result<PathBuf> {
        let token = self.kubectl(&[
            "create",
            "token",
            name,
            "-n",
            namespace,
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            pod,
            "--duration",
            "1h",
        ])?;
        let path = self
            .dir
            .path()
            .join(format!("{namespace}-{name}-{pod}.kubeconfig"));
        self.write_kubeconfig_for(&path, pod, serde_json::json!({"token": token.trim()}))?;
        Ok(path)
    }

    /// A kubeconfig for this server with `user`'s credentials (`credentials` is the
    /// kubeconfig's `user` object).
    fn write_kubeconfig_for(
        &self,
        path: &Path,
        user: &str,
        credentials: serde_json::Value,
    ) -> Result<()> {
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "testkit", "cluster": {
                "server": self.url,
                "certificate-authority": self.dir.path().join("pki").join("ca.crt"),
            }}],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": "testkit", "context": {"cluster": "testkit", "user": user}}],
            "current-context": "testkit",
        });
        std::fs::write(path, serde_json::to_vec_pretty(&config)?)?;
        Ok(())
    }

    fn write_kubeconfig(&self, path: &Path, user: &str, groups: &[&str]) -> Result<()> {
        let pki = self.dir.path().join("pki");
        let stem = path.with_extension("");
        let (crt, key) = (stem.with_extension("crt"), stem.with_extension("key"));
        let mut subject: String = groups.iter().map(|g| format!("/O={g}")).collect();
        subject.push_str(&format!("/CN={user}"));
        sign(&pki, &key, &crt, &subject, None)?;
        self.write_kubeconfig_for(
            path,
            user,
            serde_json::json!({"client-certificate": crt, "client-key": key}),
        )
    }

    /// `kubectl` with `kubeconfig` (the admin's when `None`); its output, whatever the status.
    pub fn kubectl_as(
        &self,
        kubeconfig: Option<&Path>,
        args: &[&str],
    ) -> Result<std::process::Output> {
        let run = || {
            Command::new(deps_binary("kubectl"))
                .arg(format!(
                    "--kubeconfig={}",
                    kubeconfig.unwrap_or(&self.admin).display()
                ))
                .args(args)
                .output()
                .context("run kubectl")
        };
        match &self.node {
            Some(node) => node.enter(run),
            None => run(),
        }
    }

    /// `kubectl` as the admin; fails unless it succeeds, returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl_as(None, args)?;
        ensure!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A kube client with `kubeconfig` (after [`KubeApi::start_in`], usable only on a thread
    /// inside that node or another one on the bridge).
    pub async fn client_with(kubeconfig: &Path) -> Result<kube::Client> {
        crate::install_crypto_provider();
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(kubeconfig)?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// A kube client as the admin.
    pub async fn admin_client(&self) -> Result<kube::Client> {
        Self::client_with(&self.admin).await
    }

    /// The audit log so far (`audit.k8s.io/v1` Events at `Metadata` level, one per request,
    /// when the response was complete), oldest first.
    pub fn audit_events(&self) -> Result<Vec<serde_json::Value>> {
        let text = std::fs::read_to_string(self.dir.path().join("audit.log"))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).context("audit log line"))
            .collect()
    }

    /// kube-controller-manager with only the clusterrole-aggregation controller: what folds
    /// ClusterRoles labelled `aggregate-to-edit` (and -admin, -view) into the built-in roles,
    /// so a test can bind a user to the real `edit` role. It serves nothing (`--secure-port=0`)
    /// and stops when the returned [`Daemon`] is dropped.
    pub fn start_role_aggregation(&self) -> Result<Daemon> {
        let log = self.dir.path().join("controller-manager.log");
        let mut cmd = Command::new(deps_binary("kube-controller-manager"));
        cmd.arg(format!("--kubeconfig={}", self.admin.display()))
            .arg("--controllers=clusterrole-aggregation")
            .arg("--leader-elect=false")
            .arg("--secure-port=0")
            .arg("--use-service-account-credentials=false")
            .arg("--v=1");
        let spawn = || Daemon::spawn("kube-controller-manager", cmd, &log);
        match &self.node {
            Some(node) => node.enter(spawn),
            None => spawn(),
        }
    }

    pub fn log(&self) -> String {
        tail(&self.dir.path().join("apiserver.log"))
    }

    pub fn pids(&self) -> (u32, u32) {
        (self.etcd.pid(), self.apiserver.pid())
    }
}

/// Metadata of every request, recorded once its answer is complete (watches: when they end,
/// and when they start, so a long watch shows up while it runs).
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
";

/// CA, the server's certificate (loopback, `ip`, the Service IP) and the ServiceAccount signing
/// key.
fn make_pki(pki: &Path, ip: Ipv4Addr) -> Result<()> {
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=testkit-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        &pki.join("ca.key").display().to_string(),
        "-out",
        &pki.join("ca.crt").display().to_string(),
    ])?;
    sign(
        pki,
        &pki.join("server.key"),
        &pki.join("server.crt"),
        "/CN=kube-apiserver",
        Some(&format!(
            "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:{ip},IP:10.97.0.1,DNS:kubernetes.default.svc"
        )),
    )?;
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &pki.join("sa.key").display().to_string(),
    ])?;
    openssl(&[
        "pkey",
        "-in",
        &pki.join("sa.key").display().to_string(),
        "-pubout",
        "-out",
        &pki.join("sa.pub").display().to_string(),
    ])
}

/// A key and a certificate for `subject`, signed by the CA in `pki`.
fn sign(pki: &Path, key: &Path, crt: &Path, subject: &str, san: Option<&str>) -> Result<()> {
    let csr = crt.with_extension("csr");
    let (key_s, crt_s, csr_s) = (
        key.display().to_string(),
        crt.display().to_string(),
        csr.display().to_string(),
    );
    let mut req = vec![
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        subject,
        "-keyout",
        &key_s,
        "-out",
        &csr_s,
        // Extensions make it an X.509 v3 certificate, the only version rustls accepts.
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext",
        "extendedKeyUsage=serverAuth,clientAuth",
    ];
    if let Some(san) = san {
        req.extend(["-addext", san]);
    }
    openssl(&req)?;
    let (ca_crt, ca_key) = (
        pki.join("ca.crt").display().to_string(),
        pki.join("ca.key").display().to_string(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr_s,
        "-CA",
        &ca_crt,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-copy_extensions",
        "copyall",
        "-out",
        &crt_s,
    ])
}

fn openssl(args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .context("run openssl (Debian package openssl)")?;
    ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn ca_client(pki: &Path) -> Result<reqwest::blocking::Client> {
    crate::install_crypto_provider();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.join("ca.crt"))?)?;
    Ok(reqwest::blocking::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(2))
        .build()?)
}
