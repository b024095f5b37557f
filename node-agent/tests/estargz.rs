//! eStargz images (`convert --estargz`, `spec.estargz: true`) with real components: containerd
//! pulls one through the agent and runs it (so the layers are valid gzip tars and the config's
//! diff_ids match), the layer structure is checked with GNU gzip/tar and with Debian's
//! stargz-snapshotter `ctr-remote`, and one file is read out of a large layer through the agent
//! with Range requests only.

use std::path::{Path, PathBuf};
use std::process::Command;

use ipfs_oci::Cid;
use ipfs_oci::content_id::to_base32;
use ipfs_oci::convert::{ConvertOptions, ConvertedImage, convert};
use ipfs_oci::digest::{Digest, verify_bytes};
use ipfs_oci::estargz::lazy::{LazyError, read_file};
use ipfs_oci::estargz::{
    EntryKind, FOOTER_SIZE, NO_PREFETCH_LANDMARK, TOC_DIGEST_ANNOTATION, TOC_NAME, Toc,
    UNCOMPRESSED_SIZE_ANNOTATION, clean_name, parse_footer,
};
use ipfs_oci::format::media_type;
use ipfs_oci::ipfs::{IpfsStore, KuboClient, KuboOptions};
use ipfs_oci::resolve::resolve;
use ipfs_oci::source::{SourceOptions, SourceRegistry};
use serde_json::Value;
use testkit::{
    Agent, Containerd, IpfsDaemon, PushFormat, Registry, TestImage, block_on, build_busybox_layout,
    noise, push_layout,
};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipfs-image-agent"))
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn estargz_convert(ipfs: &IpfsDaemon, registry: &Registry, repo_tag: &str) -> ConvertedImage {
    let client = KuboClient::new(&ipfs.api_url, KuboOptions::default()).unwrap();
    let source = SourceRegistry::new(&SourceOptions {
        plain_http: true,
        ..Default::default()
    });
    let reference = format!("{}/{repo_tag}", registry.addr).parse().unwrap();
    let options = ConvertOptions {
        estargz: true,
        ..Default::default()
    };
    block_on(convert(&client, &source, &reference, &options)).unwrap()
}

/// The linux/amd64 manifest of a converted image and its config, read back from IPFS.
fn manifest_and_config(ipfs: &IpfsDaemon, root: &Cid) -> (Value, Value) {
    let client = KuboClient::new(&ipfs.api_url, KuboOptions::default()).unwrap();
    block_on(async {
        let dag = resolve(&client, root).await.unwrap();
        let index: Value = serde_json::from_slice(dag.top().1.bytes.as_ref().unwrap()).unwrap();
        let m = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == "amd64")
            .unwrap();
        let digest: Digest = m["digest"].as_str().unwrap().parse().unwrap();
        let manifest: Value =
            serde_json::from_slice(dag.get(&digest).unwrap().bytes.as_ref().unwrap()).unwrap();
        let config_digest: Digest = manifest["config"]["digest"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let entry = dag.get(&config_digest).unwrap();
        let bytes = client.cat_to_vec(&entry.cid, 1 << 20).await.unwrap();
        verify_bytes(&bytes, config_digest, Some(entry.size)).unwrap();
        (manifest, serde_json::from_slice(&bytes).unwrap())
    })
}

/// GET a blob from the agent, verified.
fn agent_blob(agent: &Agent, cid: &str, digest: &Digest) -> Vec<u8> {
    let resp = testkit::http_client(std::time::Duration::from_secs(60))
        .get(format!(
            "http://{}/v2/ipfs/{cid}/blobs/{digest}",
            agent.addr
        ))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().unwrap().to_vec();
    verify_bytes(&bytes, *digest, None).unwrap();
    bytes
}

