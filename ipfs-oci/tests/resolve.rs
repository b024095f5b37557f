//! Resolve and adopt against a real IPFS daemon, on images built by hand to sit at and beyond
//! each limit of DESIGN §2 (nesting, manifest count, manifest size) and to lie about their
//! content. Every image here is JSON added to Kubo directly: no registry, no convert.

use bytes::Bytes;
use futures::StreamExt;
use ipfs_oci::Cid;
use ipfs_oci::adopt::{AdoptError, adopt};
use ipfs_oci::content_id::{ipfs_url, to_base32};
use ipfs_oci::digest::Digest;
use ipfs_oci::format::{
    MAX_MANIFEST_BYTES, MAX_MANIFESTS, MAX_NESTING, RootDescriptor, media_type,
};
use ipfs_oci::ipfs::{IpfsStore, KuboClient, KuboOptions};
use ipfs_oci::resolve::{ResolveError, resolve};
use serde_json::{Value, json};
use testkit::{IpfsDaemon, block_on};

fn kubo(daemon: &IpfsDaemon) -> KuboClient {
    KuboClient::new(&daemon.api_url, KuboOptions::default()).unwrap()
}

/// Add `bytes` to IPFS and return their descriptor with the `ipfs://` url, as the format writes it.
async fn add_blob(ipfs: &KuboClient, bytes: Vec<u8>, mt: &str) -> Value {
    let digest = Digest::of(&bytes);
    let size = bytes.len();
    let cid = ipfs.add_bytes(Bytes::from(bytes)).await.unwrap().cid;
    json!({"mediaType": mt, "digest": digest.to_string(), "size": size, "urls": [ipfs_url(&cid)]})
}

async fn add_json(ipfs: &KuboClient, doc: &Value, mt: &str) -> Value {
    add_blob(ipfs, serde_json::to_vec(doc).unwrap(), mt).await
}

/// The image CID of a top-level descriptor: the CID of its JSON.
async fn add_root(ipfs: &KuboClient, descriptor: &Value) -> Cid {
    let root: RootDescriptor = serde_json::from_value(descriptor.clone()).unwrap();
    let bytes = serde_json::to_vec(&root).unwrap();
    ipfs.add_bytes(Bytes::from(bytes)).await.unwrap().cid
}

fn index_of(manifests: &[Value], n: usize) -> Value {
    json!({"schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "manifests": manifests,
        "annotations": {"n": n.to_string()}})
}

/// Adopting `cid` fails because resolving it does; the message names the image.
async fn adopt_refused(ipfs: &KuboClient, cid: &Cid) -> ResolveError {
    match adopt(ipfs, cid, Some("test")).await {
        Err(AdoptError::Resolve(e)) => {
            assert!(e.to_string().contains(&to_base32(cid)), "{e}");
            e
        }
        other => panic!("adopting {cid} was not refused by resolve: {other:?}"),
    }
}

