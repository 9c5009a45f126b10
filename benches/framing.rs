//! Protobuf framing on the agent path: encoding a task frame (server push), decoding a
//! result-batch upload (zero-copy `bytes` field), and reassembling a task stream that
//! arrives in small chunks. Baseline: a plain memcpy of the same bytes.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use packhunt::protocol::framing::{self, FrameDecoder};
use packhunt::protocol::pb;

fn task() -> pb::ServerMessage {
    let artifacts = [
        "Generic.Client.Info",
        "Linux.Sys.Pslist",
        "Generic.Files.Glob",
    ]
    .iter()
    .map(|n| pb::ArtifactRequest {
        name: n.to_string(),
        parameters: [("pattern".to_string(), "/etc/*.conf".to_string())].into(),
    })
    .collect();
    let task = pb::Task {
        flow_id: "F.0123456789ABCDEF".into(),
        artifacts,
        create_time_us: 1_795_000_000_000_000,
        hunt_id: String::new(),
        limits: None,
    };
    pb::ServerMessage {
        kind: Some(pb::server_message::Kind::Task(task)),
    }
}

fn upload(rows_bytes: usize) -> Bytes {
    let row = br#"{"pid":1234,"ppid":1,"name":"sshd","exe":"/usr/sbin/sshd","cmdline":"sshd: /usr/sbin/sshd -D [listener]","username":"root","uid":0,"state":"S","rss_bytes":7340032,"start_time":1795000000}"#;
    let mut jsonl = Vec::with_capacity(rows_bytes + row.len());
    while jsonl.len() < rows_bytes {
        jsonl.extend_from_slice(row);
        jsonl.push(b'\n');
    }
    let batch = pb::ResultBatch {
        flow_id: "F.0123456789ABCDEF".into(),
        artifact: "Linux.Sys.Pslist".into(),
        seq: 7,
        jsonl: jsonl.into(),
        row_count: 0,
    };
    framing::encode(&pb::Upload {
        kind: Some(pb::upload::Kind::Result(batch)),
    })
}

fn bench_framing(c: &mut Criterion) {
    let mut g = c.benchmark_group("framing");
    let t = task();
    g.bench_function("encode_task_frame", |b| {
        b.iter(|| framing::encode(black_box(&t)))
    });

    let body = upload(1 << 20);
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("decode_1MiB_upload", |b| {
        b.iter(|| framing::decode_single::<pb::Upload>(black_box(body.clone()), 5 << 20).unwrap())
    });
    g.bench_function("baseline_memcpy_1MiB", |b| {
        b.iter(|| black_box(body.to_vec()))
    });

    let stream: Vec<u8> = (0..256)
        .flat_map(|_| framing::encode(&t).to_vec())
        .collect();
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("reassemble_256_tasks_in_1KiB_chunks", |b| {
        b.iter(|| {
            let mut dec = FrameDecoder::new(1 << 20);
            let mut n = 0;
            for chunk in stream.chunks(1024) {
                dec.extend(chunk);
                while let Some(m) = dec.next_message::<pb::ServerMessage>().unwrap() {
                    black_box(m);
                    n += 1;
                }
            }
            assert_eq!(n, 256);
        })
    });
    g.finish();
}

criterion_group!(benches, bench_framing);
criterion_main!(benches);
