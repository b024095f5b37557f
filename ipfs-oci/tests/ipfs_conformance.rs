//! The behaviour the project relies on from its IPFS node, checked against the real Kubo the chart
//! ships (built by e2e/deps.sh), configured by the chart's own kubo-init script. The suite is
//! generic over `IpfsStore`, so a wrapper of the client passes the same checks.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use ipfs_oci::content_id::{parse_cid, raw_cid_for_digest, to_base32};
use ipfs_oci::digest::Digest;
use ipfs_oci::ipfs::{ByteRange, ByteStream, IpfsError, IpfsStore, KuboClient, KuboOptions};
use ipfs_oci::layout::Staging;
use testkit::{IpfsDaemon, block_on, free_port, noise};

async fn read_all(mut s: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.expect("stream chunk"));
    }
    out
}

fn chunked(data: &[u8], chunk: usize) -> ByteStream {
    let parts: Vec<std::io::Result<Bytes>> = data
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(parts))
}

fn short_deadlines() -> KuboOptions {
    KuboOptions {
        call_timeout: Duration::from_secs(2),
        first_byte_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(5),
        pin_timeout: Duration::from_secs(5),
        gateway: None,
    }
}

async fn suite<S: IpfsStore>(ipfs: &S) {
    // identity and version
    let id = ipfs.id().await.expect("id");
    assert!(!id.peer_id.is_empty());
    assert!(!ipfs.version().await.expect("version").is_empty());

    // add uses the format's options whatever the daemon's defaults: the recipe's vector
    let hello = ipfs
        .add_bytes(Bytes::from_static(b"hello world\n"))
        .await
        .expect("add");
    assert_eq!(
        to_base32(&hello.cid),
        "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
    );
    assert_eq!(hello.cid, raw_cid_for_digest(&Digest::of(b"hello world\n")));

    // a one-chunk blob's CID is the raw CID of its digest
    let small = noise(200_000, 7);
    let added = ipfs.add(chunked(&small, 10_000)).await.expect("add small");
    assert_eq!(added.cid, raw_cid_for_digest(&Digest::of(&small)));

    // a multi-chunk file streams in and out unchanged, whole and by range
    let big = noise(3 * 1024 * 1024 + 123, 11);
    let added = ipfs.add(chunked(&big, 64 * 1024)).await.expect("add big");
    assert_ne!(
        added.cid,
        raw_cid_for_digest(&Digest::of(&big)),
        "a multi-chunk file is a DAG, not a raw block"
    );
    let whole = read_all(
        ipfs.cat(&added.cid, ByteRange::default())
            .await
            .expect("cat"),
    )
    .await;
    assert_eq!(Digest::of(&whole), Digest::of(&big));
    let part = read_all(
        ipfs.cat(
            &added.cid,
            ByteRange {
                offset: 300_000,
                length: Some(500_000),
            },
        )
        .await
        .expect("cat range"),
    )
    .await;
    assert_eq!(part, &big[300_000..800_000]);
    let tail = read_all(
        ipfs.cat(
            &added.cid,
            ByteRange {
                offset: big.len() as u64 - 10,
                length: None,
            },
        )
        .await
        .expect("cat tail"),
    )
    .await;
    assert_eq!(tail, &big[big.len() - 10..]);

    // small reads are bounded
    assert_eq!(
        ipfs.cat_to_vec(&hello.cid, 12).await.expect("cat_to_vec"),
        b"hello world\n"
    );
    assert!(matches!(
        ipfs.cat_to_vec(&hello.cid, 11).await,
        Err(IpfsError::TooLarge { .. })
    ));

    // block stat
    assert_eq!(ipfs.block_size(&hello.cid).await.expect("block/stat"), 12);

    // pins
    assert!(!ipfs.is_pinned(&added.cid).await.expect("pin ls"));
    ipfs.pin_add(&added.cid).await.expect("pin add");
    assert!(ipfs.is_pinned(&added.cid).await.expect("pin ls"));
    ipfs.pin_add(&added.cid)
        .await
        .expect("pin add is idempotent");
    ipfs.pin_rm(&added.cid).await.expect("pin rm");
    assert!(!ipfs.is_pinned(&added.cid).await.expect("pin ls"));
    ipfs.pin_rm(&added.cid)
        .await
        .expect("pin rm of an unpinned CID is fine");

    // the repository's size against its limit (the chart's kubo-init sets StorageMax)
    let stat = ipfs.repo_stat().await.expect("repo/stat");
    assert!(stat.repo_size > 0, "{stat:?}");
    assert_eq!(stat.storage_max, 20_000_000_000, "{stat:?}");

    // MFS: what an import stages (see ipfs_oci::layout)
    let dir = "/conformance/held";
    ipfs.files_mkdir(dir).await.expect("files/mkdir");
    ipfs.files_mkdir(dir)
        .await
        .expect("files/mkdir of an existing directory");
    assert_eq!(
        ipfs.files_stat("/conformance/none").await.expect("stat"),
        None
    );
    let staged = ipfs
        .files_add(&format!("{dir}/big"), chunked(&big, 64 * 1024))
        .await
        .expect("files_add");
    assert_eq!(staged.cid, added.cid, "the same options as add");
    assert_eq!(
        ipfs.files_stat(&format!("{dir}/big")).await.expect("stat"),
        Some((added.cid, big.len() as u64))
    );
    ipfs.files_cp(&hello.cid, &format!("{dir}/hello"))
        .await
        .expect("files/cp");
    let (dir_cid, _) = ipfs.files_stat(dir).await.expect("stat").expect("dir");
    assert_eq!(dir_cid.version(), cid::Version::V1, "CIDv1 directories");
    ipfs.files_rm("/conformance").await.expect("files/rm");
    ipfs.files_rm("/conformance")
        .await
        .expect("files/rm of nothing");
    assert_eq!(ipfs.files_stat(dir).await.expect("stat"), None);
}

