//! Length-delimited protobuf framing: a varint length, then the message. The length is
//! checked against the receiver's limit before any byte of the body is buffered, so a
//! frame that claims a huge length costs nothing but an error.

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame claims {claimed_bytes} bytes, above the limit of {max_bytes}")]
    TooLarge { claimed_bytes: u64, max_bytes: u64 },
    #[error("frame length prefix is not a valid varint")]
    BadLength,
    #[error("frame body is not a valid message: {0}")]
    BadMessage(String),
    #[error("body ends inside a frame")]
    Truncated,
    #[error("{0} bytes follow the frame")]
    TrailingBytes(usize),
}

/// Encodes `msg` with its varint length prefix.
pub fn encode<M: Message>(msg: &M) -> Bytes {
    let mut buf = BytesMut::with_capacity(msg.encoded_len() + 10);
    msg.encode_length_delimited(&mut buf)
        .expect("BytesMut grows as needed");
    buf.freeze()
}

/// Reads a varint length prefix. Ok(None) means more bytes are needed.
fn read_length(buf: &[u8]) -> Result<Option<(u64, usize)>, FrameError> {
    let mut value: u64 = 0;
    for (i, byte) in buf.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 10 {
        return Err(FrameError::BadLength);
    }
    Ok(None)
}

/// Decodes a body that must hold exactly one frame (an upload request), without
/// copying: `bytes` fields of the message share `body`'s buffer.
pub fn decode_single<M: Message + Default>(
    mut body: Bytes,
    max_bytes: u64,
) -> Result<M, FrameError> {
    let (len, prefix) = read_length(&body)?.ok_or(FrameError::Truncated)?;
    if len > max_bytes {
        return Err(FrameError::TooLarge {
            claimed_bytes: len,
            max_bytes,
        });
    }
    body.advance(prefix);
    let len = len as usize;
    if body.len() < len {
        return Err(FrameError::Truncated);
    }
    if body.len() > len {
        return Err(FrameError::TrailingBytes(body.len() - len));
    }
    M::decode(body).map_err(|e| FrameError::BadMessage(e.to_string()))
}

/// Reads a stream of frames as bytes arrive (the agent's task stream).
pub struct FrameDecoder {
    buf: BytesMut,
    max_bytes: u64,
}

impl FrameDecoder {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_bytes: max_bytes as u64,
        }
    }

    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame body, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some((len, prefix)) = read_length(&self.buf)? else {
            return Ok(None);
        };
        if len > self.max_bytes {
            return Err(FrameError::TooLarge {
                claimed_bytes: len,
                max_bytes: self.max_bytes,
            });
        }
        let total = prefix + len as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        self.buf.advance(prefix);
        Ok(Some(self.buf.split_to(len as usize).freeze()))
    }

    /// The next complete frame decoded as `M`.
    pub fn next_message<M: Message + Default>(&mut self) -> Result<Option<M>, FrameError> {
        match self.next_frame()? {
            None => Ok(None),
            Some(body) => M::decode(body)
                .map(Some)
                .map_err(|e| FrameError::BadMessage(e.to_string())),
        }
    }

    /// Bytes buffered but not yet a whole frame.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::pb;

    fn task(flow: &str) -> pb::ServerMessage {
        pb::ServerMessage {
            kind: Some(pb::server_message::Kind::Task(pb::Task {
                flow_id: flow.into(),
                artifacts: vec![],
                create_time_us: 42,
                hunt_id: String::new(),
                limits: None,
            })),
        }
    }

    #[test]
    fn stream_decoder_reassembles_frames_split_anywhere() {
        let mut wire = Vec::new();
        for i in 0..5 {
            wire.extend_from_slice(&encode(&task(&format!("F.{i:016X}"))));
        }
        let mut dec = FrameDecoder::new(1024);
        let mut got = Vec::new();
        for chunk in wire.chunks(3) {
            dec.extend(chunk);
            while let Some(m) = dec.next_message::<pb::ServerMessage>().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got.len(), 5);
        assert_eq!(got[4], task(&format!("F.{:016X}", 4)));
        assert_eq!(dec.pending_bytes(), 0);
    }

    #[test]
    fn huge_claimed_length_is_refused_before_buffering() {
        let mut dec = FrameDecoder::new(1024);
        dec.extend(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // claims ~4 GiB
        assert!(matches!(dec.next_frame(), Err(FrameError::TooLarge { .. })));
        let body =
            Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(matches!(
            decode_single::<pb::Upload>(body, 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
        let endless = Bytes::from_static(&[0x80; 12]);
        assert_eq!(
            decode_single::<pb::Upload>(endless, 1 << 20),
            Err(FrameError::BadLength)
        );
    }

    #[test]
    fn single_frame_must_be_exact() {
        let up = pb::Upload {
            kind: Some(pb::upload::Kind::Result(pb::ResultBatch {
                flow_id: "F.0000000000000001".into(),
                artifact: "A".into(),
                seq: 3,
                jsonl: Bytes::from_static(b"{}\n"),
                row_count: 1,
            })),
        };
        let wire = encode(&up);
        assert_eq!(decode_single::<pb::Upload>(wire.clone(), 1024).unwrap(), up);
        assert_eq!(
            decode_single::<pb::Upload>(wire.slice(..wire.len() - 1), 1024),
            Err(FrameError::Truncated)
        );
        let mut extra = wire.to_vec();
        extra.push(0);
        assert_eq!(
            decode_single::<pb::Upload>(extra.into(), 1024),
            Err(FrameError::TrailingBytes(1))
        );
    }
}
