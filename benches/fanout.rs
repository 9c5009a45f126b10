//! Notification fan-out: from "a collection was scheduled for client X" to "X's task
//! stream queue holds the frame", without the disk read that builds the frame.
//!
//! - `registry_push_one/{1000,19000}`: `Registry::push` for one client among N live
//!   sessions, a different client each push (the API scheduling single collections).
//!   Baseline `lookup_only`: the same `HashMap<ClientId, _>` lookups alone, the floor
//!   of any registry keyed by client id.
//! - `registry_fanout_all/{1000,19000}`: one frame pushed to every one of N sessions
//!   (tasking the whole fleet at once); throughput is sessions per second. Baseline
//!   `mpsc_only`: `try_send` on N bare channels, what queueing costs without the
//!   registry's lookup and duplicate check.
//! - `mesh_hop/notify_1024`: the cross-shard hop on the real queues (`mesh::build`,
//!   `Notifier::notify`) between two glommio executors, one way: time from the first
//!   send on the priority executor until the shard executor has received all of them.
//!
//! Draining the session queues and clearing their duplicate sets between batches is
//! outside the timed region: otherwise a full queue (`SESSION_TASK_QUEUE_COUNT`) or an
//! already-delivered flow would turn pushes into cheap no-ops.
//!
//! Run: `cargo bench --bench fanout -- --warm-up-time 1 --measurement-time 2`

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::channel::mpsc;
use glommio::{LocalExecutorBuilder, Placement};
use packhunt::ids::{ClientId, FlowId};
use packhunt::limits::MIN_IO_MEMORY_BYTES;
use packhunt::notify::mesh::{self, Notifier, ShardMessage};
use packhunt::protocol::pb;
use packhunt::runtime::channel::connect_polled;
use packhunt::sessions::registry::{Registration, Registry};
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Fleet sizes: a small deployment, and one a little past the 15k agents of tuning.md's
/// largest measured fleet.
const FLEET_SIZES: [usize; 2] = [1_000, 19_000];
/// Pushes timed between two drains; at most the smallest fleet, so one batch never
/// visits a session twice.
const PUSH_BATCH: usize = 512;
/// Notifications per mesh iteration.
const MESH_MESSAGES: u64 = 1024;

const _: () = assert!(PUSH_BATCH <= FLEET_SIZES[0]);

/// A frame shaped like a real task push.
fn task_frame() -> Bytes {
    let artifacts = ["Generic.Client.Info", "Linux.Sys.Pslist"]
        .iter()
        .map(|n| pb::ArtifactRequest {
            name: n.to_string(),
            parameters: Default::default(),
        })
        .collect();
    let task = pb::Task {
        flow_id: "F.0123456789ABCDEF".into(),
        artifacts,
        create_time_us: 1_795_000_000_000_000,
        hunt_id: String::new(),
        limits: None,
    };
    packhunt::protocol::tasks::task_frame(task)
}

fn client_id(i: usize) -> ClientId {
    ClientId::parse(&format!("C.{i:016x}")).expect("16 lowercase hex digits")
}

fn flow_id(i: usize) -> FlowId {
    FlowId::parse(&format!("F.{i:016X}")).expect("16 uppercase hex digits")
}

/// N registered sessions and the receiving ends their task streams would hold.
struct Fleet {
    registry: Registry,
    ids: Vec<ClientId>,
    registrations: Vec<Registration>,
    /// Push targets in a fixed random order, so consecutive pushes miss the cache the
    /// way unrelated API requests do.
    order: Vec<usize>,
    cursor: Cell<usize>,
}

