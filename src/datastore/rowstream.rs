//! Whole result sets read front to back (CSV and JSONL downloads, zip exports): the
//! committed rows only, in bounded memory (one read buffer and the current row), never
//! the whole file at once. A torn tail past the last commit record is never read.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Take, Write};

use super::path::ResultPaths;
use super::resultset::ResultFormat;
use super::rowlog::RowReader;
use super::{io_error, DatastoreError};
use crate::limits::EXPORT_READ_BUFFER_BYTES;

/// The committed rows of one result set, read in order.
pub struct CommittedRows {
    /// None for a result set never written.
    reader: Option<BufReader<Take<File>>>,
    rows: u64,
    bytes: u64,
    /// Rows still to read. Invariant: ≤ `rows`.
    rows_left: u64,
    line: Vec<u8>,
}

/// Opens a result set for reading from its first row. A result set never written reads
/// as empty (`rows() == 0`).
pub fn open_committed(paths: &ResultPaths) -> Result<CommittedRows, DatastoreError> {
    let Some(log) = RowReader::<ResultFormat>::open(paths)? else {
        return Ok(CommittedRows::empty());
    };
    let committed = log.committed();
    drop(log);
    let file = File::open(paths.jsonl()).map_err(io_error("open", paths.jsonl()))?;
    Ok(CommittedRows {
        reader: Some(BufReader::with_capacity(
            EXPORT_READ_BUFFER_BYTES,
            file.take(committed.end_offset),
        )),
        rows: committed.end_rows,
        bytes: committed.end_offset,
        rows_left: committed.end_rows,
        line: Vec::new(),
    })
}

impl CommittedRows {
    fn empty() -> Self {
        Self {
            reader: None,
            rows: 0,
            bytes: 0,
            rows_left: 0,
            line: Vec::new(),
        }
    }

    /// Committed rows when it was opened.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Committed bytes (rows with their `\n`) when it was opened.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The next row without its `\n`, or None after the last committed one.
    pub fn next_row(&mut self) -> io::Result<Option<&[u8]>> {
        let Some(reader) = self.reader.as_mut().filter(|_| self.rows_left > 0) else {
            return Ok(None);
        };
        self.line.clear();
        reader.read_until(b'\n', &mut self.line)?;
        // Paired check on what append wrote: every committed row ends with `\n`.
        if self.line.pop() != Some(b'\n') {
            return Err(io::Error::other(
                "result set ends before its committed rows (damaged .jsonl)",
            ));
        }
        self.rows_left -= 1;
        Ok(Some(&self.line))
    }

    /// Copies the committed rows, byte for byte, to `out`; returns the bytes copied.
    pub fn copy_to(mut self, out: &mut impl Write) -> io::Result<u64> {
        let copied = match self.reader.as_mut() {
            Some(reader) => io::copy(reader, out)?,
            None => 0,
        };
        if copied != self.bytes {
            return Err(io::Error::other(
                "result set shorter than its committed bytes (damaged .jsonl)",
            ));
        }
        Ok(copied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::{ArtifactName, Datastore, ResultSet};
    use crate::ids::{ClientId, FlowId};

    #[test]
    fn reads_committed_rows_in_order_and_ignores_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_path_buf(), false).unwrap();
        let client = ClientId::parse("C.0000000000000001").unwrap();
        let paths = ds
            .client(&client)
            .flow(&FlowId::random())
            .result_paths(&ArtifactName::parse("Linux.Sys.Users").unwrap());
        assert_eq!(open_committed(&paths).unwrap().rows(), 0);
        std::fs::create_dir_all(paths.dir()).unwrap();
        let mut set = ResultSet::open(&paths).unwrap();
        set.append_batch(0, b"{\"a\":1}\n{\"a\":2}\n").unwrap();
        set.append_batch(1, b"{\"b\":\"x\"}\n").unwrap();
        // Bytes past the last commit (a crash mid-append) are not rows.
        std::fs::OpenOptions::new()
            .append(true)
            .open(paths.jsonl())
            .unwrap()
            .write_all(b"{\"torn\":")
            .unwrap();
        let mut rows = open_committed(&paths).unwrap();
        assert_eq!(rows.rows(), 3);
        let mut got = Vec::new();
        while let Some(row) = rows.next_row().unwrap() {
            got.push(String::from_utf8(row.to_vec()).unwrap());
        }
        assert_eq!(got, ["{\"a\":1}", "{\"a\":2}", "{\"b\":\"x\"}"]);
        let mut out = Vec::new();
        open_committed(&paths).unwrap().copy_to(&mut out).unwrap();
        assert_eq!(out, b"{\"a\":1}\n{\"a\":2}\n{\"b\":\"x\"}\n");
    }
}
