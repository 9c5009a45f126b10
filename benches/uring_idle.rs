//! What an executor's own loop costs with many idle connections polled on its ring, by
//! io_uring ring depth.
//!
//! Every idle agent keeps one POLL_ADD outstanding on its shard's main ring. glommio
//! cancels a timeout on that ring on every pass of its loop, and the kernel's cancel
//! looks through the ring's table of outstanding polls first. That table has
//! `cq_entries / 32` buckets, at most 256: at glommio's default depth of 128 (256 CQ
//! entries) that is 8 buckets, so with 9,500 agents a shard scans ~1,200 entries per
//! pass; at depth 4,096 the table has 256 buckets, ~37 entries each.
//!
//! - `timer_pass/{depth}/{idle}`: one 1 µs timer sleep (a full pass of the executor loop
//!   through the kernel) with `idle` socket pairs each holding a pending read on the
//!   same executor.
//!
//! Run: `cargo bench --bench uring_idle -- --warm-up-time 1 --measurement-time 2`

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use futures::AsyncReadExt;
use glommio::net::UnixStream;
use glommio::{LocalExecutorBuilder, Placement};
use packhunt::limits::{DEFAULT_IO_RING_DEPTH, MIN_IO_MEMORY_BYTES};

/// Idle connections per executor: none, and about one shard's share of 19,000 agents on
/// this 2-core box. Each pair takes two descriptors of the process's 20,000.
const IDLE: [usize; 2] = [0, 9_000];
/// glommio's own default, and packhunt's.
const DEPTHS: [usize; 2] = [128, DEFAULT_IO_RING_DEPTH];

/// Descriptors kept free for the executor, criterion and the process itself.
const SPARE_FILES: u64 = 200;

/// Idle pairs this process can open: `IDLE`'s largest is capped by the open-files limit
/// (two descriptors a pair), so a machine with a small `ulimit -n` measures fewer.
fn idle_counts() -> Vec<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    };
    let most = (soft.saturating_sub(SPARE_FILES) / 2) as usize;
    let counts: Vec<usize> = IDLE.iter().map(|&n| n.min(most)).collect();
    if counts != IDLE {
        eprintln!("uring_idle: open-files limit {soft}: measuring {counts:?} idle connections instead of {IDLE:?}");
    }
    counts
}

fn timer_pass(c: &mut Criterion) {
    let mut group = c.benchmark_group("timer_pass");
    for depth in DEPTHS {
        for idle in idle_counts() {
            let ex = LocalExecutorBuilder::new(Placement::Unbound)
                .io_memory(MIN_IO_MEMORY_BYTES)
                .ring_depth(depth)
                .make()
                .expect("executor");
            // The far ends stay open (held here) so the reads stay pending.
            let ended = Rc::new(Cell::new(0usize));
            let held = ex.run({
                let ended = ended.clone();
                async move {
                    let mut far = Vec::with_capacity(idle);
                    for _ in 0..idle {
                        let (mut near, other) = UnixStream::pair().expect("socket pair");
                        far.push(other);
                        let ended = ended.clone();
                        glommio::spawn_local(async move {
                            let mut byte = [0u8; 1];
                            let _ = near.read(&mut byte).await;
                            drop(near);
                            ended.set(ended.get() + 1);
                        })
                        .detach();
                    }
                    // Let every read reach the ring.
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                    Rc::new(far)
                }
            });
            group.bench_with_input(
                BenchmarkId::new(format!("depth_{depth}"), idle),
                &idle,
                |b, _| {
                    b.iter_custom(|iters| {
                        ex.run(async move {
                            let start = Instant::now();
                            for _ in 0..iters {
                                glommio::timer::sleep(Duration::from_micros(1)).await;
                            }
                            start.elapsed()
                        })
                    })
                },
            );
            // Closing the far ends ends the reads; their descriptors go before the next
            // combination opens its own.
            ex.run(async move {
                drop(held);
                while ended.get() < idle {
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            });
        }
    }
    group.finish();
}

criterion_group!(benches, timer_pass);
criterion_main!(benches);
