//! How the seed corpus was made (run by hand, never in CI): `cargo run -p ipfs-image-fuzz
//! --example make_seeds`, with `IPFS_BIN` naming a Kubo binary; it needs umoci, skopeo,
//! docker-registry and tar. It builds the busybox
//! test images (umoci), serves them from a real registry (Debian's docker-registry, the CNCF
//! distribution registry docker.io also runs), converts them with this project's converter into
//! a real Kubo, and writes what each parser sees in production into `fuzz/corpus/<target>/`:
//! the bytes the registry served, the converted DAG read back from Kubo, real layers and tars
//! made with `tar`, request paths and headers naming those images. (`cargo fuzz cmin` then
//! minimised the corpus, so file names are libFuzzer's content hashes.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use ipfs_image_api::peer::{PEER_ANNOTATION, PeerInfo, annotation_patch};
use ipfs_oci::content_id::to_base32;
use ipfs_oci::convert::{ConvertOptions, ConvertedImage, convert};
use ipfs_oci::digest::Digest;
use ipfs_oci::ipfs::{IpfsStore, KuboClient, KuboOptions};
use ipfs_oci::resolve::{ImageDag, resolve};
use ipfs_oci::source::{SourceOptions, SourceRegistry};
use serde_json::{Value, json};
use testkit::{IpfsDaemon, PushFormat, Registry, TestImage, block_on, push_layout};

/// Blobs larger than this are not seeds (the corpus stays small).
const MAX_SEED: usize = 64 * 1024;

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

struct Seeds {
    root: PathBuf,
    count: usize,
}

impl Seeds {
    fn put(&mut self, target: &str, name: &str, data: impl AsRef<[u8]>) {
        let data = data.as_ref();
        if data.len() > MAX_SEED {
            return;
        }
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
        self.count += 1;
    }
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A manifest or blob exactly as the registry serves it.
fn fetch(addr: &str, path: &str) -> Vec<u8> {
    testkit::http_client(std::time::Duration::from_secs(30))
        .get(format!("http://{addr}/v2/{path}"))
        .header("accept", ACCEPT)
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.bytes())
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .to_vec()
}

