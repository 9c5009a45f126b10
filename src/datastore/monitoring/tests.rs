//! Day set tests: batches land in the day of their rows, each seq is written once
//! across days and across reopening (another frontend), a torn append is cut and can be
//! resent, time ranges page across a day boundary via the index, and a clock stepping
//! back keeps keys ordered. Each test builds real files in a tempdir.

use super::*;
use crate::datastore::path::Datastore;
use crate::ids::ClientId;
use std::fs;
use std::io::Write;

/// 2024-03-01T00:00:00Z.
const MARCH_1_MS: u64 = 1_709_251_200_000;
const HOUR_MS: u64 = 3_600_000;

struct Fixture {
    _dir: tempfile::TempDir,
    client: ClientDir,
    artifact: ArtifactName,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ds = Datastore::open(dir.path().to_path_buf(), false).unwrap();
    let client = ds.client(&ClientId::parse("C.0123456789abcdef").unwrap());
    let artifact = ArtifactName::parse("Generic.Client.Stats").unwrap();
    Fixture {
        _dir: dir,
        client,
        artifact,
    }
}

/// One row per time, `{"n":<time>}`.
fn rows(times: &[u64]) -> Vec<u8> {
    times
        .iter()
        .flat_map(|t| format!("{{\"n\":{t}}}\n").into_bytes())
        .collect()
}

fn open(f: &Fixture) -> EventStream {
    EventStream::open(&f.client, &f.artifact).unwrap()
}

fn read_all(f: &Fixture, start_ms: u64, end_ms: u64) -> MonitoringPage {
    read_range(&f.client, &f.artifact, start_ms, end_ms, 0, 10_000).unwrap()
}

