//! Reading an HTTP/2 request body under a byte cap: the declared content-length is
//! checked before reading, the running total while reading, and flow-control capacity
//! is released as data is consumed so the peer can keep sending.

use bytes::{Bytes, BytesMut};
use h2::RecvStream;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body is above the limit of {max_bytes} bytes")]
    TooLarge { max_bytes: u64 },
    #[error("body stream failed: {0}")]
    Stream(#[from] h2::Error),
}

pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads the whole body if it stays within `max_bytes`.
pub async fn read_capped(
    body: &mut RecvStream,
    declared: Option<u64>,
    max_bytes: u64,
) -> Result<Bytes, BodyError> {
    if declared.is_some_and(|n| n > max_bytes) {
        return Err(BodyError::TooLarge { max_bytes });
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(max_bytes) as usize);
    // A single-chunk body is passed through without a copy.
    let mut single: Option<Bytes> = None;
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        let total = buf.len() + single.as_ref().map_or(0, |b| b.len()) + chunk.len();
        if total as u64 > max_bytes {
            return Err(BodyError::TooLarge { max_bytes });
        }
        if buf.is_empty() && single.is_none() {
            single = Some(chunk);
            continue;
        }
        if let Some(first) = single.take() {
            buf.extend_from_slice(&first);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(single.unwrap_or_else(|| buf.freeze()))
}
