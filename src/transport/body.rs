//! Reading an HTTP/2 request body under a byte cap and an idle deadline: the declared
//! content-length is checked before reading, the running total while reading, each DATA
//! frame must follow the last within the idle deadline, and flow-control capacity is
//! released as data is consumed so the peer can keep sending.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::RecvStream;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body is above the limit of {max_bytes} bytes")]
    TooLarge { max_bytes: u64 },
    #[error("no body data for {idle:?}")]
    Stalled { idle: Duration },
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

/// Whether a declared length is above `max_bytes`: refused before anything is read.
pub fn declared_too_large(declared: Option<u64>, max_bytes: u64) -> bool {
    declared.is_some_and(|n| n > max_bytes)
}

/// The first DATA frame of a body (empty when the stream ended without one), within
/// `idle`; None when none came. Its flow-control capacity is not released: that is for
/// [`read_capped`], once the upload is admitted.
pub async fn first_chunk(
    body: &mut RecvStream,
    idle: Duration,
) -> Option<Result<Bytes, BodyError>> {
    let next = crate::runtime::deadline::with_deadline(idle, body.data()).await?;
    Some(match next {
        None => Ok(Bytes::new()),
        Some(Ok(chunk)) => Ok(chunk),
        Some(Err(e)) => Err(e.into()),
    })
}

/// Reads the whole body, starting with `first` (from [`first_chunk`]), if it stays
/// within `max_bytes` and no gap between DATA frames is longer than `idle`.
pub async fn read_capped(
    body: &mut RecvStream,
    first: Bytes,
    declared: Option<u64>,
    max_bytes: u64,
    idle: Duration,
) -> Result<Bytes, BodyError> {
    if declared_too_large(declared, max_bytes) || first.len() as u64 > max_bytes {
        return Err(BodyError::TooLarge { max_bytes });
    }
    let _ = body.flow_control().release_capacity(first.len());
    if body.is_end_stream() {
        return Ok(first);
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(max_bytes) as usize);
    // A single-chunk body is passed through without a copy.
    let mut single: Option<Bytes> = (!first.is_empty()).then_some(first);
    loop {
        let next = crate::runtime::deadline::with_deadline(idle, body.data()).await;
        let chunk = match next {
            None => return Err(BodyError::Stalled { idle }),
            Some(None) => break,
            Some(Some(chunk)) => chunk?,
        };
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
