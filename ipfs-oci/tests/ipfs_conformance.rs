//! One suite, every daemon: the behaviour the project relies on, checked against each IPFS
//! implementation installed here (Kubo from PATH, js-ipfs from e2e/deps.sh).

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use ipfs_oci::content_id::{parse_cid, raw_cid_for_digest, to_base32};
use ipfs_oci::digest::Digest;
use ipfs_oci::ipfs::{ByteRange, ByteStream, IpfsError, IpfsStore, KuboClient, KuboOptions};
use testkit::{IpfsDaemon, IpfsKind, available_ipfs_kinds, block_on, free_port, noise};

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
    }
}

async fn suite(ipfs: &KuboClient) {
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

    // directories: deterministic, pinnable, and their files are the same blocks
    let entries = vec![
        ("oci-layout".to_owned(), hello.cid),
        ("blobs/sha256/aa".to_owned(), added.cid),
        ("blobs/sha256/bb".to_owned(), hello.cid),
    ];
    let dir1 = ipfs.make_directory(&entries).await.expect("make_directory");
    let dir2 = ipfs
        .make_directory(&entries)
        .await
        .expect("make_directory again");
    assert_eq!(dir1, dir2, "same entries, same directory CID");
    ipfs.pin_add(&dir1).await.expect("pin dir");
    assert!(ipfs.is_pinned(&dir1).await.unwrap());
    ipfs.pin_rm(&dir1).await.expect("unpin dir");
}

#[test]
fn conformance_suite_on_every_daemon() {
    for kind in available_ipfs_kinds() {
        let daemon = IpfsDaemon::start_kind(kind).expect("start ipfs");
        let client = KuboClient::new(&daemon.api_url, KuboOptions::default()).unwrap();
        block_on(suite(&client));
        eprintln!("conformance: {kind:?} passed");
    }
}

#[test]
fn missing_content_answers_within_the_deadline() {
    for kind in available_ipfs_kinds() {
        let daemon = IpfsDaemon::start_kind(kind).expect("start ipfs");
        let client = KuboClient::new(&daemon.api_url, short_deadlines()).unwrap();
        block_on(async {
            // Nobody has this content; js-ipfs would wait forever without a deadline.
            let absent = raw_cid_for_digest(&Digest::of(b"content nobody added"));
            for (what, started, result) in [
                (
                    "cat_to_vec",
                    Instant::now(),
                    client.cat_to_vec(&absent, 100).await.map(|_| ()),
                ),
                (
                    "block_size",
                    Instant::now(),
                    client.block_size(&absent).await.map(|_| ()),
                ),
            ] {
                let err = result.expect_err(what);
                assert!(
                    started.elapsed() < Duration::from_secs(6),
                    "{what} took {:?}",
                    started.elapsed()
                );
                eprintln!("{kind:?} {what}: {err}");
            }
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
    for kind in available_ipfs_kinds() {
        let a = IpfsDaemon::start_kind(kind).expect("start ipfs a");
        let b = IpfsDaemon::start_kind(kind).expect("start ipfs b");
        let client_a = KuboClient::new(&a.api_url, KuboOptions::default()).unwrap();
        block_on(async {
            let before = client_a.swarm_peers().await.expect("swarm/peers");
            assert!(
                before.iter().all(|p| p.peer_id != b.peer_id),
                "{kind:?}: no bootstrap, so not connected yet: {before:?}"
            );
            client_a
                .swarm_connect(&b.swarm_multiaddr())
                .await
                .expect("swarm/connect");
            let peers = client_a.swarm_peers().await.expect("swarm/peers");
            let found = peers
                .iter()
                .find(|p| p.peer_id == b.peer_id)
                .unwrap_or_else(|| panic!("{kind:?}: b not among a's peers: {peers:?}"));
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

            // Protected peering: Kubo has it and connects; js-ipfs does not, and says so with
            // the typed error the agent falls back on.
            match (kind, client_a.peering_add(&b.swarm_multiaddr()).await) {
                (IpfsKind::Kubo, Ok(())) => {
                    testkit::wait_until_async(
                        "peering connects",
                        Duration::from_secs(30),
                        || async {
                            let peers = client_a.swarm_peers().await.expect("swarm/peers");
                            Ok(peers.iter().any(|p| p.peer_id == b.peer_id))
                        },
                    )
                    .await
                    .unwrap();
                    client_a.peering_rm(&b.peer_id).await.expect("peering/rm");
                }
                (IpfsKind::JsIpfs, Err(IpfsError::Unsupported { endpoint })) => {
                    assert_eq!(endpoint, "swarm/peering/add");
                }
                (kind, other) => panic!("{kind:?}: unexpected peering/add answer: {other:?}"),
            }
        });
        eprintln!("swarm: {kind:?} passed");
    }
}
