//! Result set tests: exactly-once appends, crash recovery from every torn state the
//! append order allows, and reads that seek via the index. Each test builds real files
//! in a tempdir and, where it simulates a crash, edits them the way a crash would.

use super::*;
use crate::datastore::path::{ArtifactName, Datastore};
use crate::datastore::rowlog::BatchRecord;
use crate::ids::{ClientId, FlowId};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

struct Fixture {
    _dir: tempfile::TempDir,
    paths: ResultPaths,
}

fn fixture(sync: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ds = Datastore::open(dir.path().to_path_buf(), sync).unwrap();
    let client = ds.client(&ClientId::parse("C.0123456789abcdef").unwrap());
    let flow = client.flow(&FlowId::parse("F.0123456789ABCDEF").unwrap());
    let paths = flow.result_paths(&ArtifactName::parse("Linux.Sys.Pslist").unwrap());
    Fixture { _dir: dir, paths }
}

/// `rows` rows numbered from `first`, e.g. `{"n":3,"pad":"xx"}\n`.
fn batch(first: u64, rows: u64) -> Vec<u8> {
    (first..first + rows)
        .flat_map(|n| {
            format!(
                "{{\"n\":{n},\"pad\":\"{}\"}}\n",
                "x".repeat((n % 7) as usize)
            )
            .into_bytes()
        })
        .collect()
}

fn row(n: u64) -> Vec<u8> {
    let mut b = batch(n, 1);
    b.pop();
    b
}

fn len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

