//! Responses written by a blocking writer and streamed to the client as they are made
//! (downloads, whole result sets, zip exports): a thread of its own reads the datastore
//! and writes through [`BodyWriter`]; a bounded queue carries the chunks to the
//! response, so a 10 GB export holds about `STREAM_CHUNK_BYTES ×
//! STREAM_QUEUE_CHUNKS_COUNT` in memory, and a client that reads slowly slows the writer
//! down instead of piling bytes up. The thread is not the blocking pool's: a long
//! download must not hold a thread that agents' uploads wait for.

use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::channel::mpsc;
use futures::SinkExt;

use crate::api::routes::ApiError;
use crate::api::ApiBody;
use crate::limits::{MAX_STREAMED_RESPONSES_COUNT, STREAM_CHUNK_BYTES, STREAM_QUEUE_CHUNKS_COUNT};

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Where a streamed response is written. Writes are gathered into chunks of
/// `STREAM_CHUNK_BYTES`; a write fails with `BrokenPipe` once the client has gone.
pub struct BodyWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl BodyWriter {
    fn send(&mut self, item: io::Result<Bytes>) -> io::Result<()> {
        futures::executor::block_on(self.tx.send(item))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(STREAM_CHUNK_BYTES));
        self.send(Ok(chunk.into()))
    }
}

impl Write for BodyWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = STREAM_CHUNK_BYTES - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= STREAM_CHUNK_BYTES {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffered()
    }
}

/// Releases a stream's slot when its thread ends.
struct Slot;
impl Drop for Slot {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts `work` on a thread of its own and returns the body it writes. 503 when
/// `MAX_STREAMED_RESPONSES_COUNT` streams are already running. An error from `work`
/// (after the status was sent) aborts the response and is logged with `what`.
pub fn streamed<F>(what: &'static str, work: F) -> Result<ApiBody, ApiError>
where
    F: FnOnce(&mut BodyWriter) -> io::Result<()> + Send + 'static,
{
    if IN_FLIGHT.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMED_RESPONSES_COUNT {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::Unavailable(format!(
            "{MAX_STREAMED_RESPONSES_COUNT} downloads or exports are in progress; try again \
             when one has finished"
        )));
    }
    let slot = Slot;
    let (tx, rx) = mpsc::channel(STREAM_QUEUE_CHUNKS_COUNT);
    let spawned = std::thread::Builder::new()
        .name("ph-stream".into())
        .spawn(move || {
            let _slot = slot;
            let mut writer = BodyWriter {
                tx,
                buf: Vec::with_capacity(STREAM_CHUNK_BYTES),
            };
            let result = work(&mut writer).and_then(|()| writer.flush());
            if let Err(e) = result {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    tracing::warn!("{what}: {e}; response aborted");
                    let _ = writer.send(Err(e));
                }
            }
        });
    if let Err(e) = spawned {
        return Err(ApiError::Unavailable(format!("cannot start a stream: {e}")));
    }
    Ok(ApiBody::Fallible(Box::pin(rx)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn chunks_arrive_in_order_and_an_error_ends_the_body() {
        let body = streamed("test", |w| {
            for i in 0..1000u32 {
                w.write_all(&i.to_le_bytes().repeat(100))?;
            }
            Err(io::Error::other("disk gone"))
        })
        .unwrap();
        let ApiBody::Fallible(mut stream) = body else {
            panic!("a fallible stream")
        };
        let mut got = Vec::new();
        let mut failed = false;
        futures::executor::block_on(async {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(b) => {
                        assert!(b.len() <= STREAM_CHUNK_BYTES);
                        got.extend_from_slice(&b)
                    }
                    Err(_) => failed = true,
                }
            }
        });
        assert!(failed, "the error reaches the body");
        // What came before the error is an exact prefix (the unsent rest is dropped).
        let want: Vec<u8> = (0..1000u32)
            .flat_map(|i| i.to_le_bytes().repeat(100))
            .collect();
        assert!(!got.is_empty() && got.len() < want.len());
        assert_eq!(got, want[..got.len()]);
    }
}