impl Fleet {
    fn new(sessions: usize) -> Self {
        let registry = Registry::default();
        let ids: Vec<ClientId> = (0..sessions).map(client_id).collect();
        let registrations = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                registry
                    .register(id, i as u64)
                    .expect("an open registry takes every stream")
            })
            .collect();
        let mut order: Vec<usize> = (0..sessions).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
        Self {
            registry,
            ids,
            registrations,
            order,
            cursor: Cell::new(0),
        }
    }

    /// Empties the session's queue and forgets what it was sent, as a fresh stream.
    fn reset(&mut self, session: usize) {
        let registration = &mut self.registrations[session];
        while let Ok(frame) = registration.frames.try_recv() {
            black_box(frame);
        }
        registration.delivered.borrow_mut().clear();
    }

    /// The next `count` push targets (distinct while `count <= sessions`).
    fn next_targets(&self, count: usize) -> Vec<usize> {
        let start = self.cursor.get();
        self.cursor.set((start + count) % self.order.len());
        (0..count)
            .map(|i| self.order[(start + i) % self.order.len()])
            .collect()
    }
}

fn bench_push_one(c: &mut Criterion) {
    let mut g = c.benchmark_group("registry_push_one");
    g.throughput(Throughput::Elements(1));
    let frame = task_frame();
    let flows: Vec<FlowId> = (0..PUSH_BATCH).map(flow_id).collect();
    for sessions in FLEET_SIZES {
        let mut fleet = Fleet::new(sessions);
        g.bench_with_input(BenchmarkId::new("push", sessions), &sessions, |b, _| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let targets =
                        fleet.next_targets((iters - done).min(PUSH_BATCH as u64) as usize);
                    let mut queued = 0;
                    let start = Instant::now();
                    for (target, flow) in targets.iter().zip(&flows) {
                        queued += fleet
                            .registry
                            .push(&fleet.ids[*target], flow, frame.clone())
                            as usize;
                    }
                    spent += start.elapsed();
                    // A refused push is a cheap no-op: timing those would flatter.
                    assert_eq!(queued, targets.len());
                    done += targets.len() as u64;
                    targets.iter().for_each(|t| fleet.reset(*t));
                }
                spent
            })
        });

        let lookup: HashMap<ClientId, u64> = fleet.ids.iter().cloned().zip(0..).collect();
        g.bench_with_input(
            BenchmarkId::new("lookup_only", sessions),
            &sessions,
            |b, _| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    let mut done = 0;
                    while done < iters {
                        let targets =
                            fleet.next_targets((iters - done).min(PUSH_BATCH as u64) as usize);
                        let start = Instant::now();
                        for target in &targets {
                            black_box(lookup.get(&fleet.ids[*target]));
                        }
                        spent += start.elapsed();
                        done += targets.len() as u64;
                    }
                    spent
                })
            },
        );
    }
    g.finish();
}

fn bench_fanout_all(c: &mut Criterion) {
    let mut g = c.benchmark_group("registry_fanout_all");
    let frame = task_frame();
    let flow = flow_id(1);
    for sessions in FLEET_SIZES {
        g.throughput(Throughput::Elements(sessions as u64));
        let mut fleet = Fleet::new(sessions);
        g.bench_with_input(
            BenchmarkId::new("push_every_session", sessions),
            &sessions,
            |b, _| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let mut queued = 0;
                        let start = Instant::now();
                        for id in &fleet.ids {
                            queued += fleet.registry.push(id, &flow, frame.clone()) as usize;
                        }
                        spent += start.elapsed();
                        assert_eq!(queued, sessions);
                        (0..sessions).for_each(|s| fleet.reset(s));
                    }
                    spent
                })
            },
        );
        drop(fleet);

        let mut channels: Vec<_> = (0..sessions)
            .map(|_| mpsc::channel::<Bytes>(packhunt::limits::SESSION_TASK_QUEUE_COUNT))
            .collect();
        g.bench_with_input(
            BenchmarkId::new("mpsc_only", sessions),
            &sessions,
            |b, _| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        for (tx, _) in channels.iter_mut() {
                            black_box(tx.try_send(frame.clone()).is_ok());
                        }
                        spent += start.elapsed();
                        for (_, rx) in channels.iter_mut() {
                            while let Ok(frame) = rx.try_recv() {
                                black_box(frame);
                            }
                        }
                    }
                    spent
                })
            },
        );
    }
    g.finish();
}

