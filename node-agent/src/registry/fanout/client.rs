//! One response's side of a shared stream: it reads the shared chunks at its own pace and, once
//! detached for falling too far behind, goes on with a private `cat` from its offset.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use ipfs_oci::ipfs::ByteStream;

use super::{Cursor, End, Flight, Inner, Opener, lock, unregister};

/// One response's reader of a shared stream.
pub(super) struct Client {
    pub(super) flight: Arc<Flight>,
    pub(super) id: u64,
    pub(super) inner: Arc<Inner>,
    pub(super) opener: Opener,
}

enum Next {
    Chunk(Bytes),
    End,
    Failed(io::Error),
    /// Fell behind: continue from this offset on a private `cat`.
    Detached(u64),
}

impl Client {
    async fn next(&self) -> Next {
        loop {
            let notified = self.flight.data.notified();
            {
                let mut st = lock(&self.flight);
                if let Some(c) = st.detached.remove(&self.id) {
                    return Next::Detached(c.offset);
                }
                let Some(cursor) = st.attached.get(&self.id).copied() else {
                    return Next::Failed(io::Error::other("detached from the shared stream"));
                };
                let position = cursor.index.checked_sub(st.first_index);
                if let Some(chunk) = position
                    .and_then(|p| usize::try_from(p).ok())
                    .and_then(|p| st.chunks.get(p))
                    .cloned()
                {
                    st.attached.insert(
                        self.id,
                        Cursor {
                            index: cursor.index + 1,
                            offset: cursor.offset + chunk.len() as u64,
                        },
                    );
                    st.trim();
                    drop(st);
                    self.flight.demand.notify_one();
                    return Next::Chunk(chunk);
                }
                match &st.end {
                    Some(End::Complete) => return Next::End,
                    Some(End::Failed(kind, message)) => {
                        return Next::Failed(io::Error::new(*kind, message.clone()));
                    }
                    Some(End::Abandoned) => {
                        return Next::Failed(io::Error::other("shared stream abandoned"));
                    }
                    None => {}
                }
            }
            notified.await;
        }
    }

    pub(super) fn into_stream(self) -> ByteStream {
        enum Reader {
            Shared(Client),
            Own(ByteStream),
            Done,
        }
        Box::pin(futures::stream::unfold(
            Reader::Shared(self),
            |reader| async move {
                match reader {
                    Reader::Done => None,
                    Reader::Own(mut s) => match s.next().await {
                        Some(Ok(b)) => Some((Ok(b), Reader::Own(s))),
                        Some(Err(e)) => Some((Err(e), Reader::Done)),
                        None => None,
                    },
                    Reader::Shared(client) => match client.next().await {
                        Next::Chunk(b) => Some((Ok(b), Reader::Shared(client))),
                        Next::End => None,
                        Next::Failed(e) => Some((Err(e), Reader::Done)),
                        Next::Detached(offset) => {
                            let opener = client.opener.clone();
                            let metrics = client.inner.metrics.clone();
                            drop(client);
                            metrics
                                .ipfs_cat_streams
                                .with_label_values(&["detached"])
                                .inc();
                            match opener(offset).await {
                                Ok(mut s) => match s.next().await {
                                    Some(Ok(b)) => Some((Ok(b), Reader::Own(s))),
                                    Some(Err(e)) => Some((Err(e), Reader::Done)),
                                    None => None,
                                },
                                Err(e) => Some((Err(io::Error::other(e)), Reader::Done)),
                            }
                        }
                    },
                }
            },
        ))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let mut st = lock(&self.flight);
        st.detached.remove(&self.id);
        if st.attached.remove(&self.id).is_none() {
            return;
        }
        st.trim();
        if st.attached.is_empty() && st.end.is_none() {
            // Nobody reads any more: stop the `cat` now rather than at its next chunk.
            st.joinable = false;
            st.end = Some(End::Abandoned);
            let producer = st.producer.take();
            drop(st);
            if let Some(p) = producer {
                p.abort();
            }
            unregister(&self.inner, &self.flight);
        } else {
            drop(st);
            self.flight.demand.notify_one();
        }
    }
}
