//! The registry's HTTP behaviour, checked with a plain HTTP client against a real IPFS daemon:
//! headers containerd relies on, Range, read-only methods, malformed input (always a clean 4xx),
//! and a corrupting IPFS that must never produce a complete wrong blob.

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures::StreamExt;
use ipfs_oci::content_id::to_base32;
use ipfs_oci::convert::{ConvertOptions, convert};
use ipfs_oci::digest::Digest;
use ipfs_oci::ipfs::{KuboClient, KuboOptions};
use ipfs_oci::resolve::resolve;
use ipfs_oci::source::{SourceOptions, SourceRegistry};
use reqwest::StatusCode;
use testkit::{
    Agent, IpfsDaemon, PushFormat, Registry, TestImage, block_on, build_busybox_layout, push_layout,
};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipfs-image-agent"))
}

/// The busybox image converted into a fresh IPFS daemon: (daemon, root CID, layer digest, size).
fn converted_image() -> (IpfsDaemon, String, Digest, u64) {
    let dir = tempfile::tempdir().unwrap();
    let layout = build_busybox_layout(dir.path()).unwrap();
    let registry = Registry::start().unwrap();
    push_layout(
        &layout,
        TestImage::AMD64,
        &registry,
        "test/busybox:1",
        PushFormat::Oci,
    )
    .unwrap();
    let ipfs = IpfsDaemon::start().unwrap();
    let client = KuboClient::new(&ipfs.api_url, KuboOptions::default()).unwrap();
    let source = SourceRegistry::new(&SourceOptions {
        plain_http: true,
        ..Default::default()
    });
    let reference = format!("{}/test/busybox:1", registry.addr).parse().unwrap();
    let (root, layer, size) = block_on(async {
        let image = convert(&client, &source, &reference, &ConvertOptions::default())
            .await
            .unwrap();
        let dag = resolve(&client, &image.root_cid).await.unwrap();
        let (digest, entry) = dag
            .entries()
            .max_by_key(|(_, e)| e.size)
            .map(|(d, e)| (*d, e.size))
            .unwrap();
        (image.root_cid, digest, entry)
    });
    (ipfs, to_base32(&root), layer, size)
}

