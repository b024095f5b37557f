//! An in-memory `IpfsStore` that only serves reads of the files it was given: what `resolve`
//! needs, with Kubo's `cat` limit.

use std::collections::HashMap;

use bytes::Bytes;
use cid::Cid;
use ipfs_oci::ipfs::{Added, ByteRange, ByteStream, IpfsError, IpfsStore, NodeIdentity, RepoStat};

#[derive(Default)]
pub struct MemoryStore {
    pub files: HashMap<Cid, Bytes>,
}

fn unsupported(endpoint: &'static str) -> IpfsError {
    IpfsError::Unsupported { endpoint }
}

impl MemoryStore {
    fn get(&self, cid: &Cid) -> Result<&Bytes, IpfsError> {
        self.files.get(cid).ok_or_else(|| IpfsError::Api {
            endpoint: "cat",
            message: "block not found".into(),
        })
    }
}

impl IpfsStore for MemoryStore {
    async fn add(&self, _data: ByteStream) -> Result<Added, IpfsError> {
        Err(unsupported("add"))
    }

    async fn files_add(&self, _path: &str, _data: ByteStream) -> Result<Added, IpfsError> {
        Err(unsupported("files/write"))
    }

    async fn cat(&self, cid: &Cid, range: ByteRange) -> Result<ByteStream, IpfsError> {
        let bytes = self.get(cid)?;
        let start = usize::try_from(range.offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let end = match range.length {
            Some(l) => start.saturating_add(usize::try_from(l).unwrap_or(usize::MAX)),
            None => bytes.len(),
        }
        .min(bytes.len());
        let part = bytes.slice(start..end);
        Ok(Box::pin(futures::stream::once(async move { Ok(part) })))
    }

    async fn cat_to_vec(&self, cid: &Cid, limit: u64) -> Result<Vec<u8>, IpfsError> {
        let bytes = self.get(cid)?;
        if bytes.len() as u64 > limit {
            return Err(IpfsError::TooLarge {
                endpoint: "cat",
                limit,
            });
        }
        Ok(bytes.to_vec())
    }

    async fn block_size(&self, cid: &Cid) -> Result<u64, IpfsError> {
        Ok(self.get(cid)?.len() as u64)
    }

    async fn pin_add(&self, _cid: &Cid) -> Result<(), IpfsError> {
        Err(unsupported("pin/add"))
    }

    async fn pin_add_named(&self, _cid: &Cid, _name: &str) -> Result<(), IpfsError> {
        Err(unsupported("pin/add"))
    }

    async fn recursive_pins(&self) -> Result<Vec<(Cid, String)>, IpfsError> {
        Ok(Vec::new())
    }

    async fn pin_rm(&self, _cid: &Cid) -> Result<(), IpfsError> {
        Err(unsupported("pin/rm"))
    }

    async fn is_pinned(&self, _cid: &Cid) -> Result<bool, IpfsError> {
        Ok(false)
    }

    async fn files_mkdir(&self, _path: &str) -> Result<(), IpfsError> {
        Err(unsupported("files/mkdir"))
    }

    async fn files_cp(&self, _cid: &Cid, _path: &str) -> Result<(), IpfsError> {
        Err(unsupported("files/cp"))
    }

    async fn files_stat(&self, _path: &str) -> Result<Option<(Cid, u64)>, IpfsError> {
        Ok(None)
    }

    async fn files_rm(&self, _path: &str) -> Result<(), IpfsError> {
        Err(unsupported("files/rm"))
    }

    async fn repo_stat(&self) -> Result<RepoStat, IpfsError> {
        Err(unsupported("repo/stat"))
    }

    async fn id(&self) -> Result<NodeIdentity, IpfsError> {
        Err(unsupported("id"))
    }

    async fn version(&self) -> Result<String, IpfsError> {
        Ok("memory".into())
    }
}
