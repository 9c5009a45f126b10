//! Validation and indexing of one JSONL result batch, in place (the hot path).
//!
//! Owns the rule for what a result batch may contain: non-empty, valid UTF-8, ending in
//! `\n`, and every `\n`-terminated line exactly one JSON object. The bytes are never
//! re-encoded: the caller appends exactly what the agent sent once this says yes. It
//! must not write anything; on error the caller writes nothing of the batch.
//!
//! Cost: one forward pass over the batch (`scan`): rows, the JSON grammar and UTF-8 are
//! checked together, strings eight bytes at a time, with no allocation per row (a batch
//! with nested rows allocates one small nesting stack). The only growth is `index_out`.
//!
//! What is accepted is exactly what serde_json accepts when it parses each row into a
//! `serde_json::Value`, as every reader of a result set does (so no stored row is one a
//! sink or the GUI cannot build); that check, after a UTF-8 pass over the batch, is kept as
//! [`serde_reference`] for the property tests (`jsonl/props.rs`) and the bench. One
//! difference in reporting, not in deciding: the error is the first failing row's, where
//! the reference reported an invalid UTF-8 byte anywhere in the batch before a JSON error
//! on an earlier row; columns are this scanner's, not serde_json's, and always point into
//! the row.

mod scan;

use scan::{RowFault, Scanner};

/// Why a batch was rejected. `line` is 1-based; for a whole-batch problem (empty batch,
/// missing final newline) it is the line where the problem shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct JsonlError {
    pub line: u64,
    pub reason: JsonlReason,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonlReason {
    #[error("empty batch")]
    EmptyBatch,
    #[error("batch does not end with a newline")]
    MissingFinalNewline,
    #[error("invalid UTF-8")]
    InvalidUtf8,
    #[error("empty line")]
    EmptyLine,
    #[error("line is not a JSON object")]
    NotAnObject,
    /// What is wrong (worded as serde_json words it; it never echoes input) and the
    /// 1-based byte column in the line.
    #[error("invalid JSON at column {column}: {detail}")]
    InvalidJson { column: usize, detail: String },
}

/// Validates `bytes` and, for each row, appends its absolute offset
/// (`base_offset` + offset in the batch) to `index_out` as a u64 little-endian.
/// Returns the number of rows. On error `index_out` is left exactly as it was.
pub fn validate_and_index(
    bytes: &[u8],
    base_offset: u64,
    index_out: &mut Vec<u8>,
) -> Result<u64, JsonlError> {
    let len_before = index_out.len();
    let result = check_batch_end(bytes).and_then(|()| index_rows(bytes, base_offset, index_out));
    if result.is_err() {
        index_out.truncate(len_before);
    }
    debug_assert!(result
        .as_ref()
        .map_or(index_out.len() == len_before, |rows| {
            index_out.len() as u64 == len_before as u64 + rows * 8
        }));
    result
}

/// Whole-batch checks before any per-row work: not empty, ends with `\n` (which the
/// scanner relies on to stop).
fn check_batch_end(bytes: &[u8]) -> Result<(), JsonlError> {
    match bytes.last() {
        None => Err(JsonlError {
            line: 1,
            reason: JsonlReason::EmptyBatch,
        }),
        Some(b'\n') => Ok(()),
        Some(_) => Err(JsonlError {
            line: memchr::memchr_iter(b'\n', bytes).count() as u64 + 1,
            reason: JsonlReason::MissingFinalNewline,
        }),
    }
}

fn index_rows(bytes: &[u8], base_offset: u64, index_out: &mut Vec<u8>) -> Result<u64, JsonlError> {
    let mut scanner = Scanner::new(bytes);
    let mut start = 0usize;
    let mut rows = 0u64;
    while start < bytes.len() {
        let end = scanner
            .row(start)
            .map_err(|fault| row_error(bytes, start, rows + 1, fault))?;
        debug_assert_eq!(bytes[end], b'\n');
        index_out.extend_from_slice(&(base_offset + start as u64).to_le_bytes());
        rows += 1;
        start = end + 1;
    }
    debug_assert_eq!(start, bytes.len());
    Ok(rows)
}

