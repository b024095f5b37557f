//! Test images built without Docker: busybox (from Debian's `busybox-static`) in an OCI layout
//! made with `umoci`, pushed with `skopeo`. Digests change with every build (timestamps), so
//! tests read them, never hard-code them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::registry::Registry;

/// Tags in the layout `build_busybox_layout` makes.
pub struct TestImage;

impl TestImage {
    /// linux/amd64 busybox, one layer; `/bin/sh` runs.
    pub const AMD64: &'static str = "amd64";
    /// linux/arm64, a tiny fake layer (never run).
    pub const ARM64: &'static str = "arm64";
    /// An OCI index of AMD64 and ARM64.
    pub const MULTI: &'static str = "multi";
    /// linux/amd64 busybox plus two layers of incompressible data (1 MiB and 600 KiB),
    /// so three layers, two of them larger than one 256 KiB chunk.
    pub const LAYERED: &'static str = "layered";
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Incompressible bytes (xorshift), different for each seed.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Tag `to_tag` in `layout`: `from_tag` plus one layer per entry of `sizes`, each a file of
/// that many bytes of noise (so the layers are as large as the files, gzip or not).
pub fn add_noise_layers(
    layout: &Path,
    from_tag: &str,
    to_tag: &str,
    sizes: &[usize],
    seed: u64,
) -> Result<()> {
    let work = tempfile::Builder::new()
        .prefix("testkit-layers-")
        .tempdir()?;
    let bundle = work.path().join("bundle");
    let image = |tag: &str| format!("{}:{tag}", layout.display());
    run(Command::new("umoci")
        .args(["unpack", "--image", &image(from_tag)])
        .arg(&bundle))?;
    for (i, size) in sizes.iter().enumerate() {
        std::fs::write(
            bundle.join(format!("rootfs/noise-{i}.bin")),
            noise(*size, seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9)),
        )?;
        run(Command::new("umoci")
            .args(["repack", "--image", &image(to_tag)])
            .arg(&bundle))?;
        // The next layer builds on this one.
        if i + 1 < sizes.len() {
            std::fs::remove_dir_all(&bundle)?;
            run(Command::new("umoci")
                .args(["unpack", "--image", &image(to_tag)])
                .arg(&bundle))?;
        }
    }
    Ok(())
}

/// Build the test layout under `dir/oci` and return its path.
pub fn build_busybox_layout(dir: &Path) -> Result<PathBuf> {
    let layout = dir.join("oci");
    let image = |tag: &str| format!("{}:{tag}", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))?;

    // amd64 busybox
    let bundle = dir.join("bundle-amd64");
    run(Command::new("umoci").args(["new", "--image", &image(TestImage::AMD64)]))?;
    run(Command::new("umoci")
        .args(["unpack", "--image", &image(TestImage::AMD64)])
        .arg(&bundle))?;
    let bin = bundle.join("rootfs/bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy("/bin/busybox", bin.join("busybox")).context("/bin/busybox (busybox-static)")?;
    std::os::unix::fs::symlink("busybox", bin.join("sh"))?;
    run(Command::new("umoci")
        .args(["repack", "--image", &image(TestImage::AMD64)])
        .arg(&bundle))?;
    run(Command::new("umoci")
        .args([
            "config",
            "--image",
            &image(TestImage::AMD64),
            "--os",
            "linux",
            "--architecture",
            "amd64",
        ])
        .args(["--config.cmd", "/bin/sh", "--config.env", "PATH=/bin"]))?;

    // layered: amd64 + two big layers
    let bundle_l = dir.join("bundle-layered");
    run(Command::new("umoci")
        .args(["unpack", "--image", &image(TestImage::AMD64)])
        .arg(&bundle_l))?;
    std::fs::write(
        bundle_l.join("rootfs/big1.bin"),
        noise(1024 * 1024, 0x5eed_0001 ^ std::process::id() as u64),
    )?;
    run(Command::new("umoci")
        .args(["repack", "--image", &image(TestImage::LAYERED)])
        .arg(&bundle_l))?;
    // A bundle repacks against the image it was unpacked from: unpack again for the third layer.
    let bundle_l2 = dir.join("bundle-layered2");
    run(Command::new("umoci")
        .args(["unpack", "--image", &image(TestImage::LAYERED)])
        .arg(&bundle_l2))?;
    std::fs::write(
        bundle_l2.join("rootfs/big2.bin"),
        noise(600 * 1024, 0x5eed_0002 ^ std::process::id() as u64),
    )?;
    run(Command::new("umoci")
        .args(["repack", "--image", &image(TestImage::LAYERED)])
        .arg(&bundle_l2))?;

    // arm64 (fake)
    let bundle_a = dir.join("bundle-arm64");
    run(Command::new("umoci").args(["new", "--image", &image(TestImage::ARM64)]))?;
    run(Command::new("umoci")
        .args(["unpack", "--image", &image(TestImage::ARM64)])
        .arg(&bundle_a))?;
    std::fs::write(bundle_a.join("rootfs/arch"), "fake-arm64\n")?;
    run(Command::new("umoci")
        .args(["repack", "--image", &image(TestImage::ARM64)])
        .arg(&bundle_a))?;
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image(TestImage::ARM64),
        "--os",
        "linux",
        "--architecture",
        "arm64",
        "--config.cmd",
        "/bin/sh",
    ]))?;

    add_multi_index(&layout)?;
    Ok(layout)
}

