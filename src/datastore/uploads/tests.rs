use super::*;
use crate::datastore::path::Datastore;
use crate::ids::{ClientId, FlowId};

fn flow() -> (tempfile::TempDir, FlowDir) {
    let dir = tempfile::tempdir().unwrap();
    let ds = Datastore::open(dir.path().to_path_buf(), true).unwrap();
    let client = ds.client(&ClientId::parse("C.0123456789abcdef").unwrap());
    let flow = client.flow(&FlowId::parse("F.0000000000000001").unwrap());
    std::fs::create_dir_all(flow.path()).unwrap();
    (dir, flow)
}

fn announced(upload: u32, path: &str, data: &[u8]) -> Announced {
    Announced {
        upload,
        artifact: "Generic.Collectors.File".into(),
        path: path.into(),
        size: data.len() as u64,
        sha256: hex::encode(Sha256::digest(data)),
    }
}

/// Sends `data` in two halves and completes it.
fn upload(uploads: &mut FlowUploads, a: &Announced, data: &[u8]) -> UploadRecord {
    let meta = uploads.begin(a).unwrap();
    let half = data.len() / 2;
    assert_eq!(
        uploads.write_at(a.upload, 0, &data[..half]).unwrap(),
        half as u64
    );
    let end = uploads
        .write_at(a.upload, half as u64, &data[half..])
        .unwrap();
    assert_eq!(end, data.len() as u64);
    uploads.complete(&meta).unwrap()
}

// Goal: a complete file is moved into uploads/ under its sanitised path, listed once,
// and nothing is left in uploading/. Method: two chunks, then read the index back.
#[test]
fn a_complete_file_is_moved_and_listed() {
    let (_dir, flow) = flow();
    let mut uploads = FlowUploads::open(&flow).unwrap();
    let a = announced(0, "/var/log/syslog", b"hello world");
    let record = upload(&mut uploads, &a, b"hello world");
    assert_eq!(record.stored, "var/log/syslog");
    assert_eq!(record.error, None);
    assert_eq!(
        fs::read(flow.uploads_dir().join("var/log/syslog")).unwrap(),
        b"hello world"
    );
    assert_eq!(fs::read_dir(flow.uploading_dir()).unwrap().count(), 0);
    let (total, items) = read_index(&flow, 0, 10).unwrap();
    assert_eq!((total, items), (1, vec![record.clone()]));
    assert_eq!(find_record(&flow, 0).unwrap(), Some(record.clone()));
    assert_eq!(find_record(&flow, 1).unwrap(), None);
    assert_eq!(totals(&flow).unwrap(), (1, 11));
    assert!(matches!(uploads.state(0).unwrap(), FileState::Complete(r) if r == record));
    // Another writer (the agent moved) sees the same.
    let mut again = FlowUploads::open(&flow).unwrap();
    assert_eq!(again.done_totals(), (1, 11));
    assert!(matches!(again.state(0).unwrap(), FileState::Complete(_)));
}

// Goal: names taken by other uploads of the flow get `~<n>`; a folder that is a file
// of another upload sends the file under `~<n>/`. Nothing is overwritten.
#[test]
fn taken_names_get_the_upload_number() {
    let (_dir, flow) = flow();
    let mut uploads = FlowUploads::open(&flow).unwrap();
    let first = upload(&mut uploads, &announced(0, "/etc/x", b"one"), b"one");
    let second = upload(&mut uploads, &announced(1, "C:\\etc\\x", b"two"), b"two");
    let folder = upload(&mut uploads, &announced(2, "/etc", b"three"), b"three");
    let under = upload(&mut uploads, &announced(3, "/etc/x/y", b"four"), b"four");
    assert_eq!(first.stored, "etc/x");
    assert_eq!(second.stored, "etc/x~1");
    assert_eq!(folder.stored, "etc~2");
    assert_eq!(under.stored, "~3/etc/x/y");
    for (record, data) in [
        (first, "one"),
        (second, "two"),
        (folder, "three"),
        (under, "four"),
    ] {
        let path = flow.stored_upload_path(&record.stored).unwrap();
        assert_eq!(fs::read(path).unwrap(), data.as_bytes());
    }
}

