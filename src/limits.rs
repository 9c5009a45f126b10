//! Every limit in one place: its default, its unit and why this value. The config
//! (`config.rs`) takes its defaults from here; nothing else hard-codes a limit.

use std::time::Duration;

/// Largest single upload request (one result batch, file chunk or status).
/// docs/architecture.md: 5 MiB; above it the server answers 413 and the agent splits the batch.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 5 * 1024 * 1024;

/// Hard ceiling on `max_upload_bytes` a config may set: uploads are held in memory
/// while validated, so `concurrency × max_upload_bytes` bounds upload memory.
pub const MAX_MAX_UPLOAD_BYTES: u64 = 256 * 1024 * 1024;

/// Uploads processed at once per frontend. docs/architecture.md: 2 × cores × 8.
pub fn default_concurrency() -> u32 {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as u32;
    2 * cores * 8
}

/// How long an upload waits for a concurrency permit before it is refused (503 +
/// Retry-After). Long enough to ride out a burst, short of the 60 s request timeout.
pub const DEFAULT_CONCURRENCY_WAIT: Duration = Duration::from_secs(5);

/// New agent connections accepted per second per frontend (docs/architecture.md).
pub const DEFAULT_MAX_CONNECTIONS_PER_SECOND: u32 = 200;

/// Agents assigned to hunts per second, fleet-wide (docs/architecture.md).
pub const DEFAULT_HUNT_RECRUITMENT_PER_SECOND: u32 = 100;

/// Connections one agent shard takes through the handshake (TLS + HTTP/2) at once;
/// the rest wait in the kernel's accept queue. Unbounded, a connection burst larger
/// than a core can serve within the handshake deadline made every handshake slow, many
/// timed out after the work was spent, and their agents came back for more: a 19k
/// ramp on one shard took 131 s with 7,874 timeouts (tuning.md, P1). 256 keeps a core
/// busy through 100 ms of network round trips at ~1 ms of CPU per handshake.
pub const DEFAULT_HANDSHAKES_IN_FLIGHT_PER_SHARD: u32 = 256;

/// TLS handshake must finish within this (docs/architecture.md: 10 s).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request and no task for this long is closed (docs/architecture.md: 10 min).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// One request (upload or API call) must complete within this (docs/architecture.md: 60 s).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// glommio registers this much memory per shard for io_uring buffers. memlock is
/// 8 MiB on the target box and glommio refuses below 512 KiB (docs/architecture.md, "This machine").
pub const DEFAULT_IO_MEMORY_BYTES: usize = 1024 * 1024;
pub const MIN_IO_MEMORY_BYTES: usize = 512 * 1024;
/// io_uring submission entries per ring (glommio's default is 128). The kernel sizes a
/// ring's table of outstanding polls from its completion queue: `2 × depth / 32` buckets,
/// at most 256. Every idle agent holds one poll, and glommio's loop cancels a timeout on
/// every pass, which walks one bucket: at 128 that is 8 buckets, ~1,200 entries each for a
/// shard of 9,500 agents; at 4,096, 256 buckets (benches/uring_idle.rs, tuning.md).
pub const DEFAULT_IO_RING_DEPTH: usize = 4096;
/// Bounds on `frontend.io_ring_depth`: the kernel takes at most 32,768 entries.
pub const MIN_IO_RING_DEPTH: usize = 64;
pub const MAX_IO_RING_DEPTH: usize = 32_768;

/// Datastore I/O threads per executor. A status document costs ~2.2 ms of fsync on the
/// reference disk (tuning.md) and an NFS round trip about a millisecond: with one thread
/// a shard could write at most a few hundred documents a second. 8 overlap that waiting
/// at the cost of 8 mostly idle threads per executor.
pub const DEFAULT_IO_THREADS_PER_EXECUTOR: usize = 8;
pub const MAX_IO_THREADS_PER_EXECUTOR: usize = 256;

