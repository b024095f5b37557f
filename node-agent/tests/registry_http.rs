//! The registry's HTTP behaviour, checked with a plain HTTP client against a real IPFS daemon:
//! headers containerd relies on, Range, read-only methods, malformed input (always a clean 4xx),
//! a corrupting IPFS that must never produce a complete wrong blob, a broken IPFS stream resumed
//! from where it stopped, and concurrent GETs of one blob sharing one IPFS stream (with a
//! counting proxy in front of IPFS).

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
    Agent, IpfsDaemon, PushFormat, Registry, TestImage, block_on, build_busybox_layout, noise,
    push_layout,
};

/// For agents behind a proxy of the RPC API that counts or breaks `cat`s: the agent would
/// otherwise find Kubo's gateway through the proxy and read blobs there, around it.
const RPC_CAT: &[&str] = &["--ipfs-gateway", "rpc"];

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipfs-image-agent"))
}

/// The busybox image converted into a fresh IPFS daemon: (daemon, root CID, layer digest, size).
fn converted_image() -> (IpfsDaemon, String, Digest, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = testkit::registry_with_busybox(dir.path()).unwrap();
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

/// A proxy in front of the IPFS API that flips the byte at a given offset of every `cat` stream.
async fn corrupting_proxy(
    State((upstream, offset)): State<(String, usize)>,
    request: Request,
) -> Response {
    let url = format!("{upstream}{}", request.uri());
    let is_cat = request.uri().path().ends_with("/cat");
    let answer = reqwest::Client::new().post(url).send().await.unwrap();
    let status = answer.status();
    let mut seen = 0usize;
    let stream = answer.bytes_stream().map(move |chunk| {
        let mut chunk = chunk.map(|b| b.to_vec()).map_err(std::io::Error::other)?;
        if is_cat && seen <= offset && seen + chunk.len() > offset {
            chunk[offset - seen] ^= 0xff;
        }
        seen += chunk.len();
        Ok::<_, std::io::Error>(chunk)
    });
    Response::builder()
        .status(status.as_u16())
        .body(Body::from_stream(stream))
        .unwrap()
}

/// Serve blob `layer` of image `cid` through an agent whose IPFS API flips the byte at `offset`,
/// and check that the client never gets all `size` bytes.
fn assert_corruption_never_delivered(
    ipfs: &IpfsDaemon,
    cid: &str,
    layer: &Digest,
    size: u64,
    offset: usize,
) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = axum::Router::new()
        .fallback(corrupting_proxy)
        .with_state((ipfs.api_url.clone(), offset));
    let proxy = serve_on_loopback(&runtime, app);

    // The faults are injected on RPC `cat`: keep the agent on it (not Kubo's gateway).
    let agent = Agent::start(&agent_bin(), &proxy, None, RPC_CAT).unwrap();
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
        assert!(
            failed,
            "the transfer must fail (byte {offset} of {size} flipped)"
        );
        got
    });
    assert!(
        (received.len() as u64) < size,
        "received {} of {size} bytes: a complete wrong blob (byte {offset} flipped)",
        received.len()
    );
    assert!(agent.metric_sum("ipfs_image_agent_verification_failures_total", &[]) >= 1.0);
}

#[test]
fn a_corrupted_blob_is_never_delivered_complete() {
    let (ipfs, cid, layer, size) = converted_image();
    assert!(
        size > 300_000,
        "the layer must be larger than the corruption offset"
    );
    assert_corruption_never_delivered(&ipfs, &cid, &layer, size, 200_000);
}

/// A large blob is hashed on its own thread while it is forwarded: a flip in its very last bytes
/// (where the hashing lags the forwarding most) must still stop it short of complete.
#[test]
fn a_large_blob_corrupted_at_its_end_is_never_delivered_complete() {
    let (ipfs, cid, layer, _, size) = converted_big_image(24 * 1024 * 1024);
    assert_corruption_never_delivered(&ipfs, &cid, &layer, size, size as usize - 10);
}

