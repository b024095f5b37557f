//! Everything we need from an IPFS node, behind one trait, so every implementation (the Kubo
//! client, and the wrappers tests put around it) runs the same conformance suite
//! (`tests/ipfs_conformance.rs`, against a real Kubo).

mod kubo;

use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use futures::Stream;

pub use kubo::{KuboClient, KuboOptions};

/// A stream of bytes going into or coming out of IPFS.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'static>>;

#[derive(Debug, thiserror::Error)]
pub enum IpfsError {
    #[error("IPFS {endpoint}: {message}")]
    Api {
        endpoint: &'static str,
        message: String,
    },
    #[error("IPFS {endpoint} did not answer within {after:?}")]
    Timeout {
        endpoint: &'static str,
        after: Duration,
    },
    #[error("cannot reach the IPFS API for {endpoint}: {source}")]
    Unreachable {
        endpoint: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("IPFS {endpoint}: transport error: {source}")]
    Transport {
        endpoint: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("IPFS {endpoint}: unexpected answer: {detail}")]
    Decode {
        endpoint: &'static str,
        detail: String,
    },
    #[error("IPFS {endpoint}: content is larger than the limit of {limit} bytes")]
    TooLarge { endpoint: &'static str, limit: u64 },
    /// The daemon has no such command (an older or other daemon of the API).
    #[error("IPFS {endpoint}: not supported by this daemon")]
    Unsupported { endpoint: &'static str },
}

impl IpfsError {
    /// True when the daemon could not be reached or did not answer in time: callers fall back
    /// (the registry answers fast errors so containerd moves on) or retry with backoff.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Unreachable { .. })
    }

    /// True when the daemon failed for want of disk space: Kubo passes the write's `ENOSPC`
    /// through as text, in the error answer or in the stream's trailing error.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            Self::Api { message, .. }
            | Self::Decode {
                detail: message, ..
            } => message.contains("no space left on device"),
            _ => false,
        }
    }
}

/// What `add` reports for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    pub cid: Cid,
    /// Bytes of the file's DAG as the daemon counts them (informational).
    pub dag_size: u64,
}

/// A byte range of a file: `length: None` means to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ByteRange {
    pub offset: u64,
    pub length: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub peer_id: String,
    pub addresses: Vec<String>,
    pub agent_version: String,
}

/// The operations the project uses. Every `add` uses the image format's options (CIDv1, raw
/// leaves, 256 KiB chunks, sha2-256) whatever the daemon's configuration says.
pub trait IpfsStore: Send + Sync {
    /// Add one file from a stream, unpinned and unreferenced: the daemon's GC may collect it at
    /// any moment. Imports use [`IpfsStore::files_add`] (see `staging`).
    fn add(&self, data: ByteStream) -> impl Future<Output = Result<Added, IpfsError>> + Send;

    /// Add one file and link it at `path` in the node's MFS in one step, safe from a concurrent
    /// GC (MFS is a GC root). The parent directory must exist; `path` must not.
    fn files_add(
        &self,
        path: &str,
        data: ByteStream,
    ) -> impl Future<Output = Result<Added, IpfsError>> + Send;

    /// Add a small in-memory file.
    fn add_bytes(&self, data: Bytes) -> impl Future<Output = Result<Added, IpfsError>> + Send {
        self.add(Box::pin(futures::stream::once(async move { Ok(data) })))
    }

    /// Stream a file, or part of it.
    fn cat(
        &self,
        cid: &Cid,
        range: ByteRange,
    ) -> impl Future<Output = Result<ByteStream, IpfsError>> + Send;