/// A priority executor and one agent shard connected by the real mesh queues. The bench
/// thread asks the priority executor for a number of notifications and gets back how
/// long it took until the shard had received them all.
struct MeshPair {
    requests: Option<std_mpsc::Sender<u64>>,
    elapsed: std_mpsc::Receiver<Duration>,
    executors: Vec<glommio::ExecutorJoinHandle<()>>,
}

impl MeshPair {
    fn start() -> Self {
        let (priority_ends, mut shard_ends) = mesh::build(1);
        let shard_end = shard_ends.pop().expect("one shard was built");
        let (requests_tx, requests_rx) = std_mpsc::channel::<u64>();
        let (elapsed_tx, elapsed_rx) = std_mpsc::channel::<Duration>();
        // One message per MESH_MESSAGES received; the priority side waits for all.
        let (batch_tx, batch_rx) = std_mpsc::channel::<()>();

        let shard = LocalExecutorBuilder::new(Placement::Unbound)
            .name("bench-shard")
            .io_memory(MIN_IO_MEMORY_BYTES)
            .spawn(move || async move {
                let notifications = connect_polled(shard_end.notifications.connect()).await;
                let mut received = 0u64;
                while let Some(ShardMessage::Notify {
                    client_id,
                    flow_id,
                    frame,
                }) = notifications.recv().await
                {
                    black_box((client_id, flow_id, frame));
                    received += 1;
                    if received % MESH_MESSAGES == 0 && batch_tx.send(()).is_err() {
                        return;
                    }
                }
            })
            .expect("bench shard executor starts");
        let priority = LocalExecutorBuilder::new(Placement::Unbound)
            .name("bench-priority")
            .io_memory(MIN_IO_MEMORY_BYTES)
            .spawn(move || async move {
                let notifier = Notifier::connect(priority_ends.notifications).await;
                let (client, flow) = (client_id(42), flow_id(42));
                // Notifications carry the task frame (about this size for one artifact).
                let frame = bytes::Bytes::from(vec![0u8; 120]);
                // Blocking this executor while idle is fine: it runs nothing else.
                while let Ok(batches) = requests_rx.recv() {
                    let start = Instant::now();
                    for _ in 0..batches * MESH_MESSAGES {
                        notifier.notify(&client, &flow, Some(frame.clone())).await;
                    }
                    for _ in 0..batches {
                        batch_rx
                            .recv()
                            .expect("the shard executor outlives the priority one");
                    }
                    if elapsed_tx.send(start.elapsed()).is_err() {
                        return;
                    }
                }
            })
            .expect("bench priority executor starts");
        Self {
            requests: Some(requests_tx),
            elapsed: elapsed_rx,
            executors: vec![priority, shard],
        }
    }

    fn run(&self, batches: u64) -> Duration {
        self.requests
            .as_ref()
            .expect("running")
            .send(batches)
            .expect("priority executor alive");
        self.elapsed.recv().expect("priority executor alive")
    }
}

impl Drop for MeshPair {
    /// Shutdown by dropping: the priority loop ends, its `Notifier` drops, the shard's
    /// `recv` returns `None`.
    fn drop(&mut self) {
        self.requests.take();
        for executor in self.executors.drain(..) {
            let _ = executor.join();
        }
    }
}

fn bench_mesh_hop(c: &mut Criterion) {
    let mut g = c.benchmark_group("mesh_hop");
    g.throughput(Throughput::Elements(MESH_MESSAGES));
    let pair = MeshPair::start();
    g.bench_function(format!("notify_{MESH_MESSAGES}"), |b| {
        b.iter_custom(|iters| pair.run(iters))
    });
    g.finish();
    drop(pair);
}

criterion_group!(benches, bench_push_one, bench_fanout_all, bench_mesh_hop);
criterion_main!(benches);