/// The daemon's answer breaks part-way through a blob: the agent reopens `cat` from the byte it
/// had reached, and the client gets the whole blob, verified, in one response.
#[test]
fn a_broken_ipfs_stream_resumes_from_where_it_stopped() {
    let (ipfs, cid, layer, layer_cid, size) = converted_big_image(8 * 1024 * 1024);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cut = 3_000_000;
    let (proxy_url, proxy) = start_cat_proxy(&runtime, &ipfs.api_url, &layer_cid, Some(cut));
    proxy.gate.send_replace(true);

    let agent = Agent::start(&agent_bin(), &proxy_url, None, RPC_CAT).unwrap();
    let url = format!("http://{}/v2/ipfs/{cid}/blobs/{layer}", agent.addr);
    let body = runtime.block_on(async {
        let r = http().get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.bytes().await.expect("the whole body, no error")
    });
    assert_eq!(body.len() as u64, size);
    assert_eq!(Digest::of(&body), layer);

    let cats = proxy.cats.lock().unwrap().clone();
    assert_eq!(cats.len(), 2, "one cat, then one resume: {cats:?}");
    assert!(!cats[0].contains("offset="), "{cats:?}");
    let offset = cat_offset(&cats[1]).expect("the resume starts at an offset");
    assert!(
        offset > 0 && offset <= cut as u64,
        "resumed at {offset}, the first stream stopped after at most {cut} bytes"
    );
    assert_eq!(
        agent.metric_sum(
            "ipfs_image_agent_ipfs_cat_streams_total",
            &[("reason", "resumed")]
        ),
        1.0
    );
    assert_eq!(
        agent.metric_sum("ipfs_image_agent_verification_failures_total", &[]),
        0.0
    );
}

/// An image whose layer is `len` bytes of noise (plus busybox's layer), converted into a fresh
/// IPFS daemon: (daemon, root CID, the big layer's digest, its CID, its size).
fn converted_big_image(len: usize) -> (IpfsDaemon, String, Digest, String, u64) {
    let dir = tempfile::tempdir().unwrap();
    let layout = build_busybox_layout(dir.path()).unwrap();
    let image = |tag: &str| format!("{}:{tag}", layout.display());
    let bundle = dir.path().join("bundle-big");
    let umoci = |args: &[&str], path: &std::path::Path| {
        let out = std::process::Command::new("umoci")
            .args(args)
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    umoci(&["unpack", "--image", &image(TestImage::AMD64)], &bundle);
    std::fs::write(
        bundle.join("rootfs/big.bin"),
        noise(len, 0xfa11_0000 ^ u64::from(std::process::id())),
    )
    .unwrap();
    umoci(&["repack", "--image", &image("big")], &bundle);
    let registry = Registry::start().unwrap();
    push_layout(&layout, "big", &registry, "test/big:1", PushFormat::Oci).unwrap();
    let ipfs = IpfsDaemon::start().unwrap();
    let client = KuboClient::new(&ipfs.api_url, KuboOptions::default()).unwrap();
    let source = SourceRegistry::new(&SourceOptions {
        plain_http: true,
        ..Default::default()
    });
    let reference = format!("{}/test/big:1", registry.addr).parse().unwrap();
    let (root, layer, cid, size) = block_on(async {
        let image = convert(&client, &source, &reference, &ConvertOptions::default())
            .await
            .unwrap();
        let dag = resolve(&client, &image.root_cid).await.unwrap();
        let (digest, entry) = dag.entries().max_by_key(|(_, e)| e.size).unwrap();
        (image.root_cid, *digest, entry.cid, entry.size)
    });
    assert!(size > len as u64, "the noise layer is the largest blob");
    (ipfs, to_base32(&root), layer, to_base32(&cid), size)
}

/// A proxy in front of the IPFS API that records every `cat` of one CID and holds them until
/// the test opens its gate (so a test can line requests up deterministically).
struct CatProxy {
    upstream: String,
    cid: String,
    /// The query strings of the `cat`s of `cid`.
    cats: std::sync::Mutex<Vec<String>>,
    gate: tokio::sync::watch::Sender<bool>,
    /// Break the first `cat` of `cid` after this many bytes.
    cut: Option<usize>,
}

async fn counting_proxy(
    State(proxy): State<std::sync::Arc<CatProxy>>,
    request: Request,
) -> Response {
    let url = format!("{}{}", proxy.upstream, request.uri());
    let query = request.uri().query().unwrap_or_default().to_owned();
    let args: Vec<(String, String)> = serde_urlencoded::from_str(&query).unwrap();
    let is_our_cat = request.uri().path().ends_with("/cat")
        && args.iter().any(|(k, v)| k == "arg" && *v == proxy.cid);
    let mut left = usize::MAX;
    if is_our_cat {
        let first = {
            let mut cats = proxy.cats.lock().unwrap();
            cats.push(query);
            cats.len() == 1
        };
        if first && let Some(cut) = proxy.cut {
            left = cut;
        }
        let mut gate = proxy.gate.subscribe();
        gate.wait_for(|open| *open).await.unwrap();
    }
    let answer = reqwest::Client::new().post(url).send().await.unwrap();
    let status = answer.status();
    let stream = answer.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        if left == 0 {
            return Err(std::io::Error::other("cut"));
        }
        let keep = chunk.slice(..chunk.len().min(left));
        left -= keep.len();
        Ok(keep)
    });
    Response::builder()
        .status(status.as_u16())
        .body(Body::from_stream(stream))
        .unwrap()
}