/// Check an eStargz layer with tools that know nothing of our code (GNU gzip and tar): it is a
/// gzip tar whose decompressed digest is the config's diff_id, whose first entry is the
/// no-prefetch landmark and whose last is the TOC that the annotation names; the footer points
/// at the TOC's gzip member. Returns the TOC.
fn check_layer_structure(dir: &Path, blob: &[u8], desc: &Value, diff_id: &str) -> Toc {
    assert_eq!(desc["mediaType"], media_type::OCI_LAYER_GZIP);
    let toc_digest = desc["annotations"][TOC_DIGEST_ANNOTATION].as_str().unwrap();
    let uncompressed: u64 = desc["annotations"][UNCOMPRESSED_SIZE_ANNOTATION]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let gz = dir.join("layer.tar.gz");
    std::fs::write(&gz, blob).unwrap();
    let tar = run(Command::new("gzip").arg("-dc").arg(&gz));
    assert_eq!(Digest::of(&tar).to_string(), diff_id, "config diff_id");
    assert_eq!(
        tar.len() as u64,
        uncompressed,
        "uncompressed-size annotation"
    );
    let tar_path = dir.join("layer.tar");
    std::fs::write(&tar_path, &tar).unwrap();
    let list = String::from_utf8(run(Command::new("tar").arg("-tf").arg(&tar_path))).unwrap();
    let names: Vec<&str> = list.lines().collect();
    assert_eq!(names.first(), Some(&NO_PREFETCH_LANDMARK), "{list}");
    assert_eq!(names.last(), Some(&TOC_NAME), "{list}");
    let landmark = run(Command::new("tar")
        .arg("-xOf")
        .arg(&tar_path)
        .arg(NO_PREFETCH_LANDMARK));
    assert_eq!(landmark, vec![0x0f]);
    let toc_json = run(Command::new("tar").arg("-xOf").arg(&tar_path).arg(TOC_NAME));
    assert_eq!(
        Digest::of(&toc_json).to_string(),
        toc_digest,
        "toc.digest annotation"
    );

    // The footer: 51 bytes, an empty gzip member naming the TOC member's offset.
    let footer = &blob[blob.len() - FOOTER_SIZE..];
    let offset = parse_footer(footer).unwrap();
    assert_eq!(&footer[16..38], format!("{offset:016x}STARGZ").as_bytes());
    let member = dir.join("toc-member.gz");
    std::fs::write(&member, &blob[offset as usize..]).unwrap();
    let toc_tar = run(Command::new("gzip").arg("-dc").arg(&member));
    assert_eq!(&toc_tar[..TOC_NAME.len()], TOC_NAME.as_bytes());

    let toc: Toc = serde_json::from_slice(&toc_json).unwrap();
    // Every non-empty regular file and every chunk has a gzip member of its own.
    for e in toc.entries.iter().filter(|e| e.has_data()) {
        assert!(!e.chunk_digest.is_empty(), "{}", e.name);
        assert_eq!(
            &blob[e.offset as usize..e.offset as usize + 2],
            &[0x1f, 0x8b]
        );
    }
    toc
}