/// The error for the row that starts at `start`, line `line`. A grammar error's column
/// is clamped into the row: an error found at the `\n` that ended the row too early
/// points at its last byte, as serde_json's did.
#[cold]
fn row_error(bytes: &[u8], start: usize, line: u64, fault: RowFault) -> JsonlError {
    let reason = match fault {
        RowFault::EmptyLine => JsonlReason::EmptyLine,
        RowFault::NotAnObject => JsonlReason::NotAnObject,
        RowFault::InvalidUtf8 => JsonlReason::InvalidUtf8,
        RowFault::Syntax { at, error } => {
            let row_len = memchr::memchr(b'\n', &bytes[start..]).expect("rows end in \\n");
            JsonlReason::InvalidJson {
                column: (at - start + 1).clamp(1, row_len.max(1)),
                detail: error.to_string(),
            }
        }
    };
    JsonlError { line, reason }
}

/// The reference the property tests and the `validator` bench compare
/// [`validate_and_index`] with: a UTF-8 pass over the batch, then serde_json's `Value`
/// parse of each row, which is what a reader of the rows does. Same contract as
/// `validate_and_index`; not used on any serving path.
#[doc(hidden)]
pub fn serde_reference(
    bytes: &[u8],
    base_offset: u64,
    index_out: &mut Vec<u8>,
) -> Result<u64, JsonlError> {
    let len_before = index_out.len();
    let result = reference::check_batch_shape(bytes)
        .and_then(|rows| reference::index_rows(bytes, rows, base_offset, index_out));
    if result.is_err() {
        index_out.truncate(len_before);
    }
    result
}

mod reference {
    use super::*;

    /// Whole-batch checks before any per-row work; returns the row count (= newlines).
    pub(super) fn check_batch_shape(bytes: &[u8]) -> Result<u64, JsonlError> {
        check_batch_end(bytes)?;
        // The batch is checked as a whole first, so that the UTF-8 verdict does not
        // depend on where in a row a bad byte sits.
        if let Err(err) = std::str::from_utf8(bytes) {
            let line = memchr::memchr_iter(b'\n', &bytes[..err.valid_up_to()]).count() as u64 + 1;
            return Err(JsonlError {
                line,
                reason: JsonlReason::InvalidUtf8,
            });
        }
        Ok(memchr::memchr_iter(b'\n', bytes).count() as u64)
    }

    pub(super) fn index_rows(
        bytes: &[u8],
        rows: u64,
        base_offset: u64,
        index_out: &mut Vec<u8>,
    ) -> Result<u64, JsonlError> {
        // rows ≤ bytes.len(), which fits in memory, so this multiplication cannot overflow.
        index_out.reserve(rows as usize * 8);
        let mut start = 0usize;
        for (end, line) in memchr::memchr_iter(b'\n', bytes).zip(1u64..) {
            check_row(&bytes[start..end]).map_err(|reason| JsonlError { line, reason })?;
            index_out.extend_from_slice(&(base_offset + start as u64).to_le_bytes());
            start = end + 1;
        }
        Ok(rows)
    }

