//! An upload body as the HTTP/2 frames brought it, and decoding it without first
//! copying it into one buffer.
//!
//! A result batch is almost all rows: gluing its frames together costs a copy of every
//! byte only to find them again inside the message. [`decode_upload`] walks the message
//! across the frames instead, copies the few small fields, and hands the rows on as
//! slices of the frames themselves, so the only copy of a row between the frames and the
//! disk is the datastore's own (datastore/direct_append.rs).
//!
//! The walk is an optimisation, never a second decoder with its own rules: anything it
//! does not recognise as a plain single-field result batch (another kind, a field twice,
//! a group, a bad length) goes through the ordinary contiguous decode, so every body
//! decodes, or fails, exactly as [`framing::decode_single`] decides.

use bytes::{Bytes, BytesMut};
use prost::Message;

use super::framing::{self, FrameError};
use super::pb;

/// A body's frames in order; their concatenation is the body. Frames below `keep_min`
/// bytes (the server's `limits::BODY_FRAME_KEEP_MIN_BYTES`) are joined into chunks of at
/// least that size as they come, so a peer sending tiny frames gets a copy per byte, as
/// before, rather than a list entry (and a pinned receive buffer) per frame: a body holds
/// at most `len / keep_min + 1` chunks.
#[derive(Debug, Clone)]
pub struct ChunkedBody {
    chunks: Vec<Bytes>,
    small: BytesMut,
    len: usize,
    keep_min: usize,
}

impl ChunkedBody {
    pub fn new(keep_min: usize) -> Self {
        Self {
            chunks: Vec::new(),
            small: BytesMut::new(),
            len: 0,
            keep_min: keep_min.max(1),
        }
    }

    pub fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.len += chunk.len();
        if chunk.len() < self.keep_min {
            self.small.extend_from_slice(&chunk);
            if self.small.len() >= self.keep_min {
                self.chunks.push(self.small.split().freeze());
            }
        } else {
            self.flush_small();
            self.chunks.push(chunk);
        }
    }

    fn flush_small(&mut self) {
        if !self.small.is_empty() {
            self.chunks.push(self.small.split().freeze());
        }
    }

    /// The chunks, every byte of the body in them.
    fn into_chunks(mut self) -> Vec<Bytes> {
        self.flush_small();
        self.chunks
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The body in one buffer: free for a body of one frame, a copy otherwise.
    pub fn into_contiguous(self) -> Bytes {
        joined(self.into_chunks())
    }
}

/// `chunks` in one buffer: free for one chunk, a copy otherwise.
fn joined(mut chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => {
            let mut buf = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for chunk in &chunks {
                buf.extend_from_slice(chunk);
            }
            buf.freeze()
        }
    }
}

/// A decoded upload. For a result batch its `jsonl` field is left empty and the rows are
/// in `rows`, in order (slices of the body's frames where the body spanned several);
/// for any other kind `rows` is empty.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedUpload {
    pub upload: pb::Upload,
    pub rows: Vec<Bytes>,
}

/// Decodes a body holding exactly one `Upload` frame, with the same outcome as
/// [`framing::decode_single`] for every input.
pub fn decode_upload(body: ChunkedBody, max_bytes: u64) -> Result<DecodedUpload, FrameError> {
    let chunks = body.into_chunks();
    if chunks.len() > 1 {
        if let Some(decoded) = result_batch_in_place(&chunks, max_bytes) {
            return Ok(decoded);
        }
    }
    let mut upload: pb::Upload = framing::decode_single(joined(chunks), max_bytes)?;
    let rows = match upload.kind.as_mut() {
        Some(pb::upload::Kind::Result(batch)) => {
            let jsonl = std::mem::take(&mut batch.jsonl);
            if jsonl.is_empty() {
                Vec::new()
            } else {
                vec![jsonl]
            }
        }
        _ => Vec::new(),
    };
    Ok(DecodedUpload { upload, rows })
}

/// Protobuf field numbers and wire types this walk knows (proto/agent.proto).
const UPLOAD_RESULT_FIELD: u64 = 1;
const RESULT_JSONL_FIELD: u64 = 4;
const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_FIXED32: u64 = 5;