/// `ipfs-image-agent configure-containerd`: the agent serves `localhost`-style `ipfs/<CID>` names.
fn configure_containerd(containerd: &Containerd, agent: &Agent) {
    let out = Command::new(agent_bin())
        .args(["configure-containerd", "--config-path"])
        .arg(&containerd.hosts_dir)
        .args([
            "--local-host",
            &agent.addr,
            "--mirror-endpoint",
            &format!("http://{}", agent.addr),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ctr-remote` (Debian's stargz-snapshotter) against the test containerd.
fn ctr_remote(containerd: &Containerd, args: &[&str]) -> String {
    String::from_utf8(run(Command::new("ctr-remote")
        .arg("-a")
        .arg(&containerd.socket)
        .args(args)))
    .unwrap()
}

/// A TOC entry with what may legitimately differ between two eStargz writers removed: where
/// the gzip members are (compression level, member boundaries) and the landmark's own header
/// fields (the specification only fixes its name, type and one-byte content). Go's writer omits
/// zero mode/uid/gid, which read as 0 — the same as ours.
fn comparable(toc: &Toc) -> Vec<Value> {
    toc.entries
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.name = clean_name(&e.name);
            e.offset = 0;
            e.inner_offset = 0;
            if e.name == NO_PREFETCH_LANDMARK {
                e.mode = 0;
                e.modtime.clear();
            }
            serde_json::to_value(e).unwrap()
        })
        .collect()
}

#[test]
fn estargz_images_are_pulled_and_run_by_containerd_and_ctr_remote_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, layout) = testkit::registry_with_busybox(dir.path()).unwrap();
    push_layout(
        &layout,
        TestImage::LAYERED,
        &registry,
        "test/layered:1",
        PushFormat::Docker,
    )
    .unwrap();
    let ipfs = IpfsDaemon::start().unwrap();

    let image = estargz_convert(&ipfs, &registry, "test/busybox:1");
    assert_eq!(image.estargz_layers, 1);
    assert_eq!(
        estargz_convert(&ipfs, &registry, "test/busybox:1"),
        image,
        "deterministic: converting again gives the same CIDs"
    );
    let layered = estargz_convert(&ipfs, &registry, "test/layered:1");
    assert_eq!(
        layered.estargz_layers, 3,
        "Docker gzip layers are converted too"
    );
    let cid = to_base32(&image.root_cid);
    let layered_cid = to_base32(&layered.root_cid);

    let agent = Agent::start(&agent_bin(), &ipfs.api_url, None, &[]).unwrap();
    let containerd = Containerd::start().unwrap();
    configure_containerd(&containerd, &agent);

    // Structure, checked with GNU gzip/tar, for every layer of both images.
    let mut our_toc = None;
    for (root, cid) in [(&image.root_cid, &cid), (&layered.root_cid, &layered_cid)] {
        let (manifest, config) = manifest_and_config(&ipfs, root);
        let layers = manifest["layers"].as_array().unwrap();
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        assert_eq!(layers.len(), diff_ids.len());
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            let digest: Digest = layer["digest"].as_str().unwrap().parse().unwrap();
            let blob = agent_blob(&agent, cid, &digest);
            let toc = check_layer_structure(dir.path(), &blob, layer, diff_id.as_str().unwrap());
            our_toc.get_or_insert((digest, layer.clone(), toc));
        }
    }
    let (layer_digest, layer_desc, our_toc) = our_toc.unwrap();
    assert!(
        our_toc
            .entries
            .iter()
            .any(|e| clean_name(&e.name) == "bin/busybox" && e.kind == EntryKind::Reg),
        "{our_toc:?}"
    );

    // containerd pulls both through the agent (unpacking checks every diff_id) and runs them.
    for cid in [&cid, &layered_cid] {
        let by_cid = format!("{}/ipfs/{cid}:latest", agent.addr);
        containerd.pull_with_hosts_dir(&by_cid).unwrap();
        let out = containerd
            .run(&by_cid, &["/bin/busybox", "echo", "hello"])
            .unwrap();
        assert_eq!(out.trim(), "hello");
    }

    // ctr-remote reads the TOC digest out of our layer (now in containerd's content store).
    let got = ctr_remote(
        &containerd,
        &["images", "get-toc-digest", &layer_digest.to_string()],
    );
    assert_eq!(
        got.trim(),
        layer_desc["annotations"][TOC_DIGEST_ANNOTATION]
            .as_str()
            .unwrap()
    );

    // ctr-remote's own conversion of the same source image: the TOCs agree entry by entry, up to
    // the differences the specification allows (offsets, landmark header fields).
    let source = format!("{}/test/busybox:1", registry.addr);
    let converted = format!("{}/test/busybox:esgz", registry.addr);
    containerd
        .ctr_ok(&["images", "pull", "--plain-http", &source])
        .unwrap();
    ctr_remote(
        &containerd,
        &[
            "images",
            "convert",
            "--estargz",
            "--oci",
            &source,
            &converted,
        ],
    );
    let manifest_digest = containerd.image_digest(&converted).unwrap();
    let manifest: Value = serde_json::from_str(
        &containerd
            .ctr_ok(&["content", "get", &manifest_digest])
            .unwrap(),
    )
    .unwrap();
    let theirs = &manifest["layers"][0];
    let their_toc_json = ctr_remote(
        &containerd,
        &[
            "images",
            "get-toc-digest",
            "--dump-toc",
            theirs["digest"].as_str().unwrap(),
        ],
    );
    let their_toc: Toc = serde_json::from_str(&their_toc_json).unwrap();
    assert_eq!(comparable(&our_toc), comparable(&their_toc));
    // Both carry the annotations; the digests differ because the TOC bytes do (JSON layout,
    // offsets), which the specification leaves to the writer.
    assert!(theirs["annotations"][TOC_DIGEST_ANNOTATION].is_string());
    assert!(theirs["annotations"][UNCOMPRESSED_SIZE_ANNOTATION].is_string());
}

/// Add a tag `big` to the layout: busybox plus a layer of `files` × `file_size` bytes of noise
/// and one small text file.
fn add_big_image(dir: &Path, layout: &Path, files: usize, file_size: usize) -> Vec<Vec<u8>> {
    let image = |tag: &str| format!("{}:{tag}", layout.display());
    let bundle = dir.join("bundle-big");
    run(Command::new("umoci")
        .args(["unpack", "--image", &image(TestImage::AMD64)])
        .arg(&bundle));
    let data = bundle.join("rootfs/data");
    std::fs::create_dir_all(&data).unwrap();
    let mut contents = Vec::new();
    for i in 0..files {
        let bytes = noise(
            file_size,
            (0xb16_0000 + i as u64) ^ u64::from(std::process::id()),
        );
        std::fs::write(data.join(format!("blob{i}.bin")), &bytes).unwrap();
        contents.push(bytes);
    }
    std::fs::create_dir_all(bundle.join("rootfs/etc")).unwrap();
    std::fs::write(bundle.join("rootfs/etc/motd"), MOTD).unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image", &image("big")])
        .arg(&bundle));
    contents
}

const MOTD: &[u8] = b"read lazily, one file out of a large layer\n";

#[test]
fn one_small_file_is_read_from_a_large_layer_with_range_requests_only() {
    const FILES: usize = 4;
    const FILE_SIZE: usize = 13 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let layout = build_busybox_layout(dir.path()).unwrap();
    let contents = add_big_image(dir.path(), &layout, FILES, FILE_SIZE);
    let registry = Registry::start().unwrap();
    push_layout(&layout, "big", &registry, "test/big:1", PushFormat::Oci).unwrap();
    let ipfs = IpfsDaemon::start().unwrap();
    let image = estargz_convert(&ipfs, &registry, "test/big:1");
    let cid = to_base32(&image.root_cid);
    let (manifest, _) = manifest_and_config(&ipfs, &image.root_cid);
    let layer = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap()
        .clone();
    let size = layer["size"].as_u64().unwrap();
    assert!(size >= 50 * 1024 * 1024, "a large layer: {size} bytes");
    let digest: Digest = layer["digest"].as_str().unwrap().parse().unwrap();
    let toc_digest: Digest = layer["annotations"][TOC_DIGEST_ANNOTATION]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let agent = Agent::start(&agent_bin(), &ipfs.api_url, None, &[]).unwrap();
    let registry_url = format!("http://{}", agent.addr);
    let repository = format!("ipfs/{cid}");
    let served = || agent.metric_sum("ipfs_image_agent_bytes_served_total", &[("kind", "blob")]);
    // A fresh client (and runtime) per read: the reader is what stargz-snapshotter would be.
    let lazy = |path: &str, size: Option<u64>, toc: Digest| {
        ipfs_oci::install_crypto_provider();
        block_on(async {
            let client = reqwest::Client::new();
            read_file(
                &client,
                &registry_url,
                &repository,
                &digest,
                size,
                Some(toc),
                path,
            )
            .await
        })
    };

    let small = lazy("/etc/motd", Some(size), toc_digest).unwrap();
    assert_eq!(small.bytes, MOTD);
    assert_eq!(small.requests, 3, "footer, TOC, one chunk");
    assert!(
        small.transferred * 20 < size,
        "{} bytes transferred for a {size}-byte layer",
        small.transferred
    );
    let served_small = served();
    assert!(
        served_small <= small.transferred as f64,
        "the agent served {served_small} bytes, the reader received {}",
        small.transferred
    );
    eprintln!(
        "lazy read of /etc/motd: {} bytes in {} requests out of a {size}-byte layer ({:.3}%)",
        small.transferred,
        small.requests,
        small.transferred as f64 * 100.0 / size as f64
    );

    // A large file: several chunks, each its own member, each verified.
    let big = lazy("data/blob1.bin", None, toc_digest).unwrap();
    assert!(big.bytes == contents[1], "blob1.bin read back intact");
    assert_eq!(
        big.requests,
        1 + 2 + 4,
        "HEAD, footer, TOC and 4 chunks of 4 MiB"
    );
    assert!(big.transferred < size / 3);

    // A TOC that does not match the annotation is refused.
    let wrong = lazy("etc/motd", Some(size), Digest::of(b"not the TOC")).unwrap_err();
    assert!(matches!(wrong, LazyError::TocDigest { .. }), "{wrong}");
    let missing = lazy("etc/nothing", Some(size), toc_digest).unwrap_err();
    assert!(matches!(missing, LazyError::NotFound(_)), "{missing}");
}