    /// One line without its `\n`: exactly one JSON object, surrounding whitespace allowed.
    pub(super) fn check_row(row: &[u8]) -> Result<(), JsonlReason> {
        match row.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\r')) {
            None => return Err(JsonlReason::EmptyLine),
            Some(b'{') => {}
            Some(_) => return Err(JsonlReason::NotAnObject),
        }
        // from_slice also rejects trailing non-whitespace, so `{}{}` and `{} x` fail here.
        serde_json::from_slice::<serde_json::Value>(row)
            .map(|_| ())
            .map_err(|err| {
                let message = err.to_string();
                // serde_json appends " at line L column C"; we report our own line number.
                let detail = message
                    .rsplit_once(" at line ")
                    .map_or(message.as_str(), |(head, _)| head);
                JsonlReason::InvalidJson {
                    column: err.column(),
                    detail: detail.to_string(),
                }
            })
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(index: &[u8]) -> Vec<u64> {
        index
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn reject(batch: &[u8]) -> JsonlError {
        let mut index = b"prior".to_vec();
        let err = validate_and_index(batch, 0, &mut index).unwrap_err();
        assert_eq!(index, b"prior", "index untouched on error");
        err
    }

    // Goal: offsets are absolute (base + position) and appended after existing entries.
    #[test]
    fn indexes_rows_at_absolute_offsets() {
        let batch = b"{\"a\":1}\n  {\"b\":[1,{\"c\":null}]}\n{}\r\n";
        let mut index = 7u64.to_le_bytes().to_vec();
        let rows = validate_and_index(batch, 1000, &mut index).unwrap();
        assert_eq!(rows, 3);
        assert_eq!(offsets(&index), [7, 1000, 1008, 1031]);
        assert_eq!(batch[1031 - 1000], b'{');
    }

    #[test]
    fn rejects_batch_shape_problems_with_line_numbers() {
        assert_eq!(reject(b"").reason, JsonlReason::EmptyBatch);
        let e = reject(b"{}\n{}");
        assert_eq!((e.line, e.reason), (2, JsonlReason::MissingFinalNewline));
        let e = reject(b"{}\n{\"a\":\"\xff\"}\n");
        assert_eq!((e.line, e.reason), (2, JsonlReason::InvalidUtf8));
        // Overlong encoding of '/' and a lone surrogate are invalid UTF-8 too.
        assert_eq!(
            reject(b"{\"a\":\"\xc0\xaf\"}\n").reason,
            JsonlReason::InvalidUtf8
        );
        assert_eq!(
            reject(b"{\"a\":\"\xed\xa0\x80\"}\n").reason,
            JsonlReason::InvalidUtf8
        );
    }

    #[test]
    fn rejects_lines_that_are_not_exactly_one_object() {
        let cases: &[(&[u8], u64, &str)] = &[
            (b"\n", 1, "empty line"),
            (b"{}\n\n{}\n", 2, "empty line"),
            (b"{}\n \t\r\n", 2, "empty line"),
            (b"[1]\n", 1, "not a JSON object"),
            (b"1\n", 1, "not a JSON object"),
            (b"\"s\"\n", 1, "not a JSON object"),
            (b"null\n", 1, "not a JSON object"),
            (b"{}{}\n", 1, "invalid JSON"),
            (b"{} x\n", 1, "invalid JSON"),
            (b"{\n\"a\":1}\n", 1, "invalid JSON"),
            (b"{\"a\":1,}\n", 1, "invalid JSON"),
            (b"{'a':1}\n", 1, "invalid JSON"),
            (b"{\"a\":\"x\ty\"}\n", 1, "invalid JSON"),
            (b"{\"a\":\"\\q\"}\n", 1, "invalid JSON"),
            (b"{\"a\":NaN}\n", 1, "invalid JSON"),
            (b"{\"a\":1}\0\n", 1, "invalid JSON"),
            (b"{}\n{}\n{\"a\"}\n", 3, "invalid JSON"),
        ];
        for (batch, line, reason) in cases {
            let err = reject(batch);
            assert_eq!(err.line, *line, "{:?}", String::from_utf8_lossy(batch));
            assert!(
                err.to_string().contains(reason),
                "{err} for {:?}",
                String::from_utf8_lossy(batch)
            );
        }
    }

    #[test]
    fn json_error_detail_has_our_line_not_serdes() {
        let err = reject(b"{}\n{\"a\":}\n");
        let JsonlReason::InvalidJson { column, detail } = &err.reason else {
            panic!("{err}")
        };
        assert_eq!(*column, 6);
        assert!(!detail.contains("at line"), "{detail}");
        assert!(
            err.to_string()
                .starts_with("line 2: invalid JSON at column 6"),
            "{err}"
        );
    }

    // Goal: hostile nesting and size neither crash nor overflow the stack; nesting past
    // what a reader can build is refused as it opens, however deep the row goes.
    #[test]
    fn deep_nesting_and_long_rows_are_handled() {
        let depth = 200_000;
        let mut deep = b"{\"a\":".to_vec();
        deep.extend(std::iter::repeat_n(b'[', depth));
        deep.extend(std::iter::repeat_n(b']', depth));
        deep.extend_from_slice(b"}\n");
        match reject(&deep).reason {
            JsonlReason::InvalidJson { column, detail } => {
                // `{"a":` and 126 `[` are open; the 127th `[` (column 5 + 127) is one too many.
                assert_eq!((column, detail.as_str()), (132, "recursion limit exceeded"));
            }
            other => panic!("{other:?}"),
        }
        let mut index = Vec::new();

        deep.truncate(deep.len() - 3); // unbalanced
        deep.extend_from_slice(b"}\n");
        assert!(matches!(
            reject(&deep).reason,
            JsonlReason::InvalidJson { .. }
        ));

        let long = format!("{{\"s\":\"{}\"}}\n", "é".repeat(1 << 20));
        assert_eq!(
            validate_and_index(long.as_bytes(), 0, &mut index).unwrap(),
            1
        );
    }

    #[test]
    fn escapes_and_unicode_are_accepted_as_sent() {
        let batch =
            "{\"p\":\"C:\\\\x\",\"u\":\"\\u00e9\\ud83d\\ude00\",\"raw\":\"日本\"}\n".as_bytes();
        let mut index = Vec::new();
        assert_eq!(validate_and_index(batch, 5, &mut index).unwrap(), 1);
        assert_eq!(offsets(&index), [5]);
    }
}
