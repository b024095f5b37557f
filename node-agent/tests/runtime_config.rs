//! containerd configurations that silently disable every mirror: for each, the agent (the real
//! binary, against a real Kubo) says so in its log and in `configure-containerd`'s output, its
//! `/readyz` fails with the reason, and the `runtime_config_problems` gauge names it. Fixing the
//! file on the node makes the agent ready again without a restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::{Agent, IpfsDaemon, wait_until};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipfs-image-agent"))
}

fn good_config(hosts: &Path, version: u8) -> String {
    let table = if version == 3 {
        "io.containerd.cri.v1.images"
    } else {
        "io.containerd.grpc.v1.cri"
    };
    format!(
        "version = {version}\n[plugins.\"{table}\".registry]\n  config_path = \"{}\"\n",
        hosts.display()
    )
}

fn readyz(agent: &Agent) -> (u16, String) {
    let r = testkit::http_client(Duration::from_secs(5))
        .get(format!("http://{}/readyz", agent.metrics_addr))
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn write_config(file: &Path, text: &str) {
    if text.is_empty() {
        let _ = std::fs::remove_file(file);
    } else {
        std::fs::write(file, text).unwrap();
    }
}

/// One misconfiguration: `text` is containerd's config.toml (`{hosts}` is the agent's directory;
/// empty: no file), `label` the problem the gauge names, `reason` words of the message.
fn assert_reported_and_unready(text: &str, label: &str, reason: &str) {
    let ipfs = IpfsDaemon::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("certs.d");
    let config = dir.path().join("config.toml");
    let hosts_arg = hosts.to_str().unwrap().to_owned();
    let config_arg = config.to_str().unwrap().to_owned();
    write_config(&config, &text.replace("{hosts}", &hosts_arg));

    // configure-containerd still writes the files (ipfs/<CID> works) and says why the mirror is
    // not used, on stdout and in its log.
    let out = Command::new(agent_bin())
        .args(["configure-containerd", "--config-path", &hosts_arg])
        .args([
            "--containerd-config",
            &config_arg,
            "--registry",
            "docker.io",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(hosts.join("docker.io/hosts.toml").exists());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("MIRROR NOT USED") && stdout.contains(reason),
        "configure-containerd printed {stdout}"
    );
    assert!(
        stderr.contains("MIRROR NOT USED") && stderr.contains(label),
        "configure-containerd logged {stderr}"
    );

    // serve: not ready, with the reason; the gauge names the problem.
    let agent = Agent::start(
        &agent_bin(),
        &ipfs.api_url,
        None,
        &[
            "--config-path",
            &hosts_arg,
            "--containerd-config",
            &config_arg,
        ],
    )
    .unwrap();
    let (status, body) = readyz(&agent);
    assert_eq!(status, 503, "/readyz said {body}");
    assert!(
        body.contains("containerd does not use the mirror") && body.contains(reason),
        "/readyz said {body}"
    );
    assert_eq!(
        agent.metric_sum(
            "ipfs_image_agent_runtime_config_problems",
            &[("problem", label)]
        ),
        1.0
    );
    assert!(agent.log().contains("MIRROR NOT USED"), "{}", agent.log());

    // Fixed on the node: ready again at the next probe, no restart.
    let version = if text.contains("version = 3") { 3 } else { 2 };
    write_config(&config, &good_config(&hosts, version));
    wait_until("the agent to become ready", Duration::from_secs(10), || {
        Ok(readyz(&agent).0 == 200)
    })
    .unwrap();
    assert_eq!(
        agent.metric_sum("ipfs_image_agent_runtime_config_problems", &[]),
        0.0
    );
}

#[test]
fn containerd_1x_without_config_path() {
    assert_reported_and_unready(
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"pause\"\n",
        "no_config_path",
        "sets no plugins.\"io.containerd.grpc.v1.cri\".registry.config_path",
    );
}

#[test]
fn containerd_2x_without_config_path_uses_its_default_list() {
    assert_reported_and_unready("version = 3\n", "config_path_list", "transfer service");
}

#[test]
fn a_config_path_list_under_the_transfer_service() {
    assert_reported_and_unready(
        "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"{hosts}:/etc/docker/certs.d\"\n",
        "config_path_list",
        "as one directory",
    );
}

#[test]
fn a_registry_mirrors_section_on_1x() {
    assert_reported_and_unready(
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\n  endpoint = [\"https://registry-1.docker.io\"]\n",
        "registry_mirrors",
        "registry.mirrors section",
    );
}

#[test]
fn a_registry_mirrors_section_beside_config_path_on_2x() {
    assert_reported_and_unready(
        "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"{hosts}\"\n[plugins.\"io.containerd.cri.v1.images\".registry.mirrors.\"docker.io\"]\n  endpoint = [\"https://registry-1.docker.io\"]\n",
        "registry_mirrors",
        "registry.mirrors section",
    );
}

#[test]
fn config_path_names_another_directory() {
    assert_reported_and_unready(
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/elsewhere\"\n",
        "hosts_dir_not_read",
        "but the agent writes them",
    );
}

#[test]
fn no_containerd_config_file() {
    assert_reported_and_unready("", "config_unreadable", "cannot read containerd's config");
}

#[test]
fn a_sound_config_is_ready_and_a_list_on_1x_only_warns() {
    let ipfs = IpfsDaemon::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("certs.d");
    let config = dir.path().join("config.toml");
    // containerd 1.x reads a list in order: a warning, still ready.
    std::fs::write(
        &config,
        format!(
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"{}:/etc/docker/certs.d\"\n",
            hosts.display()
        ),
    )
    .unwrap();
    let agent = Agent::start(
        &agent_bin(),
        &ipfs.api_url,
        None,
        &[
            "--config-path",
            hosts.to_str().unwrap(),
            "--containerd-config",
            config.to_str().unwrap(),
        ],
    )
    .unwrap();
    let (status, body) = readyz(&agent);
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ipfs "), "{body}");
    assert!(
        agent
            .log()
            .contains("containerd 2.1 and later read it as one directory"),
        "{}",
        agent.log()
    );
    assert!(!agent.log().contains("MIRROR NOT USED"), "{}", agent.log());
}
