//! Hunt recruitment's file work per batch of recruits (the recruiter writes
//! RECRUIT_BATCH_COUNT of them per trip to the blocking pool): what a recruit costs on
//! disk before its task can go out. Two arms in the same run, on fresh clients in a temp
//! folder (this machine's disk; set TMPDIR to a tmpfs to see the CPU part alone):
//! - `folder_and_three_documents`: the flow as a collection's (folder, request.json,
//!   status.json, queue entry) and the participants line: what a recruit wrote before
//!   hunt flows were made at the agent's first answer;
//! - `queue_entry_renamed`: the recruiting journal line, one queue entry naming the hunt
//!   written as a temp file and renamed, and the participants line;
//! - `queue_entry`: the same with the entry created in place (one create and one write):
//!   what a recruit writes now.
//!
//! Run: `cargo bench --bench recruitment -- --warm-up-time 1 --measurement-time 2`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use packhunt::datastore::atomic::write_atomic;
use packhunt::datastore::flow::{write_hunt_recruit, ArtifactRequestDoc, FlowRequest};
use packhunt::datastore::hunt::{self, HuntDoc, HuntState};
use packhunt::datastore::{write_scheduled, ArtifactName, Datastore};
use packhunt::ids::{ClientId, FlowId, HuntId};

/// Recruits per batch, as the recruiter writes them (`limits::RECRUIT_BATCH_COUNT`).
const BATCH: usize = packhunt::limits::RECRUIT_BATCH_COUNT;

struct Fixture {
    _dir: tempfile::TempDir,
    ds: Datastore,
    hunt: HuntDoc,
    clients: Vec<ClientId>,
}

/// A datastore with one running hunt and `BATCH` clients that have facts (their folders
/// exist), as candidates have when they are recruited.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let ds = Datastore::open(dir.path().to_path_buf(), false).expect("datastore");
    let hunt = HuntDoc {
        hunt_id: HuntId::random(),
        artifacts: vec![ArtifactRequestDoc {
            name: ArtifactName::parse("Generic.Client.Info").expect("name"),
            parameters: Default::default(),
        }],
        condition: Default::default(),
        create_time_ms: 1,
        expires_ms: 0,
        state: HuntState::Running,
        start_time_ms: Some(1),
        stop_time_ms: None,
        limits: Default::default(),
    };
    hunt::write_hunt(&ds, &hunt).expect("hunt");
    let clients = (0..BATCH as u64)
        .map(|n| {
            let id = ClientId::parse(&format!("C.{n:016x}")).expect("id");
            std::fs::create_dir_all(ds.client(&id).path()).expect("client folder");
            id
        })
        .collect();
    Fixture {
        _dir: dir,
        ds,
        hunt,
        clients,
    }
}

fn recruits(f: &Fixture) -> Vec<FlowRequest> {
    f.clients
        .iter()
        .map(|c| FlowRequest {
            flow_id: FlowId::random(),
            client_id: c.clone(),
            artifacts: f.hunt.artifacts.clone(),
            create_time_ms: 1,
            create_time_us: 1_000,
            hunt_id: Some(f.hunt.hunt_id.to_string()),
            limits: f.hunt.limits,
        })
        .collect()
}

fn pairs(batch: &[FlowRequest]) -> Vec<(ClientId, FlowId)> {
    batch
        .iter()
        .map(|r| (r.client_id.clone(), r.flow_id.clone()))
        .collect()
}

/// Times `iters` batches, each on a fresh fixture (made outside the timed part).
fn timed(iters: u64, write: impl Fn(&Fixture, &[FlowRequest])) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let f = fixture();
        let batch = recruits(&f);
        let started = Instant::now();
        write(&f, &batch);
        total += started.elapsed();
    }
    total
}

fn bench_recruitment(c: &mut Criterion) {
    let mut group = c.benchmark_group("recruit_batch");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.bench_function("folder_and_three_documents", |b| {
        b.iter_custom(|iters| {
            timed(iters, |f, batch| {
                for r in batch {
                    write_scheduled(&f.ds.client(&r.client_id), r).expect("scheduled");
                }
                hunt::append_participants(&f.ds, &f.hunt.hunt_id, &pairs(batch)).expect("line");
            })
        })
    });
    group.bench_function("queue_entry_renamed", |b| {
        b.iter_custom(|iters| {
            timed(iters, |f, batch| {
                let lines = pairs(batch);
                hunt::append_recruiting(&f.ds, &f.hunt.hunt_id, &lines).expect("journal");
                for r in batch {
                    let client = f.ds.client(&r.client_id);
                    let entry = serde_json::json!({
                        "hunt_id": f.hunt.hunt_id.to_string(),
                        "create_time_us": r.create_time_us,
                    });
                    let bytes = serde_json::to_vec(&entry).expect("entry");
                    let path = client.task_path(&r.flow_id);
                    if write_atomic(&path, &bytes, false).is_err() {
                        std::fs::create_dir_all(client.tasks_dir()).expect("tasks folder");
                        write_atomic(&path, &bytes, false).expect("entry");
                    }
                }
                hunt::append_participants(&f.ds, &f.hunt.hunt_id, &lines).expect("line");
            })
        })
    });
    group.bench_function("queue_entry", |b| {
        b.iter_custom(|iters| {
            timed(iters, |f, batch| {
                let lines = pairs(batch);
                hunt::append_recruiting(&f.ds, &f.hunt.hunt_id, &lines).expect("journal");
                for r in batch {
                    write_hunt_recruit(&f.ds.client(&r.client_id), r).expect("entry");
                }
                hunt::append_participants(&f.ds, &f.hunt.hunt_id, &lines).expect("line");
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench_recruitment);
criterion_main!(benches);
