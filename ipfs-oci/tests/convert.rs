//! Conversion against real components: the Debian registry as source, a real IPFS daemon as
//! store. Every check recomputes digests and CIDs itself.

use std::process::Command;

use futures::StreamExt;
use ipfs_oci::content_id::{ipfs_url, raw_cid_for_digest};
use ipfs_oci::convert::{CHUNK_SIZE, ConvertError, ConvertOptions, ConvertedImage, convert};
use ipfs_oci::digest::{Digest, verify_bytes};
use ipfs_oci::format::{RootDescriptor, annotation, media_type};
use ipfs_oci::ipfs::{ByteRange, IpfsStore, KuboClient, KuboOptions};
use ipfs_oci::resolve::resolve;
use ipfs_oci::source::{Credentials, Reference, SourceErrorKind, SourceOptions, SourceRegistry};
use serde_json::Value;
use testkit::{
    Answer, HttpProxy, IpfsDaemon, PushFormat, Registry, TestImage, block_on, build_busybox_layout,
    push_layout,
};

/// The raw manifest bytes the registry serves for `image`, read with skopeo (independent of us).
fn registry_manifest(registry: &Registry, repo_tag: &str) -> Vec<u8> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--raw", "--tls-verify=false"]);
    if let Some(c) = registry.creds_arg() {
        cmd.args(["--creds", &c]);
    }
    let out = cmd
        .arg(format!("docker://{}/{repo_tag}", registry.addr))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn source(registry: &Registry) -> SourceRegistry {
    let credentials = registry.credentials.as_ref().map(|(u, p)| Credentials {
        username: u.clone(),
        password: p.clone(),
    });
    SourceRegistry::new(&SourceOptions {
        plain_http: true,
        insecure: false,
        credentials,
        ..Default::default()
    })
}

fn reference(registry: &Registry, repo_tag: &str) -> Reference {
    format!("{}/{repo_tag}", registry.addr).parse().unwrap()
}

/// Everything DESIGN §2 promises about a converted image.
async fn check_converted(ipfs: &KuboClient, image: &ConvertedImage, original: &[u8]) -> Value {
    // root → descriptor JSON whose url is the index
    let root_bytes = ipfs.cat_to_vec(&image.root_cid, 65536).await.unwrap();
    let root: RootDescriptor = serde_json::from_slice(&root_bytes).unwrap();
    assert_eq!(root.media_type, media_type::OCI_INDEX);
    assert_eq!(root.digest, image.index_digest);
    assert_eq!(root.urls, vec![ipfs_url(&image.index_cid)]);

    let dag = resolve(ipfs, &image.root_cid).await.unwrap();
    assert_eq!(
        dag.source_digest,
        Some(Digest::of(original)),
        "the original top digest is recorded"
    );
    assert_eq!(
        dag.get(&Digest::of(original)).unwrap().bytes.as_deref(),
        Some(original),
        "original bytes kept byte for byte"
    );

    // every blob: bytes match digest and size; one-chunk blobs have CIDv1(raw, digest)
    let mut one_chunk = 0;
    for (digest, entry) in dag.entries() {
        let mut stream = ipfs.cat(&entry.cid, ByteRange::default()).await.unwrap();
        let mut bytes = Vec::new();
        while let Some(c) = stream.next().await {
            bytes.extend_from_slice(&c.unwrap());
        }
        verify_bytes(&bytes, *digest, Some(entry.size)).unwrap_or_else(|e| panic!("{digest}: {e}"));
        if entry.size <= CHUNK_SIZE {
            assert_eq!(entry.cid, raw_cid_for_digest(digest), "{digest}");
            one_chunk += 1;
        }
    }
    assert!(one_chunk >= 3, "configs and manifests are one chunk");
    assert!(
        ipfs.is_pinned(&image.layout_cid).await.unwrap(),
        "layout directory pinned"
    );

    // converted documents use OCI media types and carry ipfs:// urls everywhere
    let index: Value = serde_json::from_slice(dag.top().1.bytes.as_ref().unwrap()).unwrap();
    assert_eq!(index["mediaType"], media_type::OCI_INDEX);
    for m in index["manifests"].as_array().unwrap() {
        assert_eq!(m["mediaType"], media_type::OCI_MANIFEST);
        assert!(m["urls"][0].as_str().unwrap().starts_with("ipfs://bafk"));
        assert!(m["annotations"][annotation::ORIGINAL_DIGEST].is_string());
        let d: Digest = m["digest"].as_str().unwrap().parse().unwrap();
        let manifest: Value =
            serde_json::from_slice(dag.get(&d).unwrap().bytes.as_ref().unwrap()).unwrap();
        assert_eq!(manifest["mediaType"], media_type::OCI_MANIFEST);
        for desc in
            std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().unwrap())
        {
            assert!(
                !desc["mediaType"].as_str().unwrap().contains("docker"),
                "{desc}"
            );
            assert!(
                desc["urls"][0].as_str().unwrap().starts_with("ipfs://"),
                "{desc}"
            );
        }
    }
    index
}