/// Open files a frontend may use; agents are refused (not crashed) above
/// `max_open_files - RESERVED_FILES`. 20,000 is this box's hard limit; production raises it.
pub const DEFAULT_MAX_OPEN_FILES: u64 = 20_000;
/// Files kept back for result sets, the datastore and the API while agents hold the rest.
pub const RESERVED_FILES: u64 = 512;

/// How long an accept loop sleeps after EMFILE/ENFILE: the listener stays readable while
/// the process is out of files, so retrying at once would spin a core.
pub const ACCEPT_BACKOFF_ON_EMFILE: Duration = Duration::from_millis(100);

/// Largest server->agent frame the agent accepts on its task stream. A task names a few
/// artifacts and parameters; 1 MiB is far above any real one and caps a hostile length.
pub const MAX_TASK_FRAME_BYTES: usize = 1024 * 1024;

/// Tasks queued per session before the push stream applies backpressure.
pub const SESSION_TASK_QUEUE_LEN: usize = 1024;

/// Cross-shard queues (priority shard <-> agent shards): bounded, see notify/mesh.rs.
pub const MESH_QUEUE_LEN: usize = 65_536;

/// Messages waiting for the replication thread (presence, flow states, notifications
/// bound for other frontends). A burst of 19,000 reconnects fits; beyond that presence
/// is dropped and resent as a snapshot (src/replication/queue.rs).
pub const REPLICATION_OUTBOUND_QUEUE_LEN: usize = 65_536;
/// Messages from other frontends waiting for the hub executor.
pub const REPLICATION_INBOUND_QUEUE_LEN: usize = 65_536;
/// Messages queued on one peer's stream; a peer that falls this far behind loses
/// messages (counted) rather than growing the master's memory.
pub const REPLICATION_LINK_QUEUE_LEN: usize = 16_384;
/// Client ids per presence snapshot message (~60 bytes each, well under gRPC's 4 MiB).
pub const PRESENCE_SNAPSHOT_CHUNK: usize = 5_000;
/// A minion's wait before relinking grows from MIN to MAX (with jitter) while the master
/// stays unreachable.
pub const REPLICATION_BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const REPLICATION_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// HTTP/2 pings on an idle link: a master cut off by the network (no RST) is noticed
/// within interval + timeout.
pub const REPLICATION_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const REPLICATION_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// A new link must finish TLS and say Hello within this.
pub const REPLICATION_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A rows request may ask for at most this many rows in one page.
pub const MAX_RESULT_PAGE_ROWS: u64 = 10_000;
/// Default rows per page when the caller does not say.
pub const DEFAULT_RESULT_PAGE_ROWS: u64 = 100;
/// Clients listed per page at most.
pub const MAX_CLIENT_LIST_LIMIT: usize = 10_000;

/// Largest API request body (collection requests are small JSON documents).
pub const MAX_API_BODY_BYTES: usize = 1024 * 1024;

/// Agent reconnect backoff: starts here, doubles per failed round of URLs, capped.
pub const AGENT_BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const AGENT_BACKOFF_MAX: Duration = Duration::from_secs(60);

const _: () = assert!(MIN_IO_MEMORY_BYTES <= DEFAULT_IO_MEMORY_BYTES);
const _: () = assert!(DEFAULT_MAX_UPLOAD_BYTES <= MAX_MAX_UPLOAD_BYTES);

/// A shard's share of a per-frontend limit (`concurrency`, `max_connections_per_second`):
/// shares differ by at most one and every shard gets at least one.
pub fn shard_share(total: u32, shards: usize, shard: usize) -> u64 {
    let (shards, shard) = (shards.max(1) as u64, shard as u64);
    let total = u64::from(total);
    (total / shards + u64::from(shard < total % shards)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_limit_and_never_starve_a_shard() {
        assert_eq!((0..2).map(|s| shard_share(32, 2, s)).sum::<u64>(), 32);
        assert_eq!(
            (0..3).map(|s| shard_share(32, 3, s)).collect::<Vec<_>>(),
            vec![11, 11, 10]
        );
        assert_eq!(
            (0..4).map(|s| shard_share(2, 4, s)).collect::<Vec<_>>(),
            vec![1, 1, 1, 1]
        );
    }
}