/// A layout built twice from the same blobs has the same CID, is pinned, and its staging area
/// is gone afterwards.
async fn layout_suite<S: IpfsStore>(ipfs: &S) {
    let blob = noise(700_000, 3);
    let blob_digest = Digest::of(&blob);
    let root = ipfs_oci::format::RootDescriptor {
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        digest: blob_digest,
        size: blob.len() as u64,
        urls: vec![],
    };
    let mut layouts = Vec::new();
    for key in ["layout-a", "layout-b"] {
        let staging = Staging::open(ipfs, key).await.expect("open staging");
        assert_eq!(staging.held(&blob_digest.hex()).await.unwrap(), None);
        let added = staging
            .add(&blob_digest.hex(), chunked(&blob, 100_000))
            .await
            .expect("stage");
        assert_eq!(
            staging.held(&blob_digest.hex()).await.unwrap(),
            Some((added.cid, blob.len() as u64))
        );
        let layout = staging
            .commit_layout(&root, [(blob_digest, added.cid)])
            .await
            .expect("commit");
        assert!(ipfs.is_pinned(&layout).await.unwrap());
        assert_eq!(
            ipfs.files_stat(&format!("{}/{key}", ipfs_oci::layout::STAGING_ROOT))
                .await
                .unwrap(),
            None,
            "the staging area is removed once the layout is pinned"
        );
        layouts.push(layout);
    }
    assert_eq!(layouts[0], layouts[1], "same blobs, same layout CID");
    ipfs.pin_rm(&layouts[0]).await.unwrap();
}

#[test]
fn conformance_suite_on_kubo() {
    let daemon = IpfsDaemon::start().expect("start ipfs");
    let client = KuboClient::new(&daemon.api_url, KuboOptions::default()).unwrap();
    block_on(async {
        suite(&client).await;
        layout_suite(&client).await;
    });
    eprintln!("conformance: {} passed", testkit::kubo_version());
}

/// The same suite with `cat` reading Kubo's loopback gateway, as the agent does: found through
/// the RPC API (`Addresses.Gateway`, set by the chart's kubo-init script), same bytes, same
/// ranges.
#[test]
fn conformance_suite_on_kubo_through_its_gateway() {
    let daemon = IpfsDaemon::start().expect("start ipfs");
    let client = KuboClient::new(&daemon.api_url, KuboOptions::default()).unwrap();
    block_on(async {
        let gateway = client
            .loopback_gateway()
            .await
            .expect("config Addresses.Gateway")
            .expect("the kubo-init script gives the daemon a loopback gateway");
        assert_eq!(gateway, daemon.gateway_url);
        client.set_gateway(Some(gateway));
        suite(&client).await;
        assert!(client.gateway().is_some(), "the gateway stayed in use");
    });
}