/// A counting proxy for the `cat`s of `cid`, closed until its gate opens; with `cut`, the first
/// of them breaks after that many bytes.
fn start_cat_proxy(
    runtime: &tokio::runtime::Runtime,
    upstream: &str,
    cid: &str,
    cut: Option<usize>,
) -> (String, std::sync::Arc<CatProxy>) {
    let proxy = std::sync::Arc::new(CatProxy {
        upstream: upstream.to_owned(),
        cid: cid.to_owned(),
        cats: std::sync::Mutex::new(Vec::new()),
        gate: tokio::sync::watch::channel(false).0,
        cut,
    });
    let app = axum::Router::new()
        .fallback(counting_proxy)
        .with_state(proxy.clone());
    (serve_on_loopback(runtime, app), proxy)
}

/// Serve `app` on a free loopback port; its `http://` address.
fn serve_on_loopback(runtime: &tokio::runtime::Runtime, app: axum::Router) -> String {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The `offset` argument of a recorded `cat` query, if any.
fn cat_offset(query: &str) -> Option<u64> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "offset")
        .map(|(_, v)| v.parse().unwrap())
}

/// Wait (polling the agent's metrics) until `count` GETs have joined a shared blob stream.
fn wait_for_joins(agent: &Agent, count: f64) {
    testkit::wait_until(
        "GETs joining the shared stream",
        Duration::from_secs(60),
        || Ok(agent.metric_sum("ipfs_image_agent_blob_streams_shared_total", &[]) >= count),
    )
    .unwrap();
    assert_eq!(
        agent.metric_sum("ipfs_image_agent_blob_streams_shared_total", &[]),
        count
    );
}

fn slow_http() -> reqwest::Client {
    ipfs_oci::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

#[test]
fn concurrent_gets_of_a_blob_share_one_ipfs_cat() {
    const CLIENTS: usize = 8;
    let (ipfs, cid, layer, layer_cid, size) = converted_big_image(20 * 1024 * 1024);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (proxy_url, proxy) = start_cat_proxy(&runtime, &ipfs.api_url, &layer_cid, None);
    // A window larger than the blob: no client can be detached, so exactly one `cat` is the only
    // correct count (detaching is the next test's subject).
    let agent = Agent::start(
        &agent_bin(),
        &proxy_url,
        None,
        &["--blob-share-window", "64MiB", "--ipfs-gateway", "rpc"],
    )
    .unwrap();
    let url = format!("http://{}/v2/ipfs/{cid}/blobs/{layer}", agent.addr);
    let c = slow_http();
    // Resolve first (HEAD): the GETs below then all reach the blob stream at about the same time.
    let head = runtime
        .block_on(async { c.head(&url).send().await })
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);

    let gets: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            runtime.spawn(async move {
                let r = c.get(&url).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                r.bytes().await.unwrap()
            })
        })
        .collect();
    // The first GET's `cat` is held at the proxy until the seven others have joined its stream.
    wait_for_joins(&agent, (CLIENTS - 1) as f64);
    proxy.gate.send_replace(true);
    for get in gets {
        let body = runtime.block_on(get).unwrap();
        assert_eq!(body.len() as u64, size);
        assert_eq!(
            Digest::of(&body),
            layer,
            "every client gets the right bytes"
        );
    }

    let cats = proxy.cats.lock().unwrap().clone();
    assert_eq!(cats.len(), 1, "IPFS saw one cat of the blob: {cats:?}");
    assert!(!cats[0].contains("offset"), "{cats:?}");
    assert_eq!(
        agent.metric_sum(
            "ipfs_image_agent_ipfs_cat_streams_total",
            &[("reason", "blob")]
        ),
        1.0
    );
    assert_eq!(
        agent.metric_sum("ipfs_image_agent_ipfs_cat_streams_total", &[]),
        1.0
    );
    assert_eq!(
        agent.metric_sum("ipfs_image_agent_blob_stream_detached_total", &[]),
        0.0
    );
    assert_eq!(
        agent.metric_sum("ipfs_image_agent_bytes_served_total", &[("kind", "blob")]),
        (size * CLIENTS as u64) as f64
    );

    // Once it is over, the next GET opens a new stream (nothing is cached).
    proxy.cats.lock().unwrap().clear();
    let again = runtime
        .block_on(async { c.get(&url).send().await.unwrap().bytes().await })
        .unwrap();
    assert_eq!(Digest::of(&again), layer);
    assert_eq!(proxy.cats.lock().unwrap().len(), 1);
}

