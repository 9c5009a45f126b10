//! The master's client index at fleet size: what one client list or search costs inside
//! the index (match, count every match, build one page joined with presence), and the
//! heap the index holds per client.
//!
//! Fleet: `CLIENTS` synthetic clients (hostnames `web-NNNNN.eu`, `db-NNNNN.us`,
//! `Laptop-NNNNN`; three OSes; a third labelled `web` and one of 1,000 `team-N`), half of
//! them connected in presence. Each timing is one request as the API makes it, page
//! of 100. Same-run baseline `baseline_datastore_scan/1000_clients`: what the list cost
//! before the index, reading 1,000 clients' info.json and labels.json from a temp
//! datastore (the old list read every client's, so multiply by fleet / 1,000).
//!
//! Memory (printed once to stderr before the timings): a counting global allocator
//! around mimalloc (the frontend's allocator) gives the live bytes the loaded index
//! holds, divided by `CLIENTS`.
//!
//! Run: `cargo bench --bench client_index -- --warm-up-time 1 --measurement-time 3`

use std::alloc::{GlobalAlloc, Layout};
use std::rc::Rc;
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use packhunt::clients::{ClientIndex, DiskRead, Query};
use packhunt::config::FrontendRole;
use packhunt::datastore::{self, ClientInfoDoc, Datastore};
use packhunt::ids::ClientId;
use packhunt::metrics::ClientIndexRefresh;
use packhunt::notify::mesh::ShardEvent;
use packhunt::notify::presence::Presence;

/// The fleet size the issue sets the budget at (p99 <= 50 ms at 50,000 clients).
const CLIENTS: u64 = 50_000;

/// Clients read by the baseline: enough for a stable figure, few enough to write fast.
const BASELINE_CLIENTS: u64 = 1_000;

/// Clients per `disk_reads` call while building, as the feed's read batches.
const LOAD_BATCH: usize = 512;

#[global_allocator]
static GLOBAL: Counting = Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

/// mimalloc with a live requested-bytes counter.
struct Counting;

// SAFETY: every call is passed straight to mimalloc, a conforming allocator; the counter
// only adds and subtracts the sizes the caller asked for.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        mimalloc::MiMalloc.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        mimalloc::MiMalloc.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        mimalloc::MiMalloc.dealloc(p, layout)
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        mimalloc::MiMalloc.realloc(p, layout, new_size)
    }
}

fn id(n: u64) -> ClientId {
    // Spread ids over the whole range, as SHA-256-derived ids are.
    let spread = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ClientId::parse(&format!("C.{spread:016x}")).expect("a formatted id")
}

fn doc(n: u64) -> ClientInfoDoc {
    let (hostname, os) = match n % 3 {
        0 => (format!("web-{n:05}.eu"), "linux"),
        1 => (format!("db-{n:05}.us"), "windows"),
        _ => (format!("Laptop-{n:05}"), "darwin"),
    };
    let labels = if n % 3 == 0 {
        vec!["web".to_string(), format!("team-{}", n % 1000)]
    } else {
        Vec::new()
    };
    ClientInfoDoc {
        client_id: id(n),
        hostname,
        os: os.into(),
        labels,
        first_seen_ms: 1_700_000_000_000 + n,
        last_seen_ms: 1_700_000_100_000 + n,
        version: "0.1.0".into(),
    }
}

/// The index over `CLIENTS` clients, built as the feed builds it, and its presence.
fn fleet() -> (ClientIndex, Rc<Presence>) {
    let presence = Rc::new(Presence::new("master:8000", FrontendRole::Master, &[]));
    let index = ClientIndex::new(presence.clone());
    let ids: Vec<u64> = (0..CLIENTS).collect();
    for batch in ids.chunks(LOAD_BATCH) {
        let reads = batch.iter().map(|n| DiskRead::Found(doc(*n))).collect();
        index.disk_reads(reads, ClientIndexRefresh::Load);
    }
    for n in (0..CLIENTS).step_by(2) {
        presence.apply(ShardEvent::Connected {
            client_id: id(n),
            shard: (n % 2) as usize,
            session: n,
        });
    }
    (index, presence)
}

fn memory_per_client() {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let presence = Rc::new(Presence::new("master:8000", FrontendRole::Master, &[]));
    let index = ClientIndex::new(presence);
    let before_index = LIVE_BYTES.load(Ordering::Relaxed);
    for batch in (0..CLIENTS).collect::<Vec<_>>().chunks(LOAD_BATCH) {
        let reads = batch.iter().map(|n| DiskRead::Found(doc(*n))).collect();
        index.disk_reads(reads, ClientIndexRefresh::Load);
    }
    let held = LIVE_BYTES.load(Ordering::Relaxed) - before_index;
    eprintln!(
        "client index: {} clients hold {} KiB live heap = {} bytes per client (setup {} bytes)",
        index.len(),
        held / 1024,
        held / CLIENTS as isize,
        before_index - before,
    );
    black_box(index);
}

fn searches(c: &mut Criterion) {
    memory_per_client();
    let (index, _presence) = fleet();
    let mut group = c.benchmark_group("client_index_search_50k");
    let cases: [(&str, &str, Option<bool>, usize); 8] = [
        ("everything_first_page", "", None, 0),
        ("everything_last_page", "", None, CLIENTS as usize - 100),
        ("hostname_substring", "web-4", None, 0),
        ("hostname_substring_rare", "db-49999", None, 0),
        ("label", "label:web", None, 0),
        (
            "label_and_os_and_host",
            "label:web os:LINUX host:.eu",
            None,
            0,
        ),
        ("id_prefix", "C.9e", None, 0),
        (
            "connected_true_last_page",
            "",
            Some(true),
            CLIENTS as usize / 2 - 100,
        ),
    ];
    for (name, search, connected, start) in cases {
        let query = Query::parse(search, connected).expect("a valid search");
        group.bench_function(name, |b| {
            b.iter(|| black_box(index.search(black_box(&query), start, 100)))
        });
    }
    let query = Query::parse("", Some(false)).expect("a valid search");
    group.bench_function("connected_false_first_page", |b| {
        b.iter(|| black_box(index.search(&query, 0, 100)))
    });
    group.finish();
}

fn baseline(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temp folder");
    let ds = Datastore::open(dir.path().to_path_buf(), false).expect("a datastore");
    for n in 0..BASELINE_CLIENTS {
        datastore::write_client_info(&ds.client(&id(n)), &doc(n)).expect("written");
    }
    let mut group = c.benchmark_group("baseline_datastore_scan");
    group.sample_size(20);
    group.bench_function("1000_clients", |b| {
        b.iter(|| {
            let ids = datastore::list_clients(&ds).expect("listed");
            let docs: Vec<_> = ids
                .iter()
                .filter_map(|id| datastore::read_client_info(&ds.client(id)).ok())
                .collect();
            black_box(docs)
        })
    });
    group.finish();
}

criterion_group!(benches, searches, baseline);
criterion_main!(benches);