#[test]
fn images_beyond_the_limits_are_refused_and_those_at_them_resolve() {
    let daemon = IpfsDaemon::start().unwrap();
    block_on(async {
        let ipfs = kubo(&daemon);

        // Indexes nested in indexes; chain[k] has k levels of indexes below it.
        let mut chain = vec![add_json(&ipfs, &index_of(&[], 0), media_type::OCI_INDEX).await];
        for level in 1..=MAX_NESTING + 1 {
            let inner = chain.last().unwrap().clone();
            chain.push(add_json(&ipfs, &index_of(&[inner], level), media_type::OCI_INDEX).await);
        }
        let at_limit = add_root(&ipfs, &chain[MAX_NESTING]).await;
        resolve(&ipfs, &at_limit).await.unwrap();
        let too_deep = add_root(&ipfs, &chain[MAX_NESTING + 1]).await;
        let err = resolve(&ipfs, &too_deep).await.unwrap_err();
        assert!(
            matches!(
                err,
                ResolveError::TooDeep {
                    max: MAX_NESTING,
                    ..
                }
            ),
            "{err}"
        );
        let err = adopt_refused(&ipfs, &too_deep).await;
        assert!(
            err.to_string()
                .contains(&format!("nested deeper than {MAX_NESTING} levels")),
            "{err}"
        );

        // Many distinct (empty) indexes under one top; the top counts too.
        let children: Vec<_> = futures::stream::iter(0..MAX_MANIFESTS)
            .map(|i| {
                let ipfs = ipfs.clone();
                async move { add_json(&ipfs, &index_of(&[], i + 1), media_type::OCI_INDEX).await }
            })
            .buffered(8)
            .collect()
            .await;
        let at_limit = add_json(
            &ipfs,
            &index_of(&children[..MAX_MANIFESTS - 1], 0),
            media_type::OCI_INDEX,
        )
        .await;
        resolve(&ipfs, &add_root(&ipfs, &at_limit).await)
            .await
            .unwrap();
        let over = add_json(&ipfs, &index_of(&children, 0), media_type::OCI_INDEX).await;
        let over = add_root(&ipfs, &over).await;
        let err = resolve(&ipfs, &over).await.unwrap_err();
        assert!(
            matches!(
                err,
                ResolveError::TooManyManifests {
                    max: MAX_MANIFESTS,
                    ..
                }
            ),
            "{err}"
        );
        let err = adopt_refused(&ipfs, &over).await;
        assert!(
            err.to_string()
                .contains(&format!("more than {MAX_MANIFESTS} manifests")),
            "{err}"
        );

        // A top index whose descriptor declares more than the limit: refused unread.
        let mut big = chain[0].clone();
        big["size"] = json!(MAX_MANIFEST_BYTES + 1);
        let big = add_root(&ipfs, &big).await;
        let err = adopt_refused(&ipfs, &big).await;
        assert!(matches!(err, ResolveError::TooLarge { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!(
                "{} bytes, over the {MAX_MANIFEST_BYTES} byte limit",
                MAX_MANIFEST_BYTES + 1
            )),
            "{err}"
        );

        // A descriptor whose digest does not match what its url holds.
        let mut lying = chain[1].clone();
        lying["digest"] = chain[2]["digest"].clone();
        lying["size"] = chain[2]["size"].clone();
        let lying = add_root(&ipfs, &lying).await;
        let err = adopt_refused(&ipfs, &lying).await;
        assert!(matches!(err, ResolveError::Invalid { .. }), "{err}");

        // JSON that is not a descriptor.
        let not_image = ipfs
            .add_bytes(Bytes::from_static(br#"{"hello":"world"}"#))
            .await
            .unwrap()
            .cid;
        let err = adopt_refused(&ipfs, &not_image).await;
        assert!(matches!(err, ResolveError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("not an OCI descriptor"), "{err}");
    });
}

/// Configs and layers are not read by resolve: adopt reads each through to its end, and one
/// whose bytes are not its digest's refuses the image, naming the blob; nothing is pinned.
/// An honest image is adopted, its layout pinned.
#[test]
fn adopt_reads_every_blob_and_refuses_one_that_lies() {
    let daemon = IpfsDaemon::start().unwrap();
    block_on(async {
        let ipfs = kubo(&daemon);
        let config = add_json(
            &ipfs,
            &json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}),
            media_type::OCI_CONFIG,
        )
        .await;
        let layer = add_blob(&ipfs, vec![7u8; 300_000], media_type::OCI_LAYER_TAR).await;
        let image = |layer: &Value| {
            json!({"schemaVersion": 2, "mediaType": media_type::OCI_MANIFEST,
                "config": config, "layers": [layer]})
        };
        let root_of = |layer: Value| {
            let ipfs = ipfs.clone();
            let manifest = image(&layer);
            async move {
                let manifest = add_json(&ipfs, &manifest, media_type::OCI_MANIFEST).await;
                add_root(&ipfs, &manifest).await
            }
        };

        // The layer's url holds other bytes of the same size.
        let other = add_blob(&ipfs, vec![8u8; 300_000], media_type::OCI_LAYER_TAR).await;
        let mut lying = layer.clone();
        lying["urls"] = other["urls"].clone();
        let lying = root_of(lying).await;
        let pins_before = ipfs.recursive_pins().await.unwrap().len();
        match adopt(&ipfs, &lying, Some("test")).await {
            Err(e @ AdoptError::Mismatch { .. }) => {
                let message = e.to_string();
                assert!(
                    message.contains(layer["digest"].as_str().unwrap()),
                    "{message}"
                );
            }
            other => panic!("a lying layer was adopted: {other:?}"),
        }
        assert_eq!(ipfs.recursive_pins().await.unwrap().len(), pins_before);

        let honest = root_of(layer.clone()).await;
        let adopted = adopt(&ipfs, &honest, Some("test")).await.unwrap();
        assert!(ipfs.is_pinned(&adopted.layout_cid).await.unwrap());
        assert_eq!(adopted.blob_count, 4, "root, manifest, config, layer");
        assert!(adopted.total_size > 300_000, "{}", adopted.total_size);
        assert!(
            adopted.platforms.is_empty(),
            "a single manifest has no index platforms"
        );
        assert_eq!(adopted.source_digest, None);
    });
}