fn day_lines(f: &Fixture, ms: u64) -> usize {
    let path = f.client.monitoring_path(&f.artifact, ms);
    fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

#[test]
fn batches_land_in_their_day_once_across_days_and_reopen() {
    let f = fixture();
    let mut stream = open(&f);
    assert_eq!((stream.last_seq(), stream.next_seq()), (None, 0));
    let feb = [MARCH_1_MS - 2 * HOUR_MS, MARCH_1_MS - HOUR_MS];
    let mar = [MARCH_1_MS + HOUR_MS];
    let written = stream.append(100, &rows(&feb), &feb).unwrap();
    assert_eq!(
        written,
        EventAppend::Written {
            rows: 2,
            day: UtcDay::of_unix_ms(feb[0])
        }
    );
    assert!(matches!(
        stream.append(250, &rows(&mar), &mar).unwrap(),
        EventAppend::Written { rows: 1, .. }
    ));
    // A resend of the first batch, whose day file is not the newest: still a duplicate.
    assert_eq!(
        stream.append(100, &rows(&feb), &feb).unwrap(),
        EventAppend::Duplicate
    );
    assert_eq!(
        stream.append(249, &rows(&feb), &feb).unwrap(),
        EventAppend::Duplicate,
        "below the last seq of any day"
    );
    assert_eq!((day_lines(&f, feb[0]), day_lines(&f, mar[0])), (2, 1));
    assert_eq!(stream.next_seq(), 251);

    // Another frontend (a fresh stream) recovers the last seq over all days from disk.
    let mut other = open(&f);
    assert_eq!(other.last_seq(), Some(250));
    assert_eq!(
        other.append(100, &rows(&feb), &feb).unwrap(),
        EventAppend::Duplicate
    );
    assert!(matches!(
        other.append(300, &rows(&feb), &feb).unwrap(),
        EventAppend::Written { .. }
    ));
    // The first stream did not see seq 300; the day file tells it.
    assert_eq!(
        stream.append(300, &rows(&feb), &feb).unwrap(),
        EventAppend::Duplicate
    );
    assert_eq!(stream.last_seq(), Some(300));
    assert_eq!((day_lines(&f, feb[0]), day_lines(&f, mar[0])), (4, 1));
}

#[test]
fn refused_batches_write_nothing() {
    let f = fixture();
    let mut stream = open(&f);
    let t = [MARCH_1_MS, MARCH_1_MS + 1];
    let err = stream.append(1, &rows(&t), &t[..1]).unwrap_err();
    assert!(
        matches!(
            err,
            DatastoreError::EventBatch(EventBatchError::TimeCount { times: 1, rows: 2 })
        ),
        "{err}"
    );
    let two_days = [MARCH_1_MS - 1, MARCH_1_MS];
    let err = stream.append(1, &rows(&two_days), &two_days).unwrap_err();
    assert!(err.to_string().contains("more than one UTC day"), "{err}");
    let err = stream.append(1, b"{\"a\":1}\nnope\n", &t).unwrap_err();
    assert!(
        matches!(
            err,
            DatastoreError::EventBatch(EventBatchError::Jsonl(JsonlError { line: 2, .. }))
        ),
        "{err}"
    );
    let far = [u64::MAX];
    assert!(stream.append(1, &rows(&far), &far).is_err());
    assert!(stream.append(1, b"", &[]).is_err());
    assert!(
        !f.client.monitoring_dir().exists(),
        "no folder or file was created"
    );
    assert_eq!(stream.last_seq(), None);
}

// Goal: a crash between the appends leaves no half batch and does not make the batch a
// duplicate. Method: append rows and index entries of seq 9 without its record, as a
// crash would; a fresh stream must still take seq 9, and the files end up consistent.
#[test]
fn torn_append_is_cut_and_the_batch_can_be_resent() {
    let f = fixture();
    let t = [MARCH_1_MS + 10, MARCH_1_MS + 20];
    open(&f).append(5, &rows(&t), &t).unwrap();
    let paths = f.client.day_paths(&f.artifact, UtcDay::of_unix_ms(t[0]));
    let committed_lens =
        [paths.jsonl(), paths.index(), paths.batches()].map(|p| fs::metadata(p).unwrap().len());
    let append = |p: &std::path::Path, b: &[u8]| {
        fs::OpenOptions::new()
            .append(true)
            .open(p)
            .unwrap()
            .write_all(b)
            .unwrap()
    };
    append(paths.jsonl(), &rows(&t));
    append(paths.index(), &[1u8; 20]);
    append(paths.batches(), &[9u8; 17]);
    assert_eq!(
        read_all(&f, 0, u64::MAX).total_rows,
        2,
        "readers ignore the tail"
    );
    let mut stream = open(&f);
    assert_eq!(stream.last_seq(), Some(5));
    assert!(matches!(
        stream.append(9, &rows(&t), &t).unwrap(),
        EventAppend::Written { rows: 2, .. }
    ));
    let lens =
        [paths.jsonl(), paths.index(), paths.batches()].map(|p| fs::metadata(p).unwrap().len());
    assert_eq!(
        lens,
        [
            committed_lens[0] * 2,
            committed_lens[1] * 2,
            committed_lens[2] * 2
        ],
        "the torn tail was cut before the resend was appended"
    );
    let page = read_all(&f, 0, u64::MAX);
    assert_eq!(page.total_rows, 4);
    // The resent rows' first time is below the day's last key: its key is raised to it.
    assert_eq!(page.items[2], (t[1], b"{\"n\":1709251200010}".to_vec()));
}

// Goal: a range spanning midnight counts and pages rows of both days in order, and
// start_row skips across the boundary. Method: two days of 5 rows each, read in pages.
#[test]
fn time_ranges_page_across_a_day_boundary() {
    let f = fixture();
    let mut stream = open(&f);
    let before: Vec<u64> = (0..5)
        .map(|i| MARCH_1_MS - 5 * HOUR_MS + i * HOUR_MS)
        .collect();
    let after: Vec<u64> = (0..5).map(|i| MARCH_1_MS + i * HOUR_MS).collect();
    stream.append(1, &rows(&before[..3]), &before[..3]).unwrap();
    stream.append(2, &rows(&before[3..]), &before[3..]).unwrap();
    stream.append(3, &rows(&after), &after).unwrap();
    let all: Vec<u64> = before.iter().chain(&after).copied().collect();

    let whole = read_all(&f, 0, u64::MAX);
    assert_eq!(whole.total_rows, 10);
    assert_eq!(whole.items.iter().map(|i| i.0).collect::<Vec<_>>(), all);

    // [before[2], after[3]): rows 2..8 of `all`; paged 4 at a time from row 1.
    let (start, end) = (before[2], after[3]);
    let first = read_range(&f.client, &f.artifact, start, end, 1, 4).unwrap();
    assert_eq!(first.total_rows, 6);
    assert_eq!(
        first.items.iter().map(|i| i.0).collect::<Vec<_>>(),
        all[3..7].to_vec()
    );
    assert_eq!(
        first.items[0].1,
        format!("{{\"n\":{}}}", all[3]).into_bytes()
    );
    let second = read_range(&f.client, &f.artifact, start, end, 5, 4).unwrap();
    assert_eq!(
        second.items.iter().map(|i| i.0).collect::<Vec<_>>(),
        all[7..8].to_vec()
    );
    let past = read_range(&f.client, &f.artifact, start, end, 6, 4).unwrap();
    assert_eq!((past.total_rows, past.items.len()), (6, 0));
    // The end is exclusive and an empty range is empty.
    assert_eq!(read_all(&f, after[4], after[4]).total_rows, 0);
    assert_eq!(read_all(&f, after[4], after[4] + 1).total_rows, 1);
    assert_eq!(read_all(&f, 0, before[0]).total_rows, 0);
    assert_eq!(
        read_range(&f.client, &f.artifact, 0, u64::MAX, 0, 0)
            .unwrap()
            .items
            .len(),
        0
    );
    let listed = list_monitoring(&f.client).unwrap();
    assert_eq!(
        listed[&f.artifact],
        vec![
            (UtcDay::of_unix_ms(before[0]), 5),
            (UtcDay::of_unix_ms(after[0]), 5)
        ]
    );
}

// Goal: an agent clock stepping back (within a batch and between batches) keeps the
// day's time keys non-decreasing, so the binary search stays right. Method: times that
// go 10, 30, 20 | 15, 40; keys must be 10, 30, 30, 30, 40.
#[test]
fn a_clock_stepping_back_keeps_keys_ordered() {
    let f = fixture();
    let mut stream = open(&f);
    let t = |ms: u64| MARCH_1_MS + ms;
    let first = [t(10), t(30), t(20)];
    let second = [t(15), t(40)];
    stream.append(1, &rows(&first), &first).unwrap();
    stream.append(2, &rows(&second), &second).unwrap();
    let page = read_all(&f, 0, u64::MAX);
    let keys: Vec<u64> = page.items.iter().map(|i| i.0).collect();
    assert_eq!(keys, vec![t(10), t(30), t(30), t(30), t(40)]);
    assert_eq!(
        page.items[2].1,
        format!("{{\"n\":{}}}", t(20)).into_bytes(),
        "rows stay as sent"
    );
    assert_eq!(read_all(&f, t(30), t(31)).total_rows, 3);
    assert_eq!(read_all(&f, t(11), t(30)).total_rows, 0);
    assert_eq!(read_all(&f, t(40), t(41)).total_rows, 1);
}
