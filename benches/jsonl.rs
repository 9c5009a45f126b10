//! Result ingest hot path: JSONL validate+index, and validate+index+append to a result
//! set, on a ~1 MiB batch of process-listing rows (~210 bytes each, like
//! `Linux.Sys.Pslist`). Each group carries a same-run baseline:
//! - `newline_scan` (memchr count): the floor any line-based validator pays;
//! - `raw_append`: the same bytes appended to a plain file, i.e. what the disk and page
//!   cache cost without validation, indexing or the commit record;
//! - in `validator`, `serde_reference`: what the scanner must agree with (a UTF-8 pass,
//!   then serde_json's `Value` parse per row, as a reader does) beside the scanner, on the pslist batch and on a
//!   batch of nested rows (~420 bytes: arrays, objects three deep, escapes, non-ASCII).
//!
//! Run: `cargo bench --bench jsonl -- --warm-up-time 1 --measurement-time 2`

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use packhunt::datastore::jsonl::serde_reference;
use packhunt::datastore::{validate_and_index, ArtifactName, Datastore, ResultSet};
use packhunt::ids::{ClientId, FlowId};

const BATCH_TARGET_BYTES: usize = 1024 * 1024;
/// Appends per fresh result set, so a long measurement doesn't fill the disk
/// (256 × 1 MiB); recreating the files is outside the timed region.
const APPENDS_PER_FILESET: u64 = 256;

/// Rows shaped like a process listing, with varying lengths and escapes.
fn pslist_batch() -> Vec<u8> {
    let names = [
        "sshd",
        "systemd-journald",
        "nginx: worker process",
        "postgres",
        "bash",
        "python3",
    ];
    let mut out = Vec::with_capacity(BATCH_TARGET_BYTES + 512);
    let mut pid = 1u64;
    while out.len() < BATCH_TARGET_BYTES {
        let name = names[(pid % names.len() as u64) as usize];
        let row = format!(
            concat!(
                "{{\"Pid\":{},\"Ppid\":{},\"Name\":\"{}\",\"Username\":\"root\",",
                "\"Exe\":\"/usr/sbin/{}\",\"CommandLine\":\"{} -D --config \\\"/etc/{}.conf\\\"\",",
                "\"CreateTime\":\"2024-05-01T12:34:{:02}Z\",\"RssBytes\":{},\"VmsBytes\":{}}}\n"
            ),
            pid,
            pid / 3 + 1,
            name,
            name,
            name,
            name,
            pid % 60,
            pid * 4096 + 7_340_032,
            pid * 8192 + 15_204_352,
        );
        out.extend_from_slice(row.as_bytes());
        pid += 1;
    }
    out
}

/// Rows with arrays and objects nested three deep, floats, literals, `\u` escapes and
/// non-ASCII text: what a validator pays beyond flat rows.
fn nested_batch() -> Vec<u8> {
    let mut out = Vec::with_capacity(BATCH_TARGET_BYTES + 1024);
    let mut pid = 1u64;
    while out.len() < BATCH_TARGET_BYTES {
        let row = format!(
            concat!(
                "{{\"Pid\":{},\"Name\":\"nginx: worker\",",
                "\"Cmd\":[\"/usr/sbin/nginx\",\"-g\",\"daemon off;\"],",
                "\"Env\":{{\"PATH\":\"/usr/local/bin:/usr/bin:/bin\",\"LANG\":\"C.UTF-8\"}},",
                "\"Threads\":[{{\"Tid\":{},\"State\":\"S\",\"Cpu\":0.25}},",
                "{{\"Tid\":{},\"State\":\"R\",\"Cpu\":1.5e-3}}],",
                "\"Maps\":{{\"heap\":{{\"Start\":{},\"Size\":135168,\"Perms\":\"rw-p\"}}}},",
                "\"Label\":\"caf\\u00e9 \\\"日本\\\"\",\"Ok\":true,\"Parent\":null,",
                "\"Score\":-12.5e+2}}\n"
            ),
            pid,
            pid + 1,
            pid + 2,
            pid * 4096 + 94_371_840,
        );
        out.extend_from_slice(row.as_bytes());
        pid += 3;
    }
    out
}