    /// Read a small file whole; fails if it is larger than `limit`.
    fn cat_to_vec(
        &self,
        cid: &Cid,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<u8>, IpfsError>> + Send;

    /// Size of a block (not of a whole file) — a cheap "does the node have this" probe.
    fn block_size(&self, cid: &Cid) -> impl Future<Output = Result<u64, IpfsError>> + Send;

    fn pin_add(&self, cid: &Cid) -> impl Future<Output = Result<(), IpfsError>> + Send;
    /// Pin `cid` recursively with a name (Kubo's pin names), which tells its owner later. A CID
    /// pinned already keeps the name it has.
    fn pin_add_named(
        &self,
        cid: &Cid,
        name: &str,
    ) -> impl Future<Output = Result<(), IpfsError>> + Send;
    /// Every recursive pin, with its name (empty when it has none).
    fn recursive_pins(&self) -> impl Future<Output = Result<Vec<(Cid, String)>, IpfsError>> + Send;
    fn pin_rm(&self, cid: &Cid) -> impl Future<Output = Result<(), IpfsError>> + Send;
    /// Whether `cid` is pinned recursively.
    fn is_pinned(&self, cid: &Cid) -> impl Future<Output = Result<bool, IpfsError>> + Send;

    /// Create an MFS directory and its parents (CIDv1 directories; fine if it exists).
    fn files_mkdir(&self, path: &str) -> impl Future<Output = Result<(), IpfsError>> + Send;
    /// Link the file or directory `cid` at MFS `path` (fetching its root block if needed).
    fn files_cp(&self, cid: &Cid, path: &str)
    -> impl Future<Output = Result<(), IpfsError>> + Send;
    /// The CID and size at MFS `path`, or `None` when nothing is there.
    fn files_stat(
        &self,
        path: &str,
    ) -> impl Future<Output = Result<Option<(Cid, u64)>, IpfsError>> + Send;
    /// Remove MFS `path` recursively; nothing there is fine.
    fn files_rm(&self, path: &str) -> impl Future<Output = Result<(), IpfsError>> + Send;

    /// How much the repository holds, against its `Datastore.StorageMax`.
    fn repo_stat(&self) -> impl Future<Output = Result<RepoStat, IpfsError>> + Send;

    fn id(&self) -> impl Future<Output = Result<NodeIdentity, IpfsError>> + Send;
    fn version(&self) -> impl Future<Output = Result<String, IpfsError>> + Send;

    /// Open a swarm connection to a peer at `addr`, a multiaddr ending in `/p2p/<peer ID>`.
    /// (Defaults to unsupported so that wrappers written before it still compile.)
    fn swarm_connect(&self, addr: &str) -> impl Future<Output = Result<(), IpfsError>> + Send {
        let _ = addr;
        async {
            Err(IpfsError::Api {
                endpoint: "swarm/connect",
                message: "not supported by this store".into(),
            })
        }
    }

    /// The peers the swarm is connected to now.
    fn swarm_peers(&self) -> impl Future<Output = Result<Vec<SwarmPeer>, IpfsError>> + Send {
        async {
            Err(IpfsError::Api {
                endpoint: "swarm/peers",
                message: "not supported by this store".into(),
            })
        }
    }

    /// Close every connection to the peer at `addr` (a multiaddr ending in `/p2p/<peer ID>`).
    fn swarm_disconnect(&self, addr: &str) -> impl Future<Output = Result<(), IpfsError>> + Send {
        let _ = addr;
        async {
            Err(IpfsError::Unsupported {
                endpoint: "swarm/disconnect",
            })
        }
    }

    /// Add a protected peering (Kubo's `swarm/peering/add`): the daemon keeps a connection to
    /// the peer open, redials it when it drops and never trims it. Runtime state only (a restart
    /// forgets it, which is why the agent re-adds on every pass). `Unsupported` where the daemon
    /// has no peering: callers fall back to `swarm_connect`.
    fn peering_add(&self, addr: &str) -> impl Future<Output = Result<(), IpfsError>> + Send {
        let _ = addr;
        async {
            Err(IpfsError::Unsupported {
                endpoint: "swarm/peering/add",
            })
        }
    }

    /// Remove a protected peering by peer ID (`swarm/peering/rm`).
    fn peering_rm(&self, peer_id: &str) -> impl Future<Output = Result<(), IpfsError>> + Send {
        let _ = peer_id;
        async {
            Err(IpfsError::Unsupported {
                endpoint: "swarm/peering/rm",
            })
        }
    }
}

/// `repo/stat`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepoStat {
    pub repo_size: u64,
    pub storage_max: u64,
}

/// One open swarm connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmPeer {
    pub peer_id: String,
    /// The remote multiaddr of the connection (without `/p2p/…`).
    pub addr: String,
}