fn append_raw(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn lens(paths: &ResultPaths) -> (u64, u64, u64) {
    (len(paths.jsonl()), len(paths.index()), len(paths.batches()))
}

#[test]
fn appends_only_the_next_batch() {
    for sync in [false, true] {
        let f = fixture(sync);
        let mut set = ResultSet::open(&f.paths).unwrap();
        assert_eq!((set.next_seq(), set.rows(), set.bytes()), (0, 0, 0));
        assert_eq!(
            set.append_batch(1, &batch(0, 3)).unwrap(),
            AppendOutcome::OutOfOrder { expected: 0 }
        );
        assert_eq!(
            set.append_batch(0, &batch(0, 3)).unwrap(),
            AppendOutcome::Written { rows: 3 }
        );
        let after_first = lens(&f.paths);
        assert_eq!(
            set.append_batch(0, &batch(0, 3)).unwrap(),
            AppendOutcome::Duplicate
        );
        assert_eq!(lens(&f.paths), after_first, "a duplicate writes nothing");
        assert_eq!(
            set.append_batch(1, &batch(3, 2)).unwrap(),
            AppendOutcome::Written { rows: 2 }
        );
        assert_eq!(
            set.append_batch(5, &batch(5, 1)).unwrap(),
            AppendOutcome::OutOfOrder { expected: 2 }
        );
        let bytes = (batch(0, 3).len() + batch(3, 2).len()) as u64;
        assert_eq!((set.next_seq(), set.rows(), set.bytes()), (2, 5, bytes));
        assert_eq!(lens(&f.paths), (bytes, 5 * 8, 2 * BATCH_RECORD_BYTES));
        let mut all = batch(0, 3);
        all.extend(batch(3, 2));
        assert_eq!(
            fs::read(f.paths.jsonl()).unwrap(),
            all,
            "bytes stored as sent"
        );
    }
}

#[test]
fn invalid_batch_writes_nothing() {
    let f = fixture(false);
    let mut set = ResultSet::open(&f.paths).unwrap();
    set.append_batch(0, &batch(0, 2)).unwrap();
    let before = lens(&f.paths);
    let mut bad = batch(2, 5);
    bad.extend_from_slice(b"[not an object]\n");
    let err = set.append_batch(1, &bad).unwrap_err();
    let DatastoreError::Jsonl { source } = &err else {
        panic!("{err}")
    };
    assert_eq!(source.line, 6);
    for junk in [&b""[..], b"{}", b"\n", b"{\"a\":1}\n{\"a\":\n"] {
        assert!(matches!(
            set.append_batch(1, junk),
            Err(DatastoreError::Jsonl { .. })
        ));
    }
    assert_eq!(lens(&f.paths), before);
    assert_eq!(set.next_seq(), 1);
    assert_eq!(
        set.append_batch(1, &batch(2, 1)).unwrap(),
        AppendOutcome::Written { rows: 1 }
    );
}

// Goal: frontends that take turns on one result set neither lose nor duplicate rows,
// even when a frontend keeps a stale handle. Method: A writes, B opens and writes,
// A writes again through its old handle.
#[test]
fn frontends_taking_turns_see_each_others_batches() {
    let f = fixture(false);
    let mut a = ResultSet::open(&f.paths).unwrap();
    a.append_batch(0, &batch(0, 2)).unwrap();
    let mut b = ResultSet::open(&f.paths).unwrap();
    assert_eq!((b.next_seq(), b.rows()), (1, 2));
    assert_eq!(
        b.append_batch(0, &batch(0, 2)).unwrap(),
        AppendOutcome::Duplicate
    );
    assert_eq!(
        b.append_batch(1, &batch(2, 3)).unwrap(),
        AppendOutcome::Written { rows: 3 }
    );
    drop(b);
    assert_eq!(
        a.append_batch(1, &batch(2, 3)).unwrap(),
        AppendOutcome::Duplicate,
        "stale handle reloads"
    );
    assert_eq!(
        a.append_batch(2, &batch(5, 1)).unwrap(),
        AppendOutcome::Written { rows: 1 }
    );
    let (total, rows) = read_rows(&f.paths, 0, 100).unwrap();
    assert_eq!(total, 6);
    assert_eq!(rows, (0..6).map(row).collect::<Vec<_>>());
}

#[test]
fn torn_record_is_ignored_and_cut() {
    let f = fixture(false);
    let mut set = ResultSet::open(&f.paths).unwrap();
    set.append_batch(0, &batch(0, 2)).unwrap();
    set.append_batch(1, &batch(2, 2)).unwrap();
    drop(set);
    let committed = lens(&f.paths);
    // A crash in the middle of writing batch 2's record: data and index are complete.
    append_raw(f.paths.jsonl(), &batch(4, 2));
    let mut idx = Vec::new();
    validate_and_index(&batch(4, 2), committed.0, &mut idx).unwrap();
    append_raw(f.paths.index(), &idx);
    append_raw(f.paths.batches(), &[7u8; 13]);
    assert_eq!(
        read_rows(&f.paths, 0, 100).unwrap().0,
        4,
        "readers ignore the torn tail too"
    );
    assert_eq!(
        summary(&f.paths).unwrap(),
        ResultSummary {
            rows: 4,
            bytes: committed.0,
            batches: 2
        }
    );

    let mut set = ResultSet::open(&f.paths).unwrap();
    assert_eq!((set.next_seq(), set.rows()), (2, 4));
    assert_eq!(lens(&f.paths), committed, "uncommitted bytes truncated");
    assert_eq!(
        set.append_batch(2, &batch(4, 2)).unwrap(),
        AppendOutcome::Written { rows: 2 }
    );
    assert_eq!(
        read_rows(&f.paths, 0, 100).unwrap().1,
        (0..6).map(row).collect::<Vec<_>>()
    );
}

#[test]
fn crash_after_rows_before_index_is_cut() {
    let f = fixture(false);
    let mut set = ResultSet::open(&f.paths).unwrap();
    set.append_batch(0, &batch(0, 3)).unwrap();
    drop(set);
    let committed = lens(&f.paths);
    append_raw(f.paths.jsonl(), b"{\"half\":");
    append_raw(f.paths.index(), &[1, 2, 3]);
    let set = ResultSet::open(&f.paths).unwrap();
    assert_eq!((set.next_seq(), set.rows()), (1, 3));
    assert_eq!(lens(&f.paths), committed);
}

// Goal: after a power loss the record may be on disk while data is not (or the record
// is zeros). Method: damage the tail three ways; each time the set falls back to the
// newest batch whose data is really there.
#[test]
fn damaged_tail_falls_back_to_the_last_batch_with_data() {
    let f = fixture(false);
    let mut set = ResultSet::open(&f.paths).unwrap();
    for seq in 0..3 {
        set.append_batch(seq, &batch(seq * 2, 2)).unwrap();
    }
    drop(set);
    // 1: zero-filled records after the real ones.
    append_raw(f.paths.batches(), &[0u8; 64]);
    assert_eq!(ResultSet::open(&f.paths).unwrap().next_seq(), 3);
    assert_eq!(len(f.paths.batches()), 3 * BATCH_RECORD_BYTES);
    // 2: the last record's check no longer matches.
    let mut raw = fs::read(f.paths.batches()).unwrap();
    raw[2 * 32 + 9] ^= 0xff;
    fs::write(f.paths.batches(), &raw).unwrap();
    assert_eq!(ResultSet::open(&f.paths).unwrap().next_seq(), 2);
    // 3: the record survived but the rows it commits did not.
    let mut set = ResultSet::open(&f.paths).unwrap();
    set.append_batch(2, &batch(4, 2)).unwrap();
    drop(set);
    let two_batches = (batch(0, 2).len() + batch(2, 2).len()) as u64;
    OpenOptions::new()
        .write(true)
        .open(f.paths.jsonl())
        .unwrap()
        .set_len(two_batches + 5)
        .unwrap();
    assert_eq!(read_rows(&f.paths, 0, 100).unwrap().0, 4);
    let set = ResultSet::open(&f.paths).unwrap();
    assert_eq!(
        (set.next_seq(), set.rows(), set.bytes()),
        (2, 4, two_batches)
    );
    assert_eq!(lens(&f.paths), (two_batches, 32, 64));
}

#[test]
fn garbage_files_recover_to_empty_without_panicking() {
    let f = fixture(false);
    drop(ResultSet::open(&f.paths).unwrap());
    fs::write(f.paths.batches(), vec![0xAAu8; 1000]).unwrap();
    fs::write(f.paths.jsonl(), b"junk").unwrap();
    assert_eq!(read_rows(&f.paths, 0, 10).unwrap(), (0, Vec::new()));
    let mut set = ResultSet::open(&f.paths).unwrap();
    assert_eq!((set.next_seq(), set.rows()), (0, 0));
    assert_eq!(lens(&f.paths), (0, 0, 0));
    assert_eq!(
        set.append_batch(0, &batch(0, 1)).unwrap(),
        AppendOutcome::Written { rows: 1 }
    );
}

#[test]
fn record_decoding_rejects_implausible_records() {
    let good = BatchRecord {
        seq: 1,
        end_offset: 30,
        end_rows: 4,
    };
    assert_eq!(BatchRecord::decode(&good.encode()), Some(good));
    assert_eq!(BatchRecord::decode(&[0u8; 32]), None);
    assert_eq!(BatchRecord::decode(&good.encode()[..31]), None);
    let fewer_rows_than_batches = BatchRecord {
        seq: 4,
        end_offset: 30,
        end_rows: 4,
    };
    assert!(!fewer_rows_than_batches.fits_at::<ResultFormat>(4));
    assert!(good.fits_at::<ResultFormat>(1));
    assert!(
        !good.fits_at::<ResultFormat>(2),
        "result batches have no gaps"
    );
    for bad in [
        BatchRecord {
            seq: 0,
            end_offset: 5,
            end_rows: 2,
        }, // rows shorter than `{}\n`
        BatchRecord {
            seq: 0,
            end_offset: u64::MAX,
            end_rows: u64::MAX / 4,
        }, // index overflow
    ] {
        assert_eq!(BatchRecord::decode(&bad.encode()), None, "{bad:?}");
    }
}

#[test]
fn read_rows_pages_through_the_index() {
    let f = fixture(false);
    let mut set = ResultSet::open(&f.paths).unwrap();
    for seq in 0..10 {
        set.append_batch(seq, &batch(seq * 100, 100)).unwrap();
    }
    let (total, rows) = read_rows(&f.paths, 995, 10).unwrap();
    assert_eq!(total, 1000);
    assert_eq!(rows, (995..1000).map(row).collect::<Vec<_>>());
    let (_, rows) = read_rows(&f.paths, 250, 3).unwrap();
    assert_eq!(rows, (250..253).map(row).collect::<Vec<_>>());
    assert_eq!(read_rows(&f.paths, 1000, 10).unwrap(), (1000, Vec::new()));
    assert_eq!(
        read_rows(&f.paths, u64::MAX, u64::MAX).unwrap(),
        (1000, Vec::new())
    );
    assert_eq!(read_rows(&f.paths, 0, 0).unwrap(), (1000, Vec::new()));
    assert_eq!(read_rows(&f.paths, 0, u64::MAX).unwrap().1.len(), 1000);
    assert_eq!(
        summary(&f.paths).unwrap(),
        ResultSummary {
            rows: 1000,
            bytes: set.bytes(),
            batches: 10
        }
    );
}

#[test]
fn read_rows_keeps_rows_as_sent_and_caps_the_page() {
    let f = fixture(false);
    let mut set = ResultSet::open(&f.paths).unwrap();
    set.append_batch(0, b"{\"a\":1}\r\n  {\"b\":2}\n").unwrap();
    assert_eq!(
        read_rows(&f.paths, 0, 5).unwrap().1,
        [b"{\"a\":1}\r".to_vec(), b"  {\"b\":2}".to_vec()]
    );

    let many: Vec<u8> = b"{}\n".repeat(MAX_RESULT_PAGE_ROWS as usize + 50);
    set.append_batch(1, &many).unwrap();
    assert_eq!(
        read_rows(&f.paths, 0, u64::MAX).unwrap().1.len() as u64,
        MAX_RESULT_PAGE_ROWS
    );

    let big_row = format!("{{\"s\":\"{}\"}}\n", "y".repeat(3 << 20)).repeat(8);
    set.append_batch(2, big_row.as_bytes()).unwrap();
    let (_, rows) = read_rows(&f.paths, set.rows() - 8, 100).unwrap();
    let page_bytes: usize = rows.iter().map(|r| r.len() + 1).sum();
    assert!((1..8).contains(&rows.len()), "{}", rows.len());
    assert!(page_bytes as u64 <= MAX_RESULT_PAGE_BYTES);
}

#[test]
fn missing_and_damaged_files_read_as_empty_or_error() {
    let f = fixture(false);
    assert_eq!(read_rows(&f.paths, 0, 10).unwrap(), (0, Vec::new()));
    assert_eq!(summary(&f.paths).unwrap(), ResultSummary::default());
    let mut set = ResultSet::open(&f.paths).unwrap();
    set.append_batch(0, &batch(0, 4)).unwrap();
    drop(set);
    // Swap two index entries: offsets out of order must be an error, not junk rows.
    let mut idx = fs::read(f.paths.index()).unwrap();
    idx[8..24].rotate_left(8);
    fs::write(f.paths.index(), &idx).unwrap();
    let err = read_rows(&f.paths, 0, 10).unwrap_err();
    assert!(matches!(err, DatastoreError::Corrupt { .. }), "{err}");
    // An offset that points mid-row.
    let mut idx = fs::read(f.paths.index()).unwrap();
    idx[8..24].rotate_left(8);
    idx[8] += 1;
    fs::write(f.paths.index(), &idx).unwrap();
    let err = read_rows(&f.paths, 0, 10).unwrap_err();
    assert!(matches!(err, DatastoreError::Corrupt { .. }), "{err}");
    fs::remove_file(f.paths.jsonl()).unwrap();
    assert!(read_rows(&f.paths, 0, 10).is_err());
}

// Goal: large batches (written with direct writes where the file system has them) and
// small ones (through the page cache) interleave on one result set without a byte out of
// place, whatever block the previous batch ended in; a second handle and a reader see the
// same rows. Method: batches of sizes either side of the direct-write threshold and of
// the alignment, with fsync on, then every row read back and the files' lengths checked.
#[test]
fn large_and_small_batches_interleave_byte_exact() {
    use crate::limits::DIRECT_WRITE_MIN_BATCH_BYTES;
    let f = fixture(true);
    let mut set = ResultSet::open(&f.paths).unwrap();
    // ~40 bytes per row: 3,000 rows is above the threshold, 5 rows below it.
    let sizes = [5u64, 3_000, 1, 7_000, 2, 3_001, 40_000, 3];
    let mut first = 0;
    let mut expected_bytes = 0u64;
    for (seq, &rows) in sizes.iter().enumerate() {
        let b = batch(first, rows);
        let large = b.len() as u64 >= DIRECT_WRITE_MIN_BATCH_BYTES;
        assert_eq!(large, rows >= 3_000, "size classes as intended");
        assert_eq!(
            set.append_batch(seq as u64, &b).unwrap(),
            AppendOutcome::Written { rows }
        );
        first += rows;
        expected_bytes += b.len() as u64;
    }
    assert_eq!(len(f.paths.jsonl()), expected_bytes);
    assert_eq!(set.rows(), first);
    let (total, _) = read_rows(&f.paths, 0, 1).unwrap();
    assert_eq!(total, first);
    let mut start = 0;
    while start < first {
        let (_, rows) = read_rows(&f.paths, start, 1_000).unwrap();
        assert!(!rows.is_empty());
        for (i, got) in rows.iter().enumerate() {
            assert_eq!(*got, row(start + i as u64), "row {}", start + i as u64);
        }
        start += rows.len() as u64;
    }
    let mut other = ResultSet::open(&f.paths).unwrap();
    assert_eq!(
        (other.next_seq(), other.rows()),
        (sizes.len() as u64, first)
    );
    let more = batch(first, 4_000);
    assert_eq!(
        other.append_batch(sizes.len() as u64, &more).unwrap(),
        AppendOutcome::Written { rows: 4_000 }
    );
    assert_eq!(len(f.paths.jsonl()), expected_bytes + more.len() as u64);
    let (_, last) = read_rows(&f.paths, first + 3_999, 10).unwrap();
    assert_eq!(last, vec![row(first + 3_999)]);
}