// Goal: a SHA-256 that differs is recorded as the record's error, with what was
// announced, and the file is kept as it arrived.
#[test]
fn a_mismatch_is_recorded_and_the_file_kept() {
    let (_dir, flow) = flow();
    let mut uploads = FlowUploads::open(&flow).unwrap();
    let mut a = announced(4, "/f", b"expected");
    let claimed = a.sha256.clone();
    a.size = 8;
    let meta = uploads.begin(&a).unwrap();
    uploads.write_at(4, 0, b"received").unwrap();
    let record = uploads.complete(&meta).unwrap();
    assert!(
        record
            .error
            .as_deref()
            .unwrap()
            .contains("SHA-256 mismatch"),
        "{record:?}"
    );
    assert_eq!(record.expected_sha256.as_deref(), Some(claimed.as_str()));
    assert!(record.announced_as(8, &claimed));
    assert!(!record.announced_as(8, &record.sha256));
    assert_eq!(fs::read(flow.uploads_dir().join("f")).unwrap(), b"received");
    assert_eq!(uploads.record_errors().len(), 1);
}

// Goal: a crash after the intent was written, or after the rename, is finished on the
// next open: the file is listed once and is in uploads/. Method: stop a completion
// halfway by hand, then open again.
#[test]
fn an_interrupted_completion_is_finished_on_open() {
    let (_dir, flow) = flow();
    let mut uploads = FlowUploads::open(&flow).unwrap();
    for (n, after_rename) in [(0u32, false), (1, true)] {
        let data = format!("file {n}");
        let a = announced(n, &format!("/d/{n}"), data.as_bytes());
        let meta = uploads.begin(&a).unwrap();
        uploads.write_at(n, 0, data.as_bytes()).unwrap();
        let mut moving = meta.clone();
        moving.moving = Some(Moving {
            stored: format!("d/{n}"),
            size: a.size,
            sha256: a.sha256.clone(),
        });
        write_json(&flow.uploading_meta_path(n), &moving, false).unwrap();
        if after_rename {
            fs::create_dir_all(flow.uploads_dir().join("d")).unwrap();
            fs::rename(flow.uploading_path(n), flow.uploads_dir().join("d/1")).unwrap();
        }
    }
    assert_eq!(read_index(&flow, 0, 10).unwrap().0, 0);
    let reopened = FlowUploads::open(&flow).unwrap();
    assert_eq!(reopened.done_totals().0, 2);
    let (_, items) = read_index(&flow, 0, 10).unwrap();
    for (n, record) in items.iter().enumerate() {
        assert_eq!(record.upload, n as u32);
        let stored = flow.stored_upload_path(&record.stored).unwrap();
        assert_eq!(fs::read_to_string(stored).unwrap(), format!("file {n}"));
    }
    assert_eq!(fs::read_dir(flow.uploading_dir()).unwrap().count(), 0);
}

// Goal: a torn last index line (a crash mid-append) is cut on open and skipped by
// readers; arriving files keep what they stored.
#[test]
fn a_torn_index_line_is_cut_and_arriving_files_resume() {
    let (_dir, flow) = flow();
    let mut uploads = FlowUploads::open(&flow).unwrap();
    upload(&mut uploads, &announced(0, "/a", b"aaaa"), b"aaaa");
    let b = announced(1, "/b", b"bbbbbbbb");
    uploads.begin(&b).unwrap();
    uploads.write_at(1, 0, b"bbb").unwrap();
    let mut index = OpenOptions::new()
        .append(true)
        .open(flow.uploads_index())
        .unwrap();
    index.write_all(b"{\"upload\":9,\"artif").unwrap();
    assert_eq!(read_index(&flow, 0, 10).unwrap().0, 1);
    let mut reopened = FlowUploads::open(&flow).unwrap();
    let text = fs::read_to_string(flow.uploads_index()).unwrap();
    assert!(text.ends_with('\n') && text.lines().count() == 1, "{text}");
    match reopened.state(1).unwrap() {
        FileState::Arriving { meta, stored } => {
            assert!(meta.matches(&b));
            assert_eq!(stored, 3);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(reopened.arriving_bytes(99).unwrap(), 8);
    assert_eq!(reopened.arriving_bytes(1).unwrap(), 0);
    let incomplete = reopened.incomplete().unwrap();
    assert_eq!(incomplete.len(), 1);
    assert_eq!(incomplete[0].1, 3);
}

// Goal: index names that are not plain relative paths are never joined.
#[test]
fn stored_names_from_the_index_are_checked() {
    let (_dir, flow) = flow();
    for bad in ["", "../x", "/etc/passwd", "a/../../b", "a\\b"] {
        assert!(flow.stored_upload_path(bad).is_err(), "{bad}");
    }
    assert!(flow.stored_upload_path("~3/etc/x").is_ok());
}
