//! How an artifact's rows are cut into result batches: spans of whole lines, each within
//! the server's upload limit, numbered by position (batch `seq` = index in the layout).
//!
//! Owns: cutting JSONL at line ends, and re-cutting the front batch after a 413. Must
//! not: read or write files (spans are offsets into the artifact's rows wherever they
//! are kept).

use serde::{Deserialize, Serialize};

/// One batch: bytes `start..end` of the artifact's rows, `rows` lines.
/// Invariant: `start < end`, both at line boundaries, and `rows >= 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub start: u64,
    pub end: u64,
    pub rows: u32,
}

impl Span {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// Cuts `jsonl` at line ends into spans of at most `max_bytes` (a longer single line is a
/// span of its own).
pub fn spans(jsonl: &[u8], max_bytes: u64) -> Vec<Span> {
    spans_from(jsonl, 0, max_bytes)
}

/// `spans` of `jsonl`, which sits at `base` in the artifact's rows.
fn spans_from(jsonl: &[u8], base: u64, max_bytes: u64) -> Vec<Span> {
    let mut out = Vec::new();
    let (mut start, mut pos, mut rows) = (0usize, 0usize, 0u32);
    while pos < jsonl.len() {
        let end = jsonl[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(jsonl.len(), |i| pos + i + 1);
        if (end - start) as u64 > max_bytes && rows > 0 {
            out.push(Span {
                start: base + start as u64,
                end: base + pos as u64,
                rows,
            });
            start = pos;
            rows = 0;
        }
        rows += 1;
        pos = end;
    }
    if rows > 0 {
        out.push(Span {
            start: base + start as u64,
            end: base + jsonl.len() as u64,
            rows,
        });
    }
    out
}

/// The server refused the batch `bytes` (laid out as `span`) as too large: two spans of
/// about half each, or None when it is a single row (which can't be sent at all).
pub fn halve(span: Span, bytes: &[u8]) -> Option<(Span, Span)> {
    if span.rows < 2 {
        return None;
    }
    let mid_row = span.rows / 2;
    let cut = bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .nth(mid_row as usize - 1)
        .map(|(i, _)| i as u64 + 1)?;
    if cut >= span.len() {
        return None;
    }
    Some((
        Span {
            start: span.start,
            end: span.start + cut,
            rows: mid_row,
        },
        Span {
            start: span.start + cut,
            end: span.end,
            rows: span.rows - mid_row,
        },
    ))
}

/// The first `max_rows` lines of `jsonl` (all of it when it has fewer).
pub fn first_rows(jsonl: &[u8], max_rows: u64) -> usize {
    if max_rows == 0 {
        return 0;
    }
    jsonl
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .nth(max_rows as usize - 1)
        .map_or(jsonl.len(), |(i, _)| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, width: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "x".repeat(width)).into_bytes())
            .collect()
    }

    #[test]
    fn spans_keep_every_row_once_under_the_cap() {
        let data = rows(100, 50);
        let parts = spans(&data, 700);
        assert!(parts.iter().all(|s| s.len() <= 700));
        assert_eq!(parts.iter().map(|s| s.rows).sum::<u32>(), 100);
        assert_eq!(parts[0].start, 0);
        assert_eq!(parts.last().unwrap().end, data.len() as u64);
        assert!(parts.windows(2).all(|w| w[0].end == w[1].start));
        assert!(parts.iter().all(|s| data[s.end as usize - 1] == b'\n'));
    }

    #[test]
    fn halving_cuts_at_a_line_and_a_single_row_cannot_be_halved() {
        let data = rows(5, 10);
        let whole = spans(&data, 1 << 20)[0];
        let (a, b) = halve(whole, &data).unwrap();
        assert_eq!((a.rows, b.rows), (2, 3));
        assert_eq!((a.start, a.end, b.end), (0, b.start, data.len() as u64));
        let one = spans(&rows(1, 10), 1 << 20)[0];
        assert!(halve(one, &rows(1, 10)).is_none());
    }

    #[test]
    fn first_rows_counts_lines() {
        let data = rows(4, 3);
        assert_eq!(first_rows(&data, 0), 0);
        assert_eq!(first_rows(&data, 9), data.len());
        let two = first_rows(&data, 2);
        assert_eq!(data[..two].iter().filter(|&&b| b == b'\n').count(), 2);
    }
}