struct Setup {
    ipfs_daemon: IpfsDaemon,
    registry: Registry,
    _dir: tempfile::TempDir,
}

fn setup(credentials: Option<(&str, &str)>, pushes: &[(&str, &str, PushFormat)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let layout = build_busybox_layout(dir.path()).unwrap();
    let registry = Registry::start_with(credentials).unwrap();
    for (tag, repo_tag, format) in pushes {
        push_layout(&layout, tag, &registry, repo_tag, *format).unwrap();
    }
    Setup {
        ipfs_daemon: IpfsDaemon::start().unwrap(),
        registry,
        _dir: dir,
    }
}

#[test]
fn converts_oci_docker_multiarch_and_layered_images() {
    let s = setup(
        None,
        &[
            (TestImage::AMD64, "test/busybox:1", PushFormat::Oci),
            (
                TestImage::AMD64,
                "test/busybox-docker:1",
                PushFormat::Docker,
            ),
            (TestImage::MULTI, "test/multi:1", PushFormat::OciIndex),
            (TestImage::LAYERED, "test/layered:1", PushFormat::Oci),
        ],
    );
    let ipfs = KuboClient::new(&s.ipfs_daemon.api_url, KuboOptions::default()).unwrap();
    let src = source(&s.registry);
    block_on(async {
        for (repo_tag, platforms, layers) in [
            ("test/busybox:1", vec!["linux/amd64"], 1),
            ("test/busybox-docker:1", vec!["linux/amd64"], 1),
            ("test/multi:1", vec!["linux/amd64", "linux/arm64"], 1),
            ("test/layered:1", vec!["linux/amd64"], 3),
        ] {
            let original = registry_manifest(&s.registry, repo_tag);
            let image = convert(
                &ipfs,
                &src,
                &reference(&s.registry, repo_tag),
                &ConvertOptions::default(),
            )
            .await
            .unwrap();
            assert_eq!(image.source_digest, Digest::of(&original), "{repo_tag}");
            let got: Vec<String> = image.platforms.iter().map(ToString::to_string).collect();
            assert_eq!(got, platforms, "{repo_tag}");
            let index = check_converted(&ipfs, &image, &original).await;
            assert_eq!(
                index["manifests"].as_array().unwrap().len(),
                platforms.len()
            );

            let dag = resolve(&ipfs, &image.root_cid).await.unwrap();
            let amd64 = index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["platform"]["architecture"] == "amd64")
                .unwrap();
            let manifest_digest: Digest = amd64["digest"].as_str().unwrap().parse().unwrap();
            let manifest: Value =
                serde_json::from_slice(dag.get(&manifest_digest).unwrap().bytes.as_ref().unwrap())
                    .unwrap();
            let sizes: Vec<u64> = manifest["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["size"].as_u64().unwrap())
                .collect();
            assert_eq!(sizes.len(), layers, "{repo_tag}");
            if layers == 3 {
                assert!(
                    sizes.iter().filter(|s| **s > CHUNK_SIZE).count() >= 2,
                    "layers larger than one chunk: {sizes:?}"
                );
            }

            // converting again is idempotent: same CIDs, nothing new pinned
            let again = convert(
                &ipfs,
                &src,
                &reference(&s.registry, repo_tag),
                &ConvertOptions::default(),
            )
            .await
            .unwrap();
            assert_eq!(again, image, "{repo_tag}");
        }
    });
}

#[test]
fn platform_selection_narrows_an_index() {
    let s = setup(
        None,
        &[(TestImage::MULTI, "test/multi:1", PushFormat::OciIndex)],
    );
    let ipfs = KuboClient::new(&s.ipfs_daemon.api_url, KuboOptions::default()).unwrap();
    let src = source(&s.registry);
    let r = reference(&s.registry, "test/multi:1");
    block_on(async {
        let arm = ConvertOptions {
            platforms: vec!["linux/arm64".parse().unwrap()],
            estargz: false,
            ..Default::default()
        };
        let image = convert(&ipfs, &src, &r, &arm).await.unwrap();
        assert_eq!(image.platforms, vec!["linux/arm64".parse().unwrap()]);
        let index = check_converted(
            &ipfs,
            &image,
            &registry_manifest(&s.registry, "test/multi:1"),
        )
        .await;
        assert_eq!(index["manifests"].as_array().unwrap().len(), 1);

        let none = ConvertOptions {
            platforms: vec!["linux/s390x".parse().unwrap()],
            estargz: false,
            ..Default::default()
        };
        let err = convert(&ipfs, &src, &r, &none).await.unwrap_err();
        assert!(
            matches!(err, ConvertError::NoMatchingPlatform { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("linux/amd64"),
            "the message lists what exists: {err}"
        );
    });
}

/// Converting `r` with `source` fails as unauthorized; the message is returned.
async fn refused_as_unauthorized(
    ipfs: &KuboClient,
    source: &SourceRegistry,
    r: &Reference,
) -> String {
    match convert(ipfs, source, r, &ConvertOptions::default()).await {
        Err(ConvertError::Source(e)) => {
            assert_eq!(e.kind, SourceErrorKind::Unauthorized, "{e}");
            e.message
        }
        other => panic!("expected an auth failure, got {other:?}"),
    }
}

/// Converting `r` with `source` gives what DESIGN §2 promises for `repo_tag` of `registry`.
async fn converts_as_the_registry_serves(
    ipfs: &KuboClient,
    source: &SourceRegistry,
    r: &Reference,
    registry: &Registry,
    repo_tag: &str,
) {
    let image = convert(ipfs, source, r, &ConvertOptions::default())
        .await
        .unwrap();
    check_converted(ipfs, &image, &registry_manifest(registry, repo_tag)).await;
}

/// A registry that wants a Bearer token (as Docker Hub, ghcr.io and quay.io do): the real
/// registry behind a proxy that answers 401 with a realm on itself until the request carries the
/// token its `/token` hands out for the repository's pull scope, with the right credentials.
#[test]
fn bearer_token_registry_is_asked_for_a_token_with_the_credentials() {
    let s = setup(
        None,
        &[(TestImage::AMD64, "private/busybox:1", PushFormat::Oci)],
    );
    let own = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let realm_of = own.clone();
    let proxy = HttpProxy::start_with_headers(&s.registry.addr, move |_, path, headers| {
        let authorization = headers
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if path.starts_with("/token?") {
            // alice:s3cret, and the pull scope of the repository asked for.
            let scoped = path.contains("scope=repository%3Aprivate%2Fbusybox%3Apull")
                && path.contains("service=test-registry");
            return Some(if authorization == "Basic YWxpY2U6czNjcmV0" && scoped {
                Answer::text(200, r#"{"token":"t0k-private-busybox"}"#)
            } else {
                Answer::text(401, "")
            });
        }
        (path.starts_with("/v2/") && authorization != "Bearer t0k-private-busybox").then(|| {
            let realm = format!("http://{}/token", realm_of.get().unwrap());
            Answer::oci_error(401, "UNAUTHORIZED", "a token is needed").with_header(
                "www-authenticate",
                &format!(r#"Bearer realm="{realm}",service="test-registry",scope="repository:private/busybox:pull""#),
            )
        })
    })
    .unwrap();
    own.set(proxy.addr.clone()).unwrap();
    let ipfs = KuboClient::new(&s.ipfs_daemon.api_url, KuboOptions::default()).unwrap();
    let r: Reference = format!("{}/private/busybox:1", proxy.addr).parse().unwrap();
    let with = |password: &str| {
        SourceRegistry::new(&SourceOptions {
            plain_http: true,
            credentials: Some(Credentials {
                username: "alice".into(),
                password: password.into(),
            }),
            ..Default::default()
        })
    };
    block_on(async {
        let message = refused_as_unauthorized(&ipfs, &with("wrong"), &r).await;
        assert!(message.contains("token endpoint"), "{message}");
        let right = with("s3cret");
        converts_as_the_registry_serves(&ipfs, &right, &r, &s.registry, "private/busybox:1").await;
    });
    let requests = proxy.requests();
    let tokens = requests
        .iter()
        .filter(|r| r.starts_with("GET /token"))
        .count();
    // One token for the repository, asked once for the refused credentials and once after.
    assert_eq!(tokens, 2, "{requests:#?}");
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/blobs/sha256:") && r.ends_with("-> 200")),
        "blobs came through with the token: {requests:#?}"
    );
}

#[test]
fn basic_auth_registry_needs_and_accepts_credentials() {
    let s = setup(
        Some(("alice", "s3cret")),
        &[(TestImage::AMD64, "private/busybox:1", PushFormat::Oci)],
    );
    let ipfs = KuboClient::new(&s.ipfs_daemon.api_url, KuboOptions::default()).unwrap();
    let r = reference(&s.registry, "private/busybox:1");
    block_on(async {
        let anonymous = SourceRegistry::new(&SourceOptions {
            plain_http: true,
            ..Default::default()
        });
        refused_as_unauthorized(&ipfs, &anonymous, &r).await;
        let wrong = SourceRegistry::new(&SourceOptions {
            plain_http: true,
            credentials: Some(Credentials {
                username: "alice".into(),
                password: "wrong".into(),
            }),
            ..Default::default()
        });
        refused_as_unauthorized(&ipfs, &wrong, &r).await;
        let right = source(&s.registry);
        converts_as_the_registry_serves(&ipfs, &right, &r, &s.registry, "private/busybox:1").await;
    });
}

#[test]
fn missing_image_is_not_found() {
    let s = setup(None, &[]);
    let ipfs = KuboClient::new(&s.ipfs_daemon.api_url, KuboOptions::default()).unwrap();
    block_on(async {
        let err = convert(
            &ipfs,
            &source(&s.registry),
            &reference(&s.registry, "no/such:image"),
            &ConvertOptions::default(),
        )
        .await
        .unwrap_err();
        match err {
            ConvertError::Source(e) => assert_eq!(e.kind, SourceErrorKind::NotFound, "{e}"),
            other => panic!("expected not found, got {other:?}"),
        }
    });
}
