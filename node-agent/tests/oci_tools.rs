//! IPFS-agnostic OCI tools read images from the agent: `skopeo inspect` / `skopeo copy` to an OCI
//! layout (every copied blob verified), and `buildah bud` of `FROM <agent>/ipfs/<CID>` with a RUN
//! step — the `nerdctl build --ipfs` use case without nerdctl.

use std::path::PathBuf;
use std::process::Command;

use ipfs_oci::content_id::to_base32;
use ipfs_oci::convert::{ConvertOptions, convert};
use ipfs_oci::digest::Digest;
use ipfs_oci::ipfs::{KuboClient, KuboOptions};
use ipfs_oci::source::{SourceOptions, SourceRegistry};
use serde_json::Value;
use testkit::{
    Agent, IpfsDaemon, PushFormat, Registry, TestImage, block_on, build_busybox_layout, push_layout,
};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipfs-image-agent"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn skopeo_and_buildah_use_images_served_by_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let layout = build_busybox_layout(dir.path()).unwrap();
    let registry = Registry::start().unwrap();
    push_layout(
        &layout,
        TestImage::MULTI,
        &registry,
        "test/multi:1",
        PushFormat::OciIndex,
    )
    .unwrap();
    let ipfs = IpfsDaemon::start().unwrap();
    let client = KuboClient::new(&ipfs.api_url, KuboOptions::default()).unwrap();
    let source = SourceRegistry::new(&SourceOptions {
        plain_http: true,
        ..Default::default()
    });
    let reference = format!("{}/test/multi:1", registry.addr).parse().unwrap();
    let cid = to_base32(
        &block_on(convert(
            &client,
            &source,
            &reference,
            &ConvertOptions::default(),
        ))
        .unwrap()
        .root_cid,
    );
    let agent = Agent::start(&agent_bin(), &ipfs.api_url, None, &[]).unwrap();
    let image = format!("docker://{}/ipfs/{cid}:latest", agent.addr);

    // skopeo inspect sees the amd64 image of the index
    let probe = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--override-arch",
            "amd64",
            &image,
        ])
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "{}\nagent log:\n{}",
        String::from_utf8_lossy(&probe.stderr),
        agent.log()
    );
    let inspect: Value = serde_json::from_str(&run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--override-arch",
        "amd64",
        &image,
    ])))
    .unwrap();
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 1);

    // skopeo copy --all to an OCI layout: every blob there matches its file name
    let out = dir.path().join("copied");
    run(Command::new("skopeo")
        .args(["copy", "-q", "--all", "--src-tls-verify=false", &image])
        .arg(format!("oci:{}:copied", out.display())));
    let blobs: Vec<_> = std::fs::read_dir(out.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .collect();
    let index: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert!(blobs.len() >= 5, "copied blobs: {} ({index})", blobs.len());
    for blob in blobs {
        let name = blob.file_name().into_string().unwrap();
        assert_eq!(Digest::of(&std::fs::read(blob.path()).unwrap()).hex(), name);
    }

    // buildah bud FROM the agent, with a RUN step executed in the pulled rootfs
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Containerfile"),
        format!(
            "FROM {}/ipfs/{cid}:latest\nRUN echo built-from-ipfs > /hello\n",
            agent.addr
        ),
    )
    .unwrap();
    let storage = dir.path().join("storage");
    let buildah = |args: &[&str]| {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(storage.join("root"))
            .arg("--runroot")
            .arg(storage.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        c
    };
    run(buildah(&[
        "bud",
        "--isolation",
        "chroot",
        "--tls-verify=false",
        "--platform",
        "linux/amd64",
        "-t",
        "built:1",
        ctx.to_str().unwrap(),
    ])
    .env("BUILDAH_ISOLATION", "chroot"));
    let container = run(&mut buildah(&["from", "built:1"])).trim().to_owned();
    let mount = run(&mut buildah(&["mount", &container])).trim().to_owned();
    assert_eq!(
        std::fs::read_to_string(PathBuf::from(&mount).join("hello")).unwrap(),
        "built-from-ipfs\n"
    );
    run(&mut buildah(&["umount", &container]));
    run(&mut buildah(&["rm", &container]));
    assert!(agent.metric_sum("ipfs_image_agent_bytes_served_total", &[("kind", "blob")]) > 0.0);
    // buildah leaves overlay/vfs state under --root only: the tempdir removes it.
    let _ = Command::new("buildah")
        .arg("--root")
        .arg(storage.join("root"))
        .arg("--runroot")
        .arg(storage.join("run"))
        .args(["--storage-driver", "vfs", "rmi", "--all", "--force"])
        .output();
}
