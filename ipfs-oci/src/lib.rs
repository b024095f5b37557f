//! The IPFS-enabled OCI image format (the one nerdctl and stargz-snapshotter use), and the
//! clients it needs: a Kubo RPC client and a source-registry client. Knows nothing of Kubernetes.

pub mod address;
pub mod adopt;
pub mod content_id;
pub mod convert;
pub mod digest;
pub mod estargz;
pub mod fault;
pub mod format;
pub mod ipfs;
pub mod layout;
pub mod progress;
pub mod resolve;
pub mod source;
pub mod verified_stream;

pub use cid::Cid;

/// reqwest is built without a bundled TLS crypto provider (one provider for the whole binary,
/// shared with kube); install ring's once. Every client constructor here calls this, so library
/// users never hit rustls' "no process-level CryptoProvider" panic.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed: that one serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