fn http() -> reqwest::Client {
    ipfs_oci::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[test]
fn serves_containerd_headers_ranges_and_clean_errors() {
    let (ipfs, cid, layer, size) = converted_image();
    let agent = Agent::start(&agent_bin(), &ipfs.api_url, None, &[]).unwrap();
    let base = format!("http://{}/v2", agent.addr);
    block_on(async {
        let c = http();
        let r = c.get(format!("{base}/")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()["docker-distribution-api-version"],
            "registry/2.0"
        );

        // HEAD by tag: real Content-Length, media type and digest
        let r = c
            .head(format!("{base}/ipfs/{cid}/manifests/latest"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let len: u64 = r.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(len > 100, "HEAD must carry the real length, got {len}");
        assert_eq!(
            r.headers()["content-type"],
            "application/vnd.oci.image.index.v1+json"
        );
        let index_digest = r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = c
            .get(format!("{base}/ipfs/{cid}/manifests/{index_digest}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(Digest::of(&body).to_string(), index_digest);
        assert_eq!(body.len() as u64, len);

        // blob: HEAD, GET whole (verified), ranges
        let blob = format!("{base}/ipfs/{cid}/blobs/{layer}");
        let r = c.head(&blob).send().await.unwrap();
        assert_eq!(
            r.headers()["content-length"].to_str().unwrap(),
            size.to_string()
        );
        assert_eq!(r.headers()["accept-ranges"], "bytes");
        let whole = c.get(&blob).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(Digest::of(&whole), layer);
        let r = c
            .get(&blob)
            .header("Range", "bytes=1000-1999")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            r.headers()["content-range"].to_str().unwrap(),
            format!("bytes 1000-1999/{size}")
        );
        assert_eq!(r.bytes().await.unwrap(), whole.slice(1000..2000));
        let r = c
            .get(&blob)
            .header("Range", "bytes=-10")
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap(), whole.slice(whole.len() - 10..));
        let r = c
            .get(&blob)
            .header("Range", format!("bytes={size}-"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(
            r.headers()["content-range"].to_str().unwrap(),
            format!("bytes */{size}")
        );

        // read-only
        for method in [
            reqwest::Method::PUT,
            reqwest::Method::POST,
            reqwest::Method::DELETE,
            reqwest::Method::PATCH,
        ] {
            let r = c
                .request(method.clone(), &blob)
                .body("x".repeat(10_000))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["errors"][0]["code"], "UNSUPPORTED");
        }

        // malformed input: always a 4xx with an OCI error body, never a 5xx
        let zero = "0".repeat(64);
        let cases = [
            (
                format!("{base}/ipfs/not-a-cid/manifests/latest"),
                "NAME_INVALID",
            ),
            (
                format!("{base}/ipfs/{cid}/blobs/sha256:{}", "A".repeat(64)),
                "DIGEST_INVALID",
            ),
            (
                format!("{base}/ipfs/{cid}/blobs/sha512:{zero}"),
                "DIGEST_INVALID",
            ),
            (
                format!("{base}/ipfs/{cid}/blobs/sha256:abc"),
                "DIGEST_INVALID",
            ),
            (
                format!("{base}/ipfs/{cid}/blobs/sha256:{zero}"),
                "BLOB_UNKNOWN",
            ),
            (
                format!("{base}/ipfs/{cid}/manifests/sha256:{zero}"),
                "MANIFEST_UNKNOWN",
            ),
            (
                format!("{base}/..%2F..%2Fetc/passwd/manifests/latest"),
                "NAME_INVALID",
            ),
            (format!("{base}/ipfs/{cid}/tags"), "NAME_UNKNOWN"),
            (
                format!("{base}/library/nginx/manifests/latest"),
                "NAME_UNKNOWN",
            ),
            (
                format!("{base}/library/nginx/manifests/latest?ns=docker.io"),
                "MANIFEST_UNKNOWN",
            ),
            (format!("http://{}/v3/whatever", agent.addr), "NAME_UNKNOWN"),
        ];
        for (url, code) in cases {
            let r = c.get(&url).send().await.unwrap();
            assert!(r.status().is_client_error(), "{url}: {}", r.status());
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["errors"][0]["code"], code, "{url}");
        }
        for range in [
            "bytes=99999999999999999999999-",
            "bytes=5-1",
            "bytes=x-y",
            "bytes=0-1,3-4",
            "bytes=-0",
        ] {
            let r = c.get(&blob).header("Range", range).send().await.unwrap();
            assert!(
                r.status().is_success() || r.status() == StatusCode::RANGE_NOT_SATISFIABLE,
                "{range}: {}",
                r.status()
            );
        }
        let r = c
            .get(&blob)
            .header("X-Huge", "a".repeat(200_000))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        // and the server is still fine
        assert_eq!(c.head(&blob).send().await.unwrap().status(), StatusCode::OK);
    });
}

/// A proxy in front of the IPFS API that flips one byte of every `cat` stream past 200 KB.
async fn corrupting_proxy(State(upstream): State<String>, request: Request) -> Response {
    let url = format!("{upstream}{}", request.uri());
    let is_cat = request.uri().path().ends_with("/cat");
    let answer = reqwest::Client::new().post(url).send().await.unwrap();
    let status = answer.status();
    let mut seen = 0usize;
    let stream = answer.bytes_stream().map(move |chunk| {
        let mut chunk = chunk.map(|b| b.to_vec()).map_err(std::io::Error::other)?;
        if is_cat && seen <= 200_000 && seen + chunk.len() > 200_000 {
            chunk[200_000 - seen] ^= 0xff;
        }
        seen += chunk.len();
        Ok::<_, std::io::Error>(chunk)
    });
    Response::builder()
        .status(status.as_u16())
        .body(Body::from_stream(stream))
        .unwrap()
}

#[test]
fn a_corrupted_blob_is_never_delivered_complete() {
    let (ipfs, cid, layer, size) = converted_image();
    assert!(
        size > 300_000,
        "the layer must be larger than the corruption offset"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(corrupting_proxy)
        .with_state(ipfs.api_url.clone());
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });

    let agent = Agent::start(&agent_bin(), &proxy, None, &[]).unwrap();
    let url = format!("http://{}/v2/ipfs/{cid}/blobs/{layer}", agent.addr);
    let received = runtime.block_on(async {
        let r = http().get(&url).send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "headers go out before the corruption is seen"
        );
        let mut stream = r.bytes_stream();
        let mut got = Vec::new();
        let mut failed = false;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => got.extend_from_slice(&b),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "the transfer must fail");
        got
    });
    assert!(
        (received.len() as u64) < size,
        "received {} of {size} bytes: a complete wrong blob",
        received.len()
    );
    assert!(agent.metric_sum("ipfs_image_agent_verification_failures_total", &[]) >= 1.0);
}