fn main() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut seeds = Seeds {
        root: fuzz.join("corpus"),
        count: 0,
    };
    let dir = tempfile::tempdir().unwrap();
    let layout = testkit::build_busybox_layout(dir.path()).unwrap();
    let registry = Registry::start().unwrap();
    let addr = registry.addr.clone();
    let pushes = [
        (TestImage::AMD64, "test/busybox:1", PushFormat::Oci),
        (TestImage::AMD64, "test/busybox:docker", PushFormat::Docker),
        (TestImage::ARM64, "test/arm:1", PushFormat::Oci),
        (TestImage::MULTI, "test/multi:1", PushFormat::OciIndex),
    ];
    for (tag, to, format) in pushes {
        push_layout(&layout, tag, &registry, to, format).unwrap();
    }
    // The index as a Docker manifest list (skopeo converts the media types).
    run(Command::new("skopeo")
        .args([
            "copy",
            "-q",
            "--all",
            "--format",
            "v2s2",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:{}", layout.display(), TestImage::MULTI))
        .arg(format!("docker://{addr}/test/multi:docker")));

    source_documents(&mut seeds, &addr);

    let mut kubo = IpfsDaemon::start().unwrap();
    let ipfs = KuboClient::new(&kubo.api_url, KuboOptions::default()).unwrap();
    let source = SourceRegistry::new(&SourceOptions {
        plain_http: true,
        ..Default::default()
    });
    let mut converted = Vec::new();
    for (reference, estargz) in [
        ("test/multi:1", false),
        ("test/multi:docker", false),
        ("test/arm:1", true),
        ("test/busybox:1", false),
    ] {
        let source_ref = format!("{addr}/{reference}");
        let options = ConvertOptions {
            estargz,
            ..Default::default()
        };
        let image = block_on(convert(
            &ipfs,
            &source,
            &source_ref.parse().unwrap(),
            &options,
        ))
        .unwrap();
        let root = block_on(ipfs.cat_to_vec(&image.root_cid, 64 * 1024)).unwrap();
        let dag = block_on(resolve(&ipfs, &image.root_cid)).unwrap();
        let name = reference.replace(['/', ':'], "-");
        seeds.put(
            "manifest_json",
            &format!("{name}-root-descriptor.json"),
            &root,
        );
        for (digest, entry) in dag.entries() {
            if let Some(bytes) = &entry.bytes {
                seeds.put(
                    "manifest_json",
                    &format!("{name}-{}.json", &digest.hex()[..12]),
                    bytes,
                );
            }
        }
        seeds.put(
            "resolve_dag",
            &format!("{name}.dag"),
            placeholders(&root, &dag),
        );
        layers(&mut seeds, &ipfs, &dag, &name);
        converted.push((source_ref, image, dag));
    }

    names(&mut seeds, &addr, &converted);
    catalogs(&mut seeds, &converted);
    let id = block_on(ipfs.id()).unwrap();
    peers(
        &mut seeds,
        &id.peer_id,
        &id.addresses,
        &kubo.swarm_multiaddr(),
    );
    tars(&mut seeds, dir.path());
    auth(&mut seeds, dir.path());
    kubo.stop();
    println!("{} seeds in {}", seeds.count, seeds.root.display());
}

/// What the registry serves for every tag: indexes, lists, manifests, configs.
fn source_documents(seeds: &mut Seeds, addr: &str) {
    for (repo, tag) in [
        ("test/busybox", "1"),
        ("test/busybox", "docker"),
        ("test/arm", "1"),
        ("test/multi", "1"),
        ("test/multi", "docker"),
    ] {
        let top = fetch(addr, &format!("{repo}/manifests/{tag}"));
        let name = format!("{}-{tag}", repo.replace('/', "-"));
        seeds.put("manifest_json", &format!("source-{name}.json"), &top);
        let doc: Value = serde_json::from_slice(&top).unwrap();
        let mut manifests = vec![doc.clone()];
        for child in doc["manifests"].as_array().into_iter().flatten() {
            let d = child["digest"].as_str().unwrap();
            let bytes = fetch(addr, &format!("{repo}/manifests/{d}"));
            seeds.put(
                "manifest_json",
                &format!("source-{name}-{}.json", &d[7..19]),
                &bytes,
            );
            manifests.push(serde_json::from_slice(&bytes).unwrap());
        }
        for m in manifests {
            if let Some(d) = m["config"]["digest"].as_str() {
                let bytes = fetch(addr, &format!("{repo}/blobs/{d}"));
                seeds.put(
                    "manifest_json",
                    &format!("config-{}.json", &d[7..19]),
                    &bytes,
                );
            }
            // The source layers (gzip tars) the eStargz writer reads.
            for layer in m["layers"].as_array().into_iter().flatten() {
                let size = layer["size"].as_u64().unwrap_or(u64::MAX);
                if size as usize <= MAX_SEED {
                    let d = layer["digest"].as_str().unwrap();
                    let bytes = fetch(addr, &format!("{repo}/blobs/{d}"));
                    seeds.put(
                        "estargz_tar",
                        &format!("layer-{}.tar.gz", &d[7..19]),
                        &bytes,
                    );
                }
            }
        }
    }
}

/// The converted DAG with every digest, CID and size of a document in it replaced by the
/// placeholders `resolve_dag` fills in (see `src/resolve.rs`): root first, then the converted
/// index and manifests, then the originals, so each names only later ones.
fn placeholders(root: &[u8], dag: &ImageDag) -> Vec<u8> {
    let mut docs: Vec<(Digest, Vec<u8>)> = vec![(Digest::of(root), root.to_vec())];
    let mut order: Vec<(&Digest, &ipfs_oci::resolve::DagEntry)> =
        dag.entries().filter(|(_, e)| e.bytes.is_some()).collect();
    // Converted documents (named from the root down) before the originals.
    let rank = |d: &Digest| {
        if *d == dag.root.digest {
            0
        } else if dag.source_digest == Some(*d) {
            3
        } else if is_converted(dag, d) {
            1
        } else {
            2
        }
    };
    order.sort_by_key(|(d, _)| (rank(d), **d));
    for (d, e) in order {
        docs.push((*d, e.bytes.as_ref().unwrap().to_vec()));
    }
    let mut text: Vec<String> = docs
        .iter()
        .map(|(_, b)| String::from_utf8(b.clone()).unwrap())
        .collect();
    for (n, (digest, bytes)) in docs.iter().enumerate().skip(1) {
        let cid = to_base32(&ipfs_oci::content_id::raw_cid_for_digest(digest));
        for t in text.iter_mut().take(n) {
            *t = t
                .replace(&digest.to_string(), &format!("{{{{digest:{n}}}}}"))
                .replace(&cid, &format!("{{{{cid:{n}}}}}"))
                .replace(
                    &format!("\"size\":{}", bytes.len()),
                    &format!("\"size\":{{{{size:{n}}}}}"),
                );
        }
    }
    text.join("\0").into_bytes()
}

/// A converted document: one a converted index names with an `ipfs://` url.
fn is_converted(dag: &ImageDag, digest: &Digest) -> bool {
    dag.entries().any(|(_, e)| {
        e.bytes.as_ref().is_some_and(|b| {
            let v: Value = serde_json::from_slice(b).unwrap_or(Value::Null);
            v["manifests"].as_array().into_iter().flatten().any(|m| {
                m["digest"].as_str() == Some(&digest.to_string()) && m.get("urls").is_some()
            })
        })
    })
}

/// The converted layers small enough to be seeds (the eStargz ones among them).
fn layers(seeds: &mut Seeds, ipfs: &KuboClient, dag: &ImageDag, name: &str) {
    for (digest, entry) in dag.entries() {
        if entry.bytes.is_none()
            && entry.media_type.contains("layer")
            && entry.size as usize <= MAX_SEED
        {
            let bytes = block_on(ipfs.cat_to_vec(&entry.cid, MAX_SEED as u64)).unwrap();
            seeds.put(
                "estargz_tar",
                &format!("{name}-layer-{}.tar.gz", &digest.hex()[..12]),
                bytes,
            );
        }
    }
}

/// Request paths, Range headers, digests and CIDs naming the converted images.
fn names(seeds: &mut Seeds, addr: &str, converted: &[(String, ConvertedImage, ImageDag)]) {
    let (host, port) = addr.split_once(':').unwrap();
    let mut paths = Vec::new();
    let mut ranges = Vec::new();
    let mut ids = Vec::new();
    for (source_ref, image, dag) in converted {
        let cid = to_base32(&image.root_cid);
        let repo = source_ref
            .strip_prefix(&format!("{addr}/"))
            .unwrap()
            .split(':')
            .next()
            .unwrap();
        paths.push(format!("/v2/ipfs/{cid}/manifests/latest"));
        paths.push(format!("/v2/ipfs/{cid}/tags/list"));
        paths.push(format!("/v2/{repo}/manifests/1?ns={host}%3A{port}"));
        paths.push(format!("/v2/{host}_{port}/{repo}/tags/list"));
        ids.push(cid.clone());
        ids.push(to_base32(&image.layout_cid));
        ids.push(image.source_digest.to_string());
        ids.push(image.index_cid.to_string());
        for (digest, entry) in dag.entries() {
            let kind = if entry.bytes.is_some() {
                "manifests"
            } else {
                "blobs"
            };
            paths.push(format!("/v2/ipfs/{cid}/{kind}/{digest}"));
            paths.push(format!("/v2/{repo}/{kind}/{digest}?ns={host}%3A{port}"));
            paths.push(format!("/v2/{host}_{port}/{repo}/{kind}/{digest}"));
            ids.push(digest.to_string());
            ids.push(to_base32(&entry.cid));
            if entry.bytes.is_none() {
                let size = entry.size;
                ranges.push(format!("{size}\nbytes=0-{}", size.clamp(1, 4096) - 1));
                ranges.push(format!("{size}\nbytes=-51"));
                ranges.push(format!("{size}\nbytes={}-", size / 2));
            }
        }
        // CIDv0 spelling (what older tools print) of the root's hash.
        ids.push(
            cid::Cid::new_v0(*image.root_cid.hash())
                .map_or_else(|_| cid.clone(), |c| c.to_string()),
        );
        ids.push(format!("ipfs://{cid}"));
    }
    paths.push("/v2/library/busybox/manifests/1.36?ns=docker.io".into());
    paths.push("/v2/docker.io/library/nginx/manifests/1.25".into());
    ranges.push("1048576\nbytes=0-0,5-6".into());
    ranges.push("1048576\nbytes=1048575-".into());
    paths.sort();
    paths.dedup();
    ids.sort();
    ids.dedup();
    for (i, p) in paths.iter().enumerate() {
        seeds.put("registry_route", &format!("path-{i:03}"), p);
    }
    for (i, r) in ranges.iter().enumerate() {
        seeds.put("range_header", &format!("range-{i:03}"), r);
    }
    for (i, d) in ids.iter().enumerate() {
        seeds.put("digest_cid", &format!("id-{i:03}"), d);
    }
    let mut references: Vec<String> = converted.iter().map(|(r, ..)| r.clone()).collect();
    let first = &converted[0].2;
    references.push(format!(
        "{addr}/test/multi:1@{}",
        first.source_digest.unwrap()
    ));
    for r in [
        "docker.io/library/busybox:1.36",
        "busybox",
        "nginx:1.25",
        "ghcr.io/owner/app:v1.2.3",
        "registry.example:5000/team/app",
        "linux/arm64/v8",
        "10m",
    ] {
        references.push(r.into());
    }
    for (i, r) in references.iter().enumerate() {
        seeds.put("image_reference", &format!("ref-{i:03}"), r);
    }
}

/// A `--images` file and the IpfsImage objects the cluster catalog reads, for the images.
fn catalogs(seeds: &mut Seeds, converted: &[(String, ConvertedImage, ImageDag)]) {
    let mut file = String::new();
    let mut objects = Vec::new();
    for (i, (source, image, _)) in converted.iter().enumerate() {
        let cid = to_base32(&image.root_cid);
        file.push_str(&format!("- source: {source}\n  cid: {cid}\n"));
        objects.push(json!({
            "apiVersion": "ipfsimage.dev/v1alpha1",
            "kind": "IpfsImage",
            "metadata": {"name": format!("image-{i}"), "namespace": "ipfs-image", "generation": 1},
            "spec": {"source": source, "mirror": true},
            "status": {
                "phase": "Ready",
                "cid": cid,
                "image": format!("localhost:5050/ipfs/{cid}"),
                "layoutCid": to_base32(&image.layout_cid),
                "sourceDigest": image.source_digest.to_string(),
                "lastCheckTime": "2026-01-01T00:00:00Z",
                "size": image.total_size,
                "observedGeneration": 1,
            },
        }));
    }
    seeds.put("catalog_file", "images.yaml", &file);
    seeds.put(
        "catalog_file",
        "ipfsimages.json",
        serde_json::to_vec_pretty(&objects).unwrap(),
    );
    // The README's example, with a digest-pinned source.
    let (_, image, _) = &converted[0];
    seeds.put(
        "catalog_file",
        "readme.yaml",
        format!(
            "- source: docker.io/library/busybox:1.36\n  cid: {}\n- source: docker.io/library/busybox:1.36@{}\n  cid: {}\n",
            to_base32(&image.root_cid),
            image.source_digest,
            to_base32(&image.root_cid)
        ),
    );
}

/// This Kubo's peer as the agents publish it, and as a `--peer` flag.
fn peers(seeds: &mut Seeds, id: &str, addresses: &[String], swarm: &str) {
    let me = PeerInfo {
        id: id.to_owned(),
        addrs: addresses.to_vec(),
    };
    let patch = annotation_patch(&me);
    let value = patch["metadata"]["annotations"][PEER_ANNOTATION]
        .as_str()
        .unwrap();
    seeds.put("peer_annotation", "kubo-id.json", value);
    seeds.put("peer_annotation", "flag", swarm);
    let bare = PeerInfo {
        id: id.to_owned(),
        addrs: vec![
            "/ip4/10.244.0.7/tcp/4001".into(),
            "/ip4/10.244.0.7/udp/4001/quic-v1".into(),
        ],
    };
    seeds.put(
        "peer_annotation",
        "pod.json",
        serde_json::to_string(&bare).unwrap(),
    );
}

/// Small trees archived by GNU tar in each format the writer must read: PAX (long names,
/// xattrs, sub-second mtimes, a global header), GNU (long names and links), ustar, and
/// gzip-compressed.
fn tars(seeds: &mut Seeds, dir: &Path) {
    let tree = dir.join("tree");
    let long = tree.join("a".repeat(60)).join("b".repeat(60));
    std::fs::create_dir_all(&long).unwrap();
    std::fs::write(long.join(format!("{}.txt", "c".repeat(40))), "long name\n").unwrap();
    std::fs::write(tree.join("hello.txt"), "hello world\n").unwrap();
    std::fs::write(tree.join("empty"), "").unwrap();
    std::fs::write(tree.join("noise.bin"), testkit::noise(3000, 7)).unwrap();
    std::os::unix::fs::symlink(long.join("x".repeat(120)), tree.join("far-link")).unwrap();
    std::fs::hard_link(tree.join("hello.txt"), tree.join("hard.txt")).unwrap();
    for (name, args) in [
        ("pax.tar", vec!["--format=pax"]),
        // an xattr record on every member, as `--xattrs` writes them
        (
            "pax-xattr.tar",
            vec!["--format=pax", "--pax-option=SCHILY.xattr.user.note:=seed"],
        ),
        // a global header (the writer refuses those)
        (
            "pax-global.tar",
            vec!["--format=pax", "--pax-option=comment=seed"],
        ),
        ("gnu.tar", vec!["--format=gnu"]),
        ("ustar-short.tar", vec!["--format=ustar"]),
        ("pax.tar.gz", vec!["--format=pax", "-z"]),
    ] {
        let out = dir.join(name);
        let mut cmd = Command::new("tar");
        cmd.args(&args)
            .arg("--sort=name")
            .arg("-cf")
            .arg(&out)
            .arg("-C")
            .arg(&tree);
        if name.starts_with("ustar") {
            // ustar cannot hold the long names
            cmd.args(["hello.txt", "empty", "noise.bin", "hard.txt"]);
        } else {
            cmd.arg(".");
        }
        run(&mut cmd);
        seeds.put("estargz_tar", name, std::fs::read(&out).unwrap());
    }
}

/// A Docker config JSON as `skopeo login` writes it, and the challenges registries send.
fn auth(seeds: &mut Seeds, dir: &Path) {
    let registry = Registry::start_with(Some(("fuzz", "seed-password"))).unwrap();
    let authfile = dir.join("auth.json");
    run(Command::new("skopeo")
        .args([
            "login",
            "--tls-verify=false",
            "-u",
            "fuzz",
            "-p",
            "seed-password",
        ])
        .arg("--authfile")
        .arg(&authfile)
        .arg(&registry.addr));
    seeds.put(
        "docker_config",
        "skopeo-auth.json",
        std::fs::read(&authfile).unwrap(),
    );
    let challenge = testkit::http_client(std::time::Duration::from_secs(10))
        .get(format!("http://{}/v2/", registry.addr))
        .send()
        .unwrap()
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap();
    seeds.put("docker_config", "basic-challenge", challenge);
    let user_pass = base64::engine::general_purpose::STANDARD.encode("user:pass");
    let mut auths = BTreeMap::new();
    auths.insert("https://index.docker.io/v1/", json!({"auth": user_pass}));
    auths.insert("ghcr.io", json!({"username": "u", "password": "p"}));
    seeds.put(
        "docker_config",
        "dockerconfigjson.json",
        serde_json::to_vec(&json!({"auths": auths})).unwrap(),
    );
    seeds.put(
        "docker_config",
        "bearer-challenge",
        r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
    );
}