/// The walk: `Some` only for a well-formed frame whose `Upload` is a lone `result` field
/// with at most one `jsonl` field; `None` sends the body to the contiguous decode.
fn result_batch_in_place(chunks: &[Bytes], max_bytes: u64) -> Option<DecodedUpload> {
    let mut cur = Cursor::new(chunks);
    let frame_len = cur.varint()?;
    if frame_len > max_bytes || frame_len != cur.remaining() as u64 {
        return None;
    }
    let tag = cur.varint()?;
    if tag != (UPLOAD_RESULT_FIELD << 3 | WIRE_LEN) {
        return None;
    }
    let batch_len = cur.varint()?;
    if batch_len != cur.remaining() as u64 {
        return None;
    }
    // Every field but the rows, re-encoded in order: prost reads them as it would have.
    let mut rest = Vec::with_capacity(128);
    let mut rows = None;
    while cur.remaining() > 0 {
        let tag = cur.varint()?;
        let (field, wire) = (tag >> 3, tag & 7);
        if field == 0 {
            return None;
        }
        match wire {
            WIRE_LEN => {
                let len = usize::try_from(cur.varint()?).ok()?;
                if len > cur.remaining() {
                    return None;
                }
                if field == RESULT_JSONL_FIELD {
                    if rows.is_some() {
                        return None;
                    }
                    rows = Some(cur.slices(len)?);
                } else {
                    prost::encoding::encode_varint(tag, &mut rest);
                    prost::encoding::encode_varint(len as u64, &mut rest);
                    cur.copy_into(len, &mut rest)?;
                }
            }
            WIRE_VARINT => {
                let value = cur.varint()?;
                prost::encoding::encode_varint(tag, &mut rest);
                prost::encoding::encode_varint(value, &mut rest);
            }
            WIRE_FIXED64 | WIRE_FIXED32 => {
                prost::encoding::encode_varint(tag, &mut rest);
                cur.copy_into(if wire == WIRE_FIXED64 { 8 } else { 4 }, &mut rest)?;
            }
            _ => return None,
        }
    }
    let batch = pb::ResultBatch::decode(rest.as_slice()).ok()?;
    Some(DecodedUpload {
        upload: pb::Upload {
            kind: Some(pb::upload::Kind::Result(batch)),
        },
        rows: rows.unwrap_or_default(),
    })
}

/// A read position in a list of chunks.
struct Cursor<'a> {
    chunks: &'a [Bytes],
    chunk: usize,
    offset: usize,
    remaining: usize,
}

impl<'a> Cursor<'a> {
    fn new(chunks: &'a [Bytes]) -> Self {
        Self {
            chunks,
            chunk: 0,
            offset: 0,
            remaining: chunks.iter().map(Bytes::len).sum(),
        }
    }

    fn remaining(&self) -> usize {
        self.remaining
    }

    /// Skips to the next chunk with bytes left; false at the end.
    fn settle(&mut self) -> bool {
        while let Some(chunk) = self.chunks.get(self.chunk) {
            if self.offset < chunk.len() {
                return true;
            }
            self.chunk += 1;
            self.offset = 0;
        }
        false
    }

    fn byte(&mut self) -> Option<u8> {
        if !self.settle() {
            return None;
        }
        let b = self.chunks[self.chunk][self.offset];
        self.offset += 1;
        self.remaining -= 1;
        Some(b)
    }