/// Write an OCI index of the amd64 and arm64 manifests and tag it `multi`.
fn add_multi_index(layout: &Path) -> Result<()> {
    let index_path = layout.join("index.json");
    let mut top: Value = serde_json::from_slice(&std::fs::read(&index_path)?)?;
    let mut manifests = Vec::new();
    for m in top["manifests"]
        .as_array()
        .context("index.json manifests")?
    {
        let tag = m["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap_or_default();
        if tag == TestImage::AMD64 || tag == TestImage::ARM64 {
            let mut d = m.clone();
            d.as_object_mut().expect("object").remove("annotations");
            d["platform"] = json!({"os": "linux", "architecture": tag});
            manifests.push(d);
        }
    }
    let index = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}),
    )?;
    let digest = hex::encode(Sha256::digest(&index));
    std::fs::write(layout.join("blobs/sha256").join(&digest), &index)?;
    top["manifests"].as_array_mut().expect("array").push(json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": format!("sha256:{digest}"),
        "size": index.len(),
        "annotations": {"org.opencontainers.image.ref.name": TestImage::MULTI},
    }));
    std::fs::write(&index_path, serde_json::to_vec(&top)?)?;
    Ok(())
}

/// How `push_layout` writes the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFormat {
    /// OCI media types.
    Oci,
    /// Docker v2 schema 2 media types.
    Docker,
    /// An index with all its manifests.
    OciIndex,
}

/// A registry holding the busybox test image as `test/busybox:1` (OCI media types), its layout
/// built under `dir`. Returns the registry and the layout (for more tags).
pub fn registry_with_busybox(dir: &Path) -> Result<(Registry, PathBuf)> {
    let layout = build_busybox_layout(dir)?;
    let registry = Registry::start()?;
    push_layout(
        &layout,
        TestImage::AMD64,
        &registry,
        "test/busybox:1",
        PushFormat::Oci,
    )?;
    Ok((registry, layout))
}

/// `skopeo copy` a tag of the layout to `registry/<repo_tag>`.
pub fn push_layout(
    layout: &Path,
    tag: &str,
    registry: &Registry,
    repo_tag: &str,
    format: PushFormat,
) -> Result<()> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "-q", "--dest-tls-verify=false"]);
    if let Some(creds) = registry.creds_arg() {
        cmd.args(["--dest-creds", &creds]);
    }
    match format {
        PushFormat::Oci => {}
        PushFormat::Docker => {
            cmd.args(["--format", "v2s2"]);
        }
        PushFormat::OciIndex => {
            cmd.arg("--all");
        }
    }
    cmd.arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{}/{repo_tag}", registry.addr));
    run(&mut cmd)
}