#[test]
fn missing_content_answers_within_the_deadline() {
    {
        let daemon = IpfsDaemon::start().expect("start ipfs");
        let client = KuboClient::new(&daemon.api_url, short_deadlines()).unwrap();
        block_on(async {
            // Nobody has this content; without a deadline the daemon would keep looking.
            let absent = raw_cid_for_digest(&Digest::of(b"content nobody added"));
            // Each call is timed on its own: the deadline is per call.
            async fn timed<F: Future<Output = Result<(), IpfsError>>>(what: &str, call: F) {
                let started = Instant::now();
                let err = call.await.expect_err(what);
                let took = started.elapsed();
                // pin_add has the longest deadline here (5 s).
                assert!(took < Duration::from_secs(7), "{what} took {took:?}");
                eprintln!("{what}: {err} after {took:?}");
            }
            timed("cat_to_vec", async {
                client.cat_to_vec(&absent, 100).await.map(|_| ())
            })
            .await;
            timed("block_size", async {
                client.block_size(&absent).await.map(|_| ())
            })
            .await;
            timed("cat", async {
                let mut s = client.cat(&absent, ByteRange::default()).await?;
                match s.next().await {
                    Some(Err(e)) => Err(IpfsError::Api {
                        endpoint: "cat",
                        message: e.to_string(),
                    }),
                    other => panic!("cat of absent content: {other:?}"),
                }
            })
            .await;
            timed("pin_add", client.pin_add(&absent)).await;
            // The same `cat` through the gateway: Kubo's gateway would keep looking for
            // minutes; the client's first-byte deadline answers.
            client.set_gateway(Some(daemon.gateway_url.clone()));
            timed("cat (gateway)", async {
                let mut s = client.cat(&absent, ByteRange::default()).await?;
                match s.next().await {
                    Some(Err(e)) => Err(IpfsError::Api {
                        endpoint: "gateway",
                        message: e.to_string(),
                    }),
                    other => panic!("gateway cat of absent content: {other:?}"),
                }
            })
            .await;
        });
    }
}

#[test]
fn unreachable_daemon_is_reported_as_unavailable() {
    let client = KuboClient::new(
        &format!("http://127.0.0.1:{}", free_port()),
        short_deadlines(),
    )
    .unwrap();
    block_on(async {
        let err = client.id().await.expect_err("nothing listens there");
        assert!(err.is_unavailable(), "{err:?}");
        let cid = parse_cid("bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4").unwrap();
        assert!(
            client
                .cat(&cid, ByteRange::default())
                .await
                .err()
                .expect("no daemon")
                .is_unavailable()
        );
    });
}

#[test]
fn swarm_connect_joins_two_daemons() {
    {
        let a = IpfsDaemon::start().expect("start ipfs a");
        let b = IpfsDaemon::start().expect("start ipfs b");
        let client_a = KuboClient::new(&a.api_url, KuboOptions::default()).unwrap();
        block_on(async {
            let before = client_a.swarm_peers().await.expect("swarm/peers");
            assert!(
                before.iter().all(|p| p.peer_id != b.peer_id),
                "no bootstrap, so not connected yet: {before:?}"
            );
            client_a
                .swarm_connect(&b.swarm_multiaddr())
                .await
                .expect("swarm/connect");
            let peers = client_a.swarm_peers().await.expect("swarm/peers");
            let found = peers
                .iter()
                .find(|p| p.peer_id == b.peer_id)
                .unwrap_or_else(|| panic!("b not among a's peers: {peers:?}"));
            assert!(found.addr.contains("/tcp/"), "{found:?}");

            // Disconnect closes it (the agent drops peers whose Pod left).
            client_a
                .swarm_disconnect(&b.swarm_multiaddr())
                .await
                .expect("swarm/disconnect");
            testkit::wait_until_async("a dropped b", Duration::from_secs(30), || async {
                let peers = client_a.swarm_peers().await.expect("swarm/peers");
                Ok(peers.iter().all(|p| p.peer_id != b.peer_id))
            })
            .await
            .unwrap();

            // Protected peering: the daemon dials the peer itself and keeps the connection.
            client_a
                .peering_add(&b.swarm_multiaddr())
                .await
                .expect("swarm/peering/add");
            testkit::wait_until_async("peering connects", Duration::from_secs(30), || async {
                let peers = client_a.swarm_peers().await.expect("swarm/peers");
                Ok(peers.iter().any(|p| p.peer_id == b.peer_id))
            })
            .await
            .unwrap();
            client_a.peering_rm(&b.peer_id).await.expect("peering/rm");
        });
        eprintln!("swarm: passed");
    }
}