    /// A protobuf varint, as prost reads one (at most ten bytes, the tenth at most 1).
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            if i == 9 && b > 1 {
                return None;
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// The next `n` bytes as slices of the chunks (no copy).
    fn slices(&mut self, mut n: usize) -> Option<Vec<Bytes>> {
        if n > self.remaining {
            return None;
        }
        let mut out = Vec::new();
        while n > 0 {
            self.settle();
            let chunk = &self.chunks[self.chunk];
            let take = n.min(chunk.len() - self.offset);
            out.push(chunk.slice(self.offset..self.offset + take));
            self.offset += take;
            self.remaining -= take;
            n -= take;
        }
        Some(out)
    }

    fn copy_into(&mut self, mut n: usize, out: &mut Vec<u8>) -> Option<()> {
        if n > self.remaining {
            return None;
        }
        while n > 0 {
            self.settle();
            let chunk = &self.chunks[self.chunk];
            let take = n.min(chunk.len() - self.offset);
            out.extend_from_slice(&chunk[self.offset..self.offset + take]);
            self.offset += take;
            self.remaining -= take;
            n -= take;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The server's setting (limits::BODY_FRAME_KEEP_MIN_BYTES).
    const KEEP_MIN: usize = 4096;

    fn split(bytes: &Bytes, cuts: &[usize]) -> ChunkedBody {
        let mut body = ChunkedBody::new(KEEP_MIN);
        let mut at = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        for cut in cuts {
            body.push(bytes.slice(at..cut));
            at = cut;
        }
        body.push(bytes.slice(at..));
        body
    }

    /// The contiguous decode with the rows moved out, as `decode_upload` promises.
    fn reference(bytes: &Bytes, max: u64) -> Result<(pb::Upload, Vec<u8>), FrameError> {
        let mut upload: pb::Upload = framing::decode_single(bytes.clone(), max)?;
        let mut rows = Vec::new();
        if let Some(pb::upload::Kind::Result(batch)) = upload.kind.as_mut() {
            rows = std::mem::take(&mut batch.jsonl).to_vec();
        }
        Ok((upload, rows))
    }

    fn flat(
        decoded: Result<DecodedUpload, FrameError>,
    ) -> Result<(pb::Upload, Vec<u8>), FrameError> {
        decoded.map(|d| (d.upload, d.rows.concat()))
    }

    fn result_upload(jsonl: &[u8], seq: u64) -> Bytes {
        framing::encode(&pb::Upload {
            kind: Some(pb::upload::Kind::Result(pb::ResultBatch {
                flow_id: "F.0123456789ABCDEF".into(),
                artifact: "Linux.Sys.Pslist".into(),
                seq,
                jsonl: Bytes::copy_from_slice(jsonl),
                row_count: 3,
            })),
        })
    }

    #[test]
    fn a_result_batch_over_many_frames_keeps_its_rows_in_place() {
        let rows = b"{\"a\":1}\n".repeat(5000);
        let wire = result_upload(&rows, 7);
        let body = split(&wire, &[10, 100, 16384, 16384 * 2, 30000]);
        assert!(body.clone().into_chunks().len() > 2);
        let decoded = decode_upload(body, 1 << 20).unwrap();
        assert!(decoded.rows.len() > 1, "rows stay as slices of the frames");
        // Only the two small frames at the start were copied (joined); every large one
        // is handed on where it lies.
        let frames = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
        let in_place: usize = decoded
            .rows
            .iter()
            .filter(|part| frames.contains(&(part.as_ptr() as usize)))
            .map(Bytes::len)
            .sum();
        assert!(
            in_place >= rows.len() - 16384,
            "{in_place} of {} bytes in place",
            rows.len()
        );
        assert_eq!(flat(Ok(decoded)), reference(&wire, 1 << 20));
    }

    #[test]
    fn tiny_frames_are_joined_into_bounded_chunks() {
        let rows = b"{\"a\":1}\n".repeat(4000);
        let wire = result_upload(&rows, 2);
        let mut body = ChunkedBody::new(KEEP_MIN);
        for i in 0..wire.len() {
            body.push(wire.slice(i..i + 1));
        }
        assert_eq!(body.len(), wire.len());
        let chunks = body.clone().into_chunks();
        assert!(
            chunks.len() <= wire.len() / KEEP_MIN + 1,
            "{} chunks",
            chunks.len()
        );
        assert_eq!(chunks.concat(), wire.to_vec());
        assert_eq!(
            flat(decode_upload(body, 1 << 20)),
            reference(&wire, 1 << 20)
        );
    }

    #[test]
    fn limits_and_framing_errors_match_the_contiguous_decode() {
        let wire = result_upload(b"{\"a\":1}\n", 1);
        for max in [0, 10, wire.len() as u64 - 2, 1 << 20] {
            for cut in 1..wire.len() {
                let body = split(&wire, &[cut]);
                assert_eq!(
                    flat(decode_upload(body, max)),
                    reference(&wire, max),
                    "max {max} cut {cut}"
                );
            }
        }
        let mut longer = wire.to_vec();
        longer.push(0);
        let longer = Bytes::from(longer);
        assert_eq!(
            flat(decode_upload(split(&longer, &[3]), 1 << 20)),
            reference(&longer, 1 << 20)
        );
        let short = wire.slice(..wire.len() - 1);
        assert_eq!(
            flat(decode_upload(split(&short, &[3]), 1 << 20)),
            reference(&short, 1 << 20)
        );
    }

    /// Field encodings the walk must treat exactly as prost does: fields in any order,
    /// repeated scalar fields (last wins), unknown fields of every wire type, the rows
    /// field twice (merged by prost: falls back), other kinds.
    #[test]
    fn unusual_encodings_decode_as_prost_decodes_them() {
        use prost::encoding::encode_varint;
        let field = |out: &mut Vec<u8>, f: u64, w: u64, payload: &[u8]| {
            encode_varint(f << 3 | w, out);
            if w == WIRE_LEN {
                encode_varint(payload.len() as u64, out);
            }
            out.extend_from_slice(payload);
        };
        let cases: Vec<Vec<u8>> = vec![
            {
                let mut m = Vec::new();
                field(&mut m, 4, WIRE_LEN, b"{}\n{}\n");
                field(&mut m, 3, WIRE_VARINT, &[5]);
                field(&mut m, 1, WIRE_LEN, b"F.1");
                field(&mut m, 3, WIRE_VARINT, &[9]);
                field(&mut m, 99, WIRE_FIXED64, &[1; 8]);
                field(&mut m, 98, WIRE_FIXED32, &[2; 4]);
                field(&mut m, 97, WIRE_LEN, b"unknown");
                m
            },
            {
                let mut m = Vec::new();
                field(&mut m, 4, WIRE_LEN, b"{}\n");
                field(&mut m, 4, WIRE_LEN, b"{\"b\":1}\n");
                m
            },
            {
                let mut m = Vec::new();
                field(&mut m, 4, WIRE_VARINT, &[1]);
                m
            },
            {
                let mut m = Vec::new();
                field(&mut m, 2, WIRE_LEN, &[0xff, 0xfe]);
                m
            },
            {
                let mut m = Vec::new();
                field(&mut m, 7, 3, &[]);
                m
            },
        ];
        for (i, batch) in cases.iter().enumerate() {
            let mut upload = Vec::new();
            field(&mut upload, UPLOAD_RESULT_FIELD, WIRE_LEN, batch);
            let mut wire = Vec::new();
            encode_varint(upload.len() as u64, &mut wire);
            wire.extend_from_slice(&upload);
            let wire = Bytes::from(wire);
            for cut in 1..wire.len() {
                assert_eq!(
                    flat(decode_upload(split(&wire, &[cut, cut + 3]), 1 << 20)),
                    reference(&wire, 1 << 20),
                    "case {i} cut {cut}"
                );
            }
        }
        let status = framing::encode(&pb::Upload {
            kind: Some(pb::upload::Kind::Status(pb::FlowStatus::default())),
        });
        let decoded = decode_upload(split(&status, &[1, 2]), 1 << 20).unwrap();
        assert!(decoded.rows.is_empty());
        assert_eq!(
            Ok(decoded.upload),
            framing::decode_single::<pb::Upload>(status, 1 << 20)
        );
    }

    proptest! {
        /// Any bytes, cut anywhere: the same message or the same error as the
        /// contiguous decode.
        #[test]
        fn any_body_decodes_as_the_contiguous_decode(
            raw in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
            max in prop_oneof![Just(1u64 << 20), 0u64..300],
        ) {
            let raw = Bytes::from(raw);
            prop_assert_eq!(flat(decode_upload(split(&raw, &cuts), max)), reference(&raw, max));
        }

        /// Real result batches with random rows and frame cuts.
        #[test]
        fn result_batches_survive_any_cuts(
            rows in proptest::collection::vec("[a-z]{0,40}", 1..50),
            seq in any::<u64>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let jsonl: Vec<u8> = rows.iter().flat_map(|r| format!("{{\"r\":\"{r}\"}}\n").into_bytes()).collect();
            let wire = result_upload(&jsonl, seq);
            let decoded = decode_upload(split(&wire, &cuts), 1 << 20);
            prop_assert_eq!(flat(decoded), reference(&wire, 1 << 20));
        }
    }
}