#[test]
fn a_stalled_client_does_not_hold_back_another_on_the_same_blob() {
    let (ipfs, cid, layer, layer_cid, size) = converted_big_image(20 * 1024 * 1024);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (proxy_url, proxy) = start_cat_proxy(&runtime, &ipfs.api_url, &layer_cid, None);
    let window = 1024 * 1024;
    let agent = Agent::start(
        &agent_bin(),
        &proxy_url,
        None,
        &[
            "--blob-share-window",
            &window.to_string(),
            "--ipfs-gateway",
            "rpc",
        ],
    )
    .unwrap();
    let url = format!("http://{}/v2/ipfs/{cid}/blobs/{layer}", agent.addr);
    let c = slow_http();
    let head = runtime
        .block_on(async { c.head(&url).send().await })
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);

    // Two GETs on one shared stream; one of them will not read its body for now.
    let stalled = runtime.spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { c.get(&url).send().await.unwrap() }
    });
    let reader = runtime.spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { c.get(&url).send().await.unwrap().bytes().await.unwrap() }
    });
    wait_for_joins(&agent, 1.0);
    proxy.gate.send_replace(true);
    let stalled = runtime.block_on(stalled).unwrap();
    assert_eq!(stalled.status(), StatusCode::OK);

    // The reader finishes while the other client has not read a byte. (Kernel and HTTP buffers
    // take a few MiB of the stalled response: far less than the 20 MiB blob.)
    let body = runtime.block_on(reader).unwrap();
    assert_eq!(body.len() as u64, size);
    assert_eq!(Digest::of(&body), layer);
    assert_eq!(
        agent.metric_sum("ipfs_image_agent_blob_stream_detached_total", &[]),
        1.0,
        "the stalled client was detached from the shared stream"
    );

    // The stalled client now reads: it continued on its own cat from where it was, and gets the
    // whole blob, verified.
    let late = runtime
        .block_on(async { stalled.bytes().await })
        .unwrap_or_else(|e| {
            panic!(
                "the stalled client's body: {e:?}\nagent log:\n{}",
                agent.log()
            )
        });
    assert_eq!(late.len() as u64, size);
    assert_eq!(Digest::of(&late), layer);
    let cats = proxy.cats.lock().unwrap().clone();
    assert_eq!(cats.len(), 2, "{cats:?}");
    assert!(!cats[0].contains("offset"), "{cats:?}");
    let offset = cat_offset(&cats[1]).expect("the second cat starts at an offset");
    eprintln!("the stalled client was detached at byte {offset} of {size}");
    assert!(offset > 0 && offset < size - window, "offset {offset}");
    assert_eq!(
        agent.metric_sum(
            "ipfs_image_agent_ipfs_cat_streams_total",
            &[("reason", "detached")]
        ),
        1.0
    );
}