fn bench_validate(c: &mut Criterion) {
    let batch = pslist_batch();
    let rows = memchr::memchr_iter(b'\n', &batch).count();
    eprintln!(
        "batch: {} bytes, {} rows, {} bytes/row",
        batch.len(),
        rows,
        batch.len() / rows
    );
    let mut group = c.benchmark_group("jsonl_1MiB");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function("newline_scan_baseline", |b| {
        b.iter(|| memchr::memchr_iter(b'\n', black_box(&batch)).count())
    });
    let mut index = Vec::with_capacity(rows * 8);
    group.bench_function("validate_index", |b| {
        b.iter(|| {
            index.clear();
            validate_and_index(black_box(&batch), 0, &mut index).expect("valid batch")
        })
    });
    group.finish();
}

/// The previous check and the scanner on the same batches in the same run, with the
/// newline-count floor.
fn bench_validator(c: &mut Criterion) {
    let mut group = c.benchmark_group("validator");
    for (name, batch) in [("pslist", pslist_batch()), ("nested", nested_batch())] {
        let rows = memchr::memchr_iter(b'\n', &batch).count();
        eprintln!("{name}: {} bytes, {rows} rows", batch.len());
        let mut index = Vec::with_capacity(rows * 8);
        assert_eq!(
            validate_and_index(&batch, 0, &mut index),
            serde_reference(&batch, 0, &mut Vec::new()),
            "{name}: both checks accept the batch"
        );
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("newline_scan_floor", name),
            &batch,
            |b, batch| b.iter(|| memchr::memchr_iter(b'\n', black_box(batch)).count()),
        );
        group.bench_with_input(
            BenchmarkId::new("serde_reference", name),
            &batch,
            |b, batch| {
                b.iter(|| {
                    index.clear();
                    serde_reference(black_box(batch), 0, &mut index).expect("valid batch")
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("scanner", name), &batch, |b, batch| {
            b.iter(|| {
                index.clear();
                validate_and_index(black_box(batch), 0, &mut index).expect("valid batch")
            })
        });
    }
    group.finish();
}

fn bench_append(c: &mut Criterion) {
    let batch = pslist_batch();
    let mut group = c.benchmark_group("append_1MiB");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function("raw_append_baseline", |b| {
        b.iter_custom(|iters| timed_in_fresh_files(iters, |dir, n| raw_appends(dir, n, &batch)))
    });
    group.bench_function("resultset_validate_index_append", |b| {
        b.iter_custom(|iters| {
            timed_in_fresh_files(iters, |dir, n| resultset_appends(dir, n, &batch))
        })
    });
    group.finish();
}

/// Runs `iters` appends in chunks, each chunk in a fresh tempdir; returns only the
/// time spent appending.
fn timed_in_fresh_files(
    iters: u64,
    mut run: impl FnMut(&std::path::Path, u64) -> Duration,
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = (iters - done).min(APPENDS_PER_FILESET);
        total += run(dir.path(), n);
        done += n;
    }
    total
}

fn raw_appends(dir: &std::path::Path, n: u64, batch: &[u8]) -> Duration {
    let mut file: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("raw.jsonl"))
        .expect("open");
    let start = Instant::now();
    for _ in 0..n {
        file.write_all(batch).expect("append");
    }
    start.elapsed()
}

fn resultset_appends(dir: &std::path::Path, n: u64, batch: &[u8]) -> Duration {
    let ds = Datastore::open(dir.to_path_buf(), false).expect("datastore");
    let client = ds.client(&ClientId::parse("C.0123456789abcdef").expect("id"));
    let flow = client.flow(&FlowId::parse("F.0123456789ABCDEF").expect("id"));
    let paths = flow.result_paths(&ArtifactName::parse("Linux.Sys.Pslist").expect("name"));
    let mut set = ResultSet::open(&paths).expect("open");
    let start = Instant::now();
    for seq in 0..n {
        set.append_batch(seq, batch).expect("append");
    }
    start.elapsed()
}

criterion_group!(benches, bench_validate, bench_validator, bench_append);
criterion_main!(benches);
