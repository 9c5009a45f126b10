//! Every limit in one place: its default, its unit and why this value. The config
//! (`config/`) takes its defaults from here; other modules import their limits from here
//! rather than hard-coding them. Integers carry their unit in the name (`_bytes`,
//! `_count`, `_ms`, `_per_second`, `_chars`); a `Duration` is its own unit and is named
//! for what it bounds. This module imports nothing from the crate.
//!
//! Constants that are a detail of one module's format or algorithm stay beside the code
//! they describe; they are listed here so this file remains the index of every limit:
//!
//! | constant | value | lives in | why it stays there |
//! |---|---|---|---|
//! | `MAX_ARTIFACTS_PER_REQUEST` | 32 | `artifacts.rs` | checked against the catalogue's length |
//! | `MAX_PARAMETER_VALUE_BYTES` | 4,096 | `artifacts.rs` | part of the request format (PATH_MAX) |
//! | `MAX_ECHOED_INPUT_CHARS` | 200 | `artifacts.rs` | error text only |
//! | `BATCH_RECORD_BYTES` | 32 | `datastore/rowlog.rs` | on-disk record format |
//! | `MIN_ROW_BYTES` | 3 | `datastore/rowlog.rs` | on-disk format (`{}\n`) |
//! | `WALK_CHUNK_RECORDS` | 1,024 | `datastore/rowlog.rs` | recovery read size |
//! | `DayFormat::INDEX_ENTRY_BYTES` | 16 | `datastore/monitoring.rs` | on-disk index format |
//! | `SCRATCH_BYTES` | 16 KiB | `runtime/io_compat.rs` | one TLS record (RFC 8446 5.1) |
//! | `UPLOAD_OVERHEAD_BYTES` | 1,024 | `agent/outbox.rs` | framing slack in an upload |
//! | `MAX_RECURSION_DEPTH` | 32 | `agent/artifacts/glob.rs` | `**` walk depth |
//! | `HASH_BUFFER_BYTES` | 64 KiB | `agent/artifacts/glob.rs` | hashing read size |
//! | `MAX_HASH_BYTES` | 16 GiB | `agent/artifacts/glob.rs` | largest file hashed |
//! | `MAX_TABLE_BYTES` | 64 MiB | `agent/artifacts/netstat.rs` | `/proc/net/tcp*` read |
//! | `MAX_PASSWD_BYTES` | 16 MiB | `agent/artifacts/users.rs` | `/etc/passwd` read |
//! | `MAX_CMDLINE_BYTES` | 64 KiB | `agent/artifacts/pslist.rs` | command line kept |
//! | `MAX_PROC_FILE_BYTES` | 16 KiB | `agent/artifacts/pslist.rs` | `/proc/<pid>/stat` read |
//! | `DEFAULT_REPLICATION_PORT` | 8001 | `config/file.rs` | a config default, not a limit |
//! | `DEFAULT_FRONTEND_PORT` | 8000 | `config/generate.rs` | a `config generate` default |
//! | `DEFAULT_GUI_PORT` | 8889 | `config/generate.rs` | a `config generate` default |
//! | `GENERATED_PASSWORD_CHARS` | 20 | `config/generate.rs` | ~119 bits, typeable |
//! | `CA_VALIDITY` | 10 years | `config/generate.rs` | certificate generation |
//! | `CLOCK_SKEW_ALLOWANCE` | 1 day | `config/generate.rs` | certificate generation |
//! | `PASSWORD_SALT_BYTES` | 16 | `config/generate.rs` | RFC 9106 3.1 |
//! | `PRIORITY_THREAD_NICE` | -10 | `frontend/run.rs` | OS scheduling (tuning.md, P4) |
//! | `PRIORITY_THREAD_RT_PRIORITY` | 1 | `frontend/run.rs` | OS scheduling |
//! | `LATENCY_BUCKETS_SECONDS` | 13 buckets | `metrics/histogram.rs` | metric layout |
//! | `TOKEN_BYTES` | 32 | `api/session.rs` | session and CSRF token format (OWASP: >= 64 bits) |

use std::time::Duration;

use rand::Rng;

// ---- Uploads ------------------------------------------------------------------------------

/// Largest single upload request (one result batch, file chunk or status).
/// docs/architecture.md: 5 MiB; above it the server answers 413 and the agent splits the batch.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 5 * 1024 * 1024;

/// Hard ceiling on `max_upload_bytes` a config may set: uploads are held in memory
/// while validated, so `concurrency × max_upload_bytes` bounds upload memory.
pub const MAX_MAX_UPLOAD_BYTES: u64 = 256 * 1024 * 1024;

/// Result batches at least this large are appended with direct writes
/// (datastore/direct_append.rs) instead of through the page cache: below it, the
/// device round trip of a direct write costs more than copying a few pages.
pub const DIRECT_WRITE_MIN_BATCH_BYTES: u64 = 64 * 1024;

/// Alignment of a direct write's buffer, offset and length: the page size, which covers
/// devices with 512-byte and 4 KiB logical blocks alike.
pub const DIRECT_WRITE_ALIGN_BYTES: u64 = 4096;

/// Bytes a direct append writes at once, and the aligned buffer each blocking-pool thread
/// keeps for it: large enough that the device sees few big writes, small enough that the
/// pool's threads together hold a few MiB.
pub const DIRECT_WRITE_CHUNK_BYTES: u64 = 1024 * 1024;

/// Smallest `client.max_upload_bytes` an agent config may set: the floor it has always
/// had; the agent keeps about 1 KiB of each upload for framing (agent/outbox.rs).
pub const MIN_CLIENT_UPLOAD_BYTES: u64 = 1024;

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

/// Waiting uploads allowed per concurrency permit before new ones are refused at once:
/// a queue longer than a few permit turns would outlast `DEFAULT_CONCURRENCY_WAIT`.
pub const UPLOAD_WAITERS_PER_PERMIT_COUNT: usize = 4;

/// What an upload refused for concurrency is told to wait, spread over this range so
/// that refused agents do not return together.
pub const RETRY_AFTER_CONCURRENCY_MIN: Duration = Duration::from_secs(2);
pub const RETRY_AFTER_CONCURRENCY_MAX: Duration = Duration::from_secs(10);

/// How long an agent waits after the datastore refused a write for lack of space: long,
/// so a full disk does not start a re-upload storm (docs/architecture.md, "Lessons").
/// The default of `[limits] disk_full_retry_after_s`: a fleet of N agents then retries at
/// about N / 300 requests per second while the disk stays full (15,000 agents: ~50/s).
pub const RETRY_AFTER_DISK_FULL: Duration = Duration::from_secs(300);
/// How long to wait before resending an upload refused because another one for the
/// same flow was still being written: that write is a single batch, soon done.
pub const RETRY_AFTER_BUSY: Duration = Duration::from_secs(1);

/// Largest file an agent may upload into one flow (offset + chunk): bounds what one
/// flow can put on the shared mount.
pub const MAX_UPLOADED_FILE_BYTES: u64 = 64 * 1024 * 1024 * 1024;

// ---- Collections: per-flow limits ---------------------------------------------------------

/// A collection's own limits (docs/files.md): where the agent stops and past which the
/// server refuses. 0 means none. A request's values, else the config's `[limits]
/// collection_*` defaults, are stored in request.json and sent with the task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowLimits {
    /// Seconds from when the agent takes the task up.
    #[serde(default)]
    pub timeout_s: u64,
    /// Rows over all the flow's artifacts.
    #[serde(default)]
    pub max_rows: u64,
    /// Bytes of uploaded files over the whole flow: the server's per-flow quota.
    #[serde(default)]
    pub max_upload_bytes: u64,
}

/// Default `timeout_s` of a collection: ten minutes covers a file collection over a slow
/// link; a stuck artifact is reported instead of holding the flow open for ever.
pub const DEFAULT_COLLECTION_TIMEOUT_S: u64 = 600;
/// Default `max_rows` of a collection: a glob over a whole disk stays well below it, a
/// runaway one is stopped before it fills the datastore.
pub const DEFAULT_COLLECTION_MAX_ROWS: u64 = 10_000_000;
/// Default `max_upload_bytes` of a collection (its per-flow upload quota): 1 GiB.
pub const DEFAULT_COLLECTION_MAX_UPLOAD_BYTES: u64 = 1024 * 1024 * 1024;

// ---- Files: server side (uploads, quota, index) ---------------------------------------------

/// How long after `timeout_s` (from the flow's start) uploads of a flow are still taken:
/// an agent that stopped at its deadline may still be sending what it collected before
/// it (docs/files/server.md). Later ones are refused (409) and the flow ends as
/// `error`, `ended_by: timeout_s`.
pub const LATE_UPLOAD_GRACE: Duration = Duration::from_secs(10 * 60);
/// Read size when a complete file is hashed back from disk: large sequential reads,
/// small next to a shard's memory.
pub const HASH_READ_BUFFER_BYTES: usize = 256 * 1024;
/// Per-file upload errors (incomplete files, SHA-256 mismatches) written into one
/// `status.json`: the index keeps every one; the status stays a small document.
pub const MAX_UPLOAD_ERRORS_IN_STATUS_COUNT: usize = 100;
/// Read size of a download's file reads (one streamed chunk's worth).
pub const DOWNLOAD_READ_BUFFER_BYTES: usize = 256 * 1024;

// ---- Files: downloads, results streaming and exports ----------------------------------------

/// Columns a CSV of a result set has at most (top-level keys in first-seen order); keys
/// beyond are left out of the CSV (the JSONL keeps every value). A header wider than this
/// is no table anyone reads, and the first pass's key set stays small.
pub const MAX_CSV_COLUMNS_COUNT: usize = 1024;
/// Read buffer for files copied into a download or an export: large enough that a
/// multi-GB upload is a few thousand reads, small beside the stream's queue.
pub const EXPORT_READ_BUFFER_BYTES: usize = 128 * 1024;
/// Entries of one zip export. The zip format needs every entry's name and offsets again
/// in its central directory at the end, so a streamed archive keeps ~200 bytes per entry
/// in memory until then: this bounds that to ~100 MB however large the files are.
pub const MAX_EXPORT_ENTRIES_COUNT: usize = 500_000;
/// Ended hunt flows whose per-artifact rows (status.json) are read in one trip to the
/// blocking pool for the hunt results index; more wait for the next trip.
pub const HUNT_RESULTS_SETTLE_BATCH_COUNT: usize = 1_024;

/// Streamed responses (downloads, whole result sets, zip exports) in progress at once on
/// the master; more get 503. Each holds a thread reading the datastore and at most
/// `STREAM_QUEUE_CHUNKS_COUNT` chunks in memory.
pub const MAX_STREAMED_RESPONSES_COUNT: usize = 16;
/// One chunk of a streamed response: large enough that a 10 GB export is ~40,000
/// chunks, small enough that the queue below bounds memory per stream to ~1 MiB.
pub const STREAM_CHUNK_BYTES: usize = 256 * 1024;
/// Chunks a streamed response may have written ahead of the client.
pub const STREAM_QUEUE_CHUNKS_COUNT: usize = 4;

// ---- Cancel ----------------------------------------------------------------------------------

/// Flows a hunt stop with `cancel_flows` cancels in one trip to the blocking pool, and per
/// message to the shards and the minions: one trip per flow spent more on handoffs than on
/// the two small files each (as the recruiter measured, RECRUIT_BATCH_COUNT), and a
/// 50,000-flow hunt as single messages would overrun a minion's link queue
/// (REPLICATION_LINK_QUEUE_COUNT).
pub const CANCEL_BATCH_COUNT: usize = 256;
/// How long a hunt stop with `cancel_flows` waits for recruits already being written, so
/// that a flow recruited just before the stop is cancelled too: a batch of recruits takes
/// milliseconds; a disk stalled for longer leaves those few flows running (logged).
pub const CANCEL_RECRUITS_SETTLE_WAIT: Duration = Duration::from_secs(5);
/// Longest cancel reason kept from the replication link: it only goes to agents' logs.
pub const MAX_CANCEL_REASON_CHARS: usize = 256;

// ---- Agent: outbox and file collection -------------------------------------------------------

/// Default most bytes the agent's on-disk outbox holds (results and file snapshots not
/// yet acknowledged); past it the oldest flow is failed with a clear error.
pub const DEFAULT_MAX_OUTBOX_BYTES: u64 = 1024 * 1024 * 1024;
/// Smallest `client.max_outbox_bytes` a config may set: one full upload and its slack.
pub const MIN_OUTBOX_BYTES: u64 = 8 * 1024 * 1024;
/// Room left in an upload for the frame and message fields around rows or file bytes:
/// a batch's or chunk's header fields (ids, artifact, path, sha256) stay far below it.
pub const OUTBOX_UPLOAD_SLACK_BYTES: u64 = 1024;
/// Flows the outbox holds at once (waiting, running or delivering); a task beyond it is
/// not taken (the server keeps it queued and pushes it again at the next connect).
pub const MAX_OUTBOX_FLOWS_COUNT: usize = 10_000;
/// How long past its `timeout_s` deadline a collection may take to return what it has;
/// past it the collection is abandoned and the flow reported as ended by `timeout_s`.
/// Artifacts check the deadline between rows, so a few seconds covers one slow read.
pub const COLLECTION_ABANDON_GRACE: Duration = Duration::from_secs(5);
/// Least rows or file data the agent puts in one upload, whatever `max_upload_bytes`
/// minus the slack leaves (a client may set 1 KiB), and the smallest chunk it halves
/// down to after 413s: a server refusing even this gets the file given up.
pub const MIN_FILE_CHUNK_BYTES: u64 = 256;
/// Answers in a row that move a file's offset nowhere before the agent gives the file
/// up: a server that acknowledges without storing must not loop the agent for ever.
pub const MAX_FILE_STALLED_ANSWERS_COUNT: u32 = 8;
/// Largest outbox document (a flow's manifest or progress) read back at start: a
/// manifest lists every file of a flow, ~300 bytes each; 64 MiB is far above any real one.
pub const MAX_OUTBOX_DOCUMENT_BYTES: u64 = 64 * 1024 * 1024;

// ---- Agent: file artifacts -------------------------------------------------------------------

/// Default `max_file_bytes` of `Generic.Collectors.File`: 100 MiB covers the logs,
/// binaries and browser histories an analyst grabs; a disk image must be asked for.
pub const DEFAULT_COLLECTED_FILE_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// Default `max_total_bytes` of `Generic.Collectors.File`: half the default outbox, so one
/// collection's snapshots fit beside whatever else the agent has not delivered yet.
pub const DEFAULT_COLLECTED_TOTAL_MAX_BYTES: u64 = 500 * 1024 * 1024;
/// Most globs one `globs` parameter may list: a hunt names a handful of places; the cap
/// bounds the task frame and the number of walks one artifact starts.
pub const MAX_GLOBS_PER_PARAMETER_COUNT: usize = 64;
/// Most matches `Generic.Collectors.File` considers (rows, including skipped and error
/// rows), like `Generic.Files.Glob`'s default `max_results`: a `/**` typo must not walk
/// a whole disk and produce a million rows.
pub const MAX_COLLECTED_FILE_MATCHES_COUNT: u64 = 10_000;
/// Read size while copying a file into its snapshot and hashing it: syscall overhead is
/// noise at this size and the buffer stays in L2 beside the SHA-256 state.
pub const FILE_COPY_BUFFER_BYTES: usize = 64 * 1024;

const _: () = assert!(DEFAULT_COLLECTED_FILE_MAX_BYTES <= DEFAULT_COLLECTED_TOTAL_MAX_BYTES);
const _: () = assert!(DEFAULT_COLLECTED_TOTAL_MAX_BYTES <= DEFAULT_MAX_OUTBOX_BYTES);
const _: () = assert!(DEFAULT_COLLECTED_FILE_MAX_BYTES <= MAX_UPLOADED_FILE_BYTES);

// ---- Connections and admission ------------------------------------------------------------

/// New agent connections accepted per second per frontend (docs/architecture.md).
pub const DEFAULT_MAX_CONNECTIONS_PER_SECOND: u32 = 200;

/// Connections one agent shard takes through the handshake (TLS + HTTP/2) at once;
/// the rest wait in the kernel's accept queue. Unbounded, a connection burst larger
/// than a core can serve within the handshake deadline made every handshake slow, many
/// timed out after the work was spent, and their agents came back for more: a 19k
/// ramp on one shard took 131-167 s with 7,900-12,500 timeouts (tuning.md, P1). 256 keeps a core
/// busy through 100 ms of network round trips at ~1 ms of CPU per handshake.
pub const DEFAULT_HANDSHAKES_IN_FLIGHT_PER_SHARD: u32 = 256;

/// TLS handshake must finish within this (docs/architecture.md: 10 s).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request and no task for this long is closed (docs/architecture.md: 10 min).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// One agent upload's body must arrive within this (docs/architecture.md: 60 s). The
/// GUI/API port has no request timeout yet.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Open files a frontend may use; agents are refused (not crashed) above
/// `max_open_files - RESERVED_FILES_COUNT`. 20,000 is this box's hard limit; production
/// raises it.
pub const DEFAULT_MAX_OPEN_FILES: u64 = 20_000;
/// Files kept back for result sets, the datastore and the API while agents hold the rest.
pub const RESERVED_FILES_COUNT: u64 = 512;

/// How long an accept loop sleeps after EMFILE/ENFILE: the listener stays readable while
/// the process is out of files, so retrying at once would spin a core.
pub const ACCEPT_BACKOFF_ON_EMFILE: Duration = Duration::from_millis(100);

/// TCP keepalive finds agents whose host vanished without a FIN; cheap, in the kernel.
/// With Linux's default 9 probes a dead host is found after ~4 minutes, well inside the
/// 10-minute idle timeout. Agents probe their side with the same timing, so an agent
/// whose connection died silently reconnects within ~4 minutes instead of never.
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// HTTP/2 stream window for agent connections: large enough that a 5 MiB upload is not
/// throttled by window updates on a fast link (RFC 9113 6.9.2: the default is 65,535 bytes).
pub const H2_STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
/// The connection window while no upload of the connection is admitted: the protocol's
/// default, so an agent sends at most this much before a permit lets its body be read.
/// Each admitted upload widens it by `H2_STREAM_WINDOW_BYTES` (transport/receive_window.rs).
pub const H2_CONNECTION_WINDOW_IDLE_BYTES: u32 = 65_535;
/// Streams one agent connection may open: it has one task stream and a few uploads in
/// flight.
pub const MAX_H2_CONCURRENT_STREAMS_COUNT: u32 = 16;
/// Largest header block an agent may send: its requests carry a handful of short headers.
pub const MAX_H2_HEADER_LIST_BYTES: u32 = 16 * 1024;

// ---- Executors and start-up ---------------------------------------------------------------

/// glommio registers this much memory per shard for io_uring buffers. memlock is 8 MiB
/// on the target box and glommio refuses below 512 KiB (docs/architecture.md, "This
/// machine").
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

/// Nice value of the agent shards' file-work threads (their blocking pools: result and
/// upload writes with their fsyncs, facts, queue reads). At 10 such a thread weighs ~1/9
/// of a default one (the CFS weight table), so while the box is busy the shards' network
/// work (task delivery, handshakes) and everything else at the default priority run
/// first; ingest is throughput work behind upload permits and Retry-After, and takes
/// the CPU left over. tuning.md, "P2 fan-out": 19,000 first answers ingested while a
/// hunt goes out.
pub const DEFAULT_FILE_WORK_NICE: i32 = 10;
/// Bounds on `frontend.file_work_nice`: an unprivileged process may only raise its own
/// nice value, and 19 is the kernel's lowest priority.
pub const MIN_FILE_WORK_NICE: i32 = 0;
pub const MAX_FILE_WORK_NICE: i32 = 19;

/// Datastore I/O threads per executor. An fsynced document costs milliseconds on a
/// disk and an NFS round trip about a millisecond: with one thread
/// a shard could write at most a few hundred documents a second. 8 overlap that waiting
/// at the cost of 8 mostly idle threads per executor.
pub const DEFAULT_IO_THREADS_PER_EXECUTOR: usize = 8;
pub const MAX_IO_THREADS_PER_EXECUTOR: usize = 256;

/// How long start-up may take before the frontend gives up: an executor that died
/// before reporting would otherwise leave it waiting forever.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(20);
/// How often an executor waiting for the other end of a queue to connect wakes up:
/// glommio only notices the other end while its reactor turns (runtime/channel.rs), and
/// this ticks only during start-up.
pub const QUEUE_CONNECT_POLL_INTERVAL: Duration = Duration::from_millis(5);

// ---- Queues between executors, sessions and notifications ---------------------------------

/// Tasks queued per session before the push stream applies backpressure.
pub const SESSION_TASK_QUEUE_COUNT: usize = 1024;

/// What task streams opening on one shard read from disk (queued tasks, labels) goes to
/// the blocking pool in batches (runtime/batched_offload.rs): the first waits this long
/// for others, a trip carries at most this many, and this many trips run at once (several,
/// so a slow NFS listing does not hold every other agent's).
pub const CONNECT_READ_BATCH_WINDOW: Duration = Duration::from_millis(5);
pub const CONNECT_READS_PER_TRIP_COUNT: usize = 32;
pub const CONNECT_READ_TRIPS_IN_FLIGHT_COUNT: usize = 4;

/// Bytes an agent connection's socket holds unsent before it sends without waiting for a
/// flush (runtime/coalesced_writes.rs): a TLS handshake flight, or h2's 16 KiB write
/// buffer as a record, several times over.
pub const COALESCED_WRITE_MAX_BYTES: usize = 64 * 1024;

/// Ciphertext the agent port's TLS reads at once into its per-thread buffer
/// (transport/agent_tls.rs): two whole records, so an upload arrives in few reads.
pub const TLS_READ_SCRATCH_BYTES: usize = 64 * 1024;

/// The smallest ciphertext read of the agent port's TLS once connected, however little
/// room its reader has: tiny reads would copy a record's first part again at each one.
pub const TLS_MIN_READ_BYTES: usize = 4 * 1024;

/// A TLS 1.3 record's bytes beyond its plaintext with AES-GCM: header (5), content type
/// (1), tag (16).
pub const TLS_RECORD_OVERHEAD_BYTES: usize = 22;

/// Plaintext the agent port's TLS encrypts per write call: h2's 16 KiB buffer and the
/// payloads it chains behind it, as up to four records.
pub const TLS_WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// Cross-shard queues (priority shard <-> agent shards): bounded, see notify/mesh.rs.
pub const MESH_QUEUE_COUNT: usize = 65_536;

/// How long a notification may wait for room in a full shard queue before it is dropped
/// and counted: the agent still finds its task on its next queue scan.
pub const NOTIFY_SEND_DEADLINE: Duration = Duration::from_secs(2);

/// How long a shard's first unsent event waits for others to join its batch to the hub
/// (notify/shard_events.rs): the hub wakes once per batch, not per event. Presence and
/// flow states reach the hub (and the API) this much later at most.
pub const SHARD_EVENT_BATCH_WINDOW: Duration = Duration::from_millis(5);

/// Events a shard holds unsent before its senders wait for the hub: a reconnect storm's
/// worth of a few windows, and the bound on what a slow hub leaves in a shard's memory.
pub const SHARD_EVENTS_UNSENT_COUNT: usize = 4096;

// ---- Replication --------------------------------------------------------------------------

/// Messages waiting for the replication thread (presence, flow states, notifications
/// bound for other frontends). A burst of 19,000 reconnects fits; beyond that presence
/// is dropped and resent as a snapshot (src/replication/queue.rs).
pub const REPLICATION_OUTBOUND_QUEUE_COUNT: usize = 65_536;
/// Messages from other frontends waiting for the hub executor.
pub const REPLICATION_INBOUND_QUEUE_COUNT: usize = 65_536;
/// Messages queued on one peer's stream; a peer that falls this far behind loses
/// messages (counted) rather than growing the master's memory.
pub const REPLICATION_LINK_QUEUE_COUNT: usize = 16_384;
/// Client ids per presence snapshot message (~60 bytes each, well under gRPC's 4 MiB).
pub const PRESENCE_SNAPSHOT_CLIENTS_COUNT: usize = 5_000;
/// A minion's wait before relinking grows from MIN to MAX (with jitter) while the master
/// stays unreachable.
pub const REPLICATION_BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const REPLICATION_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A link that stayed up this long was healthy: the next failure starts backoff afresh.
/// Longer than the longest backoff, so a link that flaps is not mistaken for a healthy one.
pub const REPLICATION_HEALTHY_LINK_UPTIME: Duration = Duration::from_secs(30);
/// HTTP/2 pings on an idle link: a master cut off by the network (no RST) is noticed
/// within interval + timeout.
pub const REPLICATION_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const REPLICATION_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// A new link must finish TLS and say Hello within this.
pub const REPLICATION_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

// ---- Hunts --------------------------------------------------------------------------------

/// Agents assigned to hunts per second, fleet-wide (docs/architecture.md).
pub const DEFAULT_HUNT_RECRUITMENT_PER_SECOND: u32 = 100;

/// How often the recruiter wakes: a tenth of the bucket's burst at 100/s.
pub const RECRUIT_TICK_INTERVAL: Duration = Duration::from_millis(10);
/// Recruits written in one trip to the blocking pool, and such trips at once. One trip
/// per recruit spent more on thread handoffs than on the files for an unthrottled hunt
/// over 19,000 agents (tuning.md, P2 fan-out); a few trips at once keep the pool's
/// threads overlapping their file work.
pub const RECRUIT_BATCH_COUNT: usize = 256;
pub const RECRUIT_BATCHES_IN_FLIGHT_COUNT: u64 = 4;
/// Candidates whose facts are read in one trip to the blocking pool: one trip per
/// candidate held recruitment below 200/s on a busy box.
pub const RECRUIT_CHECK_BATCH_COUNT: usize = 256;
/// How often recruits written since are made durable together: one filesystem sync
/// per tenth of a second instead of one per recruit.
pub const RECRUIT_SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// How long an agent without known facts waits before it is checked again: they are
/// written when its `ClientInfo` upload arrives, usually a moment after it connects.
pub const RECRUIT_FACTS_RETRY_DELAY: Duration = Duration::from_secs(1);
/// How long a stopping master waits for the recruit batches being written (at most
/// RECRUIT_BATCHES_IN_FLIGHT_COUNT × RECRUIT_BATCH_COUNT flows, a second or two on a slow
/// mount); past it the next start settles them from the recruiting journal.
pub const RECRUIT_FINISH_ON_SHUTDOWN: Duration = Duration::from_secs(10);
/// How often unfinished participant flows are re-read from disk (a flow-end event may
/// have been dropped on the way), and how many per pass, so one pass stays short.
pub const HUNT_RECONCILE_INTERVAL: Duration = Duration::from_secs(15);
pub const HUNT_RECONCILE_BATCH_COUNT: usize = 2_000;

// ---- API ----------------------------------------------------------------------------------

/// A rows request may ask for at most this many rows in one page.
pub const MAX_RESULT_PAGE_ROWS: u64 = 10_000;
/// Default rows per page when the caller does not say.
pub const DEFAULT_RESULT_PAGE_ROWS: u64 = 100;
/// Clients listed per page at most.
pub const MAX_CLIENT_LIST_PAGE_COUNT: usize = 10_000;

/// Largest API request body (collection requests are small JSON documents).
pub const MAX_API_BODY_BYTES: usize = 1024 * 1024;
/// How long a refused API request's body is read (and thrown away) before the refusal is
/// sent: answering over an unread HTTP/2 body resets the stream, and some clients (curl)
/// then report a framing error instead of the answer. Bounded by `MAX_API_BODY_BYTES` too.
pub const REFUSED_API_BODY_DRAIN: Duration = Duration::from_secs(2);

/// Labels an operator may put on one client, and their length: they travel in every
/// client list item and are compared on every recruitment.
pub const MAX_LABELS_PER_CLIENT_COUNT: usize = 64;
pub const MAX_LABEL_CHARS: usize = 64;

// ---- GUI: client index -----------------------------------------------------------------------

/// Longest `search` string of a client list request. A search is a few words (an id
/// prefix, a hostname, `label:` / `os:` / `host:` terms); 1 KiB is far beyond that and
/// keeps one request's matching work bounded.
pub const MAX_CLIENT_SEARCH_CHARS: usize = 1024;
/// Most terms in one `search` (all must match). Each term is one more pass over a
/// matching entry's facts; 16 is more than anyone types.
pub const MAX_CLIENT_SEARCH_TERMS_COUNT: usize = 16;
/// Clients whose `info.json` (and `labels.json`) one blocking-pool trip reads while the
/// client index loads or refreshes: ~10 ms of disk work on this box, so the index grows
/// in visible steps and the pool stays free for the API's own reads (tuning.md, "GUI
/// client index").
pub const CLIENT_INDEX_READ_BATCH_COUNT: usize = 512;
/// Read batches the loading client index keeps in flight on the blocking pool: half of
/// its default 8 threads, so the API's own reads still find threads free; a cold disk
/// serves parallel reads faster than one after another (tuning.md, "GUI client index").
pub const CLIENT_INDEX_READS_IN_FLIGHT_COUNT: usize = 4;
const _: () = assert!(CLIENT_INDEX_READS_IN_FLIGHT_COUNT < DEFAULT_IO_THREADS_PER_EXECUTOR);
/// How often the loading client index logs its progress (a 50,000-client fleet loads in
/// a few seconds; an NFS datastore can take much longer, and the operator should see it).
pub const CLIENT_INDEX_PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// Attempts to list `clients/` at start before the index gives up (and says so in the
/// log and in `complete: false`); a datastore mount that is late at boot gets this long.
pub const CLIENT_INDEX_LIST_ATTEMPTS_COUNT: u32 = 12;
/// Wait between those attempts.
pub const CLIENT_INDEX_LIST_RETRY: Duration = Duration::from_secs(5);
/// Snapshot chunks (each at most `PRESENCE_SNAPSHOT_CLIENTS_COUNT` clients) waiting to
/// be re-read from disk: one relink of every minion of a 50,000-agent deployment is ~10;
/// beyond this a chunk is dropped and counted (the next snapshot re-reads it).
pub const CLIENT_INDEX_RESYNC_QUEUE_COUNT: usize = 64;

// ---- GUI: sessions and request checks --------------------------------------------------------

/// How long a browser session lives after login, however busy (`gui.session_timeout_s`):
/// a working day and then some, so an analyst logs in once a day and a stolen cookie
/// dies by the next.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

/// Longest `gui.session_timeout_s` a config may set: a cookie that outlives a month is a
/// credential nobody remembers handing out.
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// A session nobody used for this long ends (`gui.session_idle_timeout_s`): a browser
/// left open at a desk stops being a way in (OWASP session management: 15-60 min).
pub const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Browser sessions held at once on the master; a login beyond it evicts the oldest.
/// Each is ~200 bytes; far above the analysts a deployment has, and a bound on what a
/// stream of logins with valid credentials can make the master hold.
pub const MAX_SESSIONS_COUNT: usize = 1024;

/// Failed logins (the form or Basic) one user may have within
/// `LOGIN_FAILURE_WINDOW` before further attempts for that user get 429 without a
/// password check: slows online guessing to ~120 tries an hour per account.
pub const MAX_LOGIN_FAILURES_PER_USER_COUNT: u32 = 10;

/// Failed logins one remote address (an IPv6 /64) may have within `LOGIN_FAILURE_WINDOW`:
/// above the per-user count, so a shared NAT of honest typos is not locked out first,
/// yet one host cannot spray guesses over many accounts.
pub const MAX_LOGIN_FAILURES_PER_ADDRESS_COUNT: u32 = 30;

/// The window the failed-login counts above are kept for, from the first failure.
pub const LOGIN_FAILURE_WINDOW: Duration = Duration::from_secs(300);

/// Users and addresses whose failures are remembered at once; when full, the entry whose
/// window started first is forgotten. Bounds the throttle's memory under a spray from
/// many addresses.
pub const MAX_LOGIN_THROTTLE_ENTRIES_COUNT: usize = 4096;

/// Password checks (argon2, ~50 ms and 19 MiB each) running at once for logins and Basic
/// credentials not yet verified: guesses cannot fill the blocking pool the datastore
/// work needs (of the default 8 `io_threads_per_executor`, 6 stay free; 2 also matches
/// this box's cores, argon2 being pure CPU).
pub const MAX_PASSWORD_CHECKS_IN_FLIGHT_COUNT: usize = 2;
const _: () = assert!(MAX_PASSWORD_CHECKS_IN_FLIGHT_COUNT < DEFAULT_IO_THREADS_PER_EXECUTOR);

/// Requests that may wait for a password check; beyond it 429 + Retry-After. Room for a
/// fleet of scripts starting at once with the same credentials (the first check caches
/// them, the waiters then pass from the cache), not for an unbounded queue of guesses.
pub const MAX_PASSWORD_CHECKS_WAITING_COUNT: usize = 256;

/// `Retry-After` when that queue is full: a check takes ~50 ms, so a second drains it
/// several times over.
pub const PASSWORD_CHECKS_BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Largest login body (`{"user","password"}`): names and passwords are short.
pub const MAX_LOGIN_BODY_BYTES: usize = 4096;

// ---- GUI: assets and live views --------------------------------------------------------------

/// Live streams (`GET /api/v1/live/...`) open at once on the master; 503 beyond. Each is a
/// timer task building a small JSON document a second; 64 covers a team of analysts with
/// a few tabs each while bounding what a script opening streams in a loop can cost.
pub const MAX_LIVE_STREAMS_COUNT: usize = 64;
/// How often a live stream looks at its figures: "about once a second" is what a dashboard
/// needs to look live, and at 64 streams it is 64 small documents a second.
pub const LIVE_STREAM_TICK: Duration = Duration::from_secs(1);
/// A comment is sent when nothing else was for this long, so proxies and browsers never
/// see an idle stream (common proxy idle timeouts are 30-60 s).
pub const LIVE_STREAM_KEEPALIVE: Duration = Duration::from_secs(15);
/// Events queued for one stream's connection; when full (the client reads slower than a
/// tick) the tick is skipped: the next carries newer figures anyway.
pub const MAX_LIVE_STREAM_QUEUED_EVENTS_COUNT: usize = 4;
/// A stream whose client has not taken an event or keepalive for this long is ended, so a
/// client that stopped reading (but keeps its socket) gives its slot back.
pub const LIVE_STREAM_STALLED_END: Duration = Duration::from_secs(60);
/// The window the dashboard's rates are averaged over: the tick, so each event shows the
/// last second.
pub const LIVE_RATE_WINDOW: Duration = LIVE_STREAM_TICK;
/// The live hunts list shows the newest this many hunts (`total` counts them all): a
/// document a second per stream must stay small.
pub const MAX_LIVE_HUNTS_LISTED_COUNT: usize = 200;
/// How stale the dashboard's count of known clients (folders on the datastore) may get:
/// counting lists the clients folder, which grows with the fleet, so not per tick.
pub const LIVE_KNOWN_CLIENTS_REFRESH: Duration = Duration::from_secs(30);
/// How long a stopping frontend waits for its live streams to end their bodies.
pub const LIVE_STREAMS_END_ON_SHUTDOWN: Duration = Duration::from_secs(2);
/// How long a stopping frontend waits for the API calls being answered (HTTP and gRPC):
/// a collection being scheduled must not be cut between its documents. The slowest is a
/// write of a few small files on a slow mount.
pub const API_CALLS_FINISH_ON_SHUTDOWN: Duration = Duration::from_secs(10);
const _: () = assert!(LIVE_STREAM_KEEPALIVE.as_millis() < LIVE_STREAM_STALLED_END.as_millis());

// ---- Client event table -------------------------------------------------------------------

/// Event artifacts one list of the client event table (`all`, or one label's) may name.
/// Duplicates are refused, so today the catalogue's few event artifacts bound a list
/// already; this keeps the bound when the catalogue grows. Same value as a collection
/// request's `MAX_ARTIFACTS_PER_REQUEST`: each entry becomes a long-running query on every
/// agent the list reaches.
pub const MAX_EVENT_TABLE_ENTRIES_PER_LIST_COUNT: usize = 32;

/// Labels the client event table may have lists for. A client carries at most
/// `MAX_LABELS_PER_CLIENT_COUNT` labels, so one agent's table joins at most 65 lists; this
/// bounds the table the master keeps whole in memory and on disk. 1,024 is far more
/// label-specific monitoring than a fleet's operators can keep track of.
pub const MAX_EVENT_TABLE_LABELS_COUNT: usize = 1024;

/// Largest `PUT /api/v1/events/client_table` body (413 above). Each agent's slice of the
/// table (`all` plus its labels' lists) will travel in one task frame, so the whole table
/// stays well under `MAX_TASK_FRAME_BYTES`; a real table is a few KiB.
pub const MAX_EVENT_TABLE_BODY_BYTES: usize = 256 * 1024;
const _: () = assert!(MAX_EVENT_TABLE_BODY_BYTES <= MAX_API_BODY_BYTES);
const _: () = assert!(MAX_EVENT_TABLE_BODY_BYTES <= MAX_TASK_FRAME_BYTES / 2);

/// Verified credentials kept at most; beyond it the cache starts over (bounded memory
/// whatever callers send).
pub const MAX_CACHED_CREDENTIALS_COUNT: usize = 1024;

// ---- Events: agent queries and buffer ----------------------------------------------------
// (the agent's event queries, batching and on-disk buffer)

/// Oldest an open event batch gets before it is sealed and queued for upload: short
/// enough that a connected agent's event reaches the server well within 1 s (this plus
/// one upload round trip), long enough that a burst (a log flood, a fork storm) travels
/// in a few batches rather than one upload per row.
pub const EVENT_BATCH_MAX_AGE: Duration = Duration::from_millis(250);
/// The same while no frontend is reachable: latency does not matter then, and an hour
/// offline makes ~360 batches per artifact (files in the buffer, uploads on return)
/// instead of ~14,400.
pub const EVENT_BATCH_MAX_AGE_OFFLINE: Duration = Duration::from_secs(10);
const _: () = assert!(EVENT_BATCH_MAX_AGE.as_millis() <= EVENT_BATCH_MAX_AGE_OFFLINE.as_millis());

/// Default bound of the agent's event buffer (client config `max_event_buffer_bytes`):
/// an hour offline at ~18 KB/s of events, which is far above what the three built-in
/// queries produce on an ordinary host, on any endpoint's disk.
pub const DEFAULT_MAX_EVENT_BUFFER_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest bound a client config may set: one full upload of the smallest size an agent
/// may send, so the bound never forces a batch out the moment it is sealed.
pub const MIN_EVENT_BUFFER_BYTES: u64 = MIN_CLIENT_UPLOAD_BYTES;

/// Event batch files read back when an agent starts: each was written by the agent at
/// most `max_upload_bytes`; anything bigger is not ours and is discarded unread.
pub const MAX_EVENT_BATCH_FILE_BYTES: u64 = MAX_MAX_UPLOAD_BYTES + 64 * 1024;

/// How often `Linux.Events.ProcessStart` lists /proc: a process that lives shorter than
/// this may be missed; listing ~300 pids twice a second costs well under 1 % of a core.
pub const PROCESS_START_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How often `Linux.Events.LogTail` checks its file for new lines, rotation and
/// truncation: a quarter second keeps a log line's way to the server under 1 s.
pub const LOG_TAIL_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Longest log line sent whole; a longer one is cut here and marked `truncated` (the
/// rest, up to its newline, is skipped). Real log lines are well under 1 KiB; 16 KiB
/// keeps a runaway writer from putting megabytes in one row.
pub const MAX_LOG_LINE_BYTES: usize = 16 * 1024;
/// Most bytes one LogTail poll reads: a log growing faster than this (64 MiB/s) is
/// read over several polls instead of into one huge buffer.
pub const MAX_LOG_READ_PER_POLL_BYTES: usize = 16 * 1024 * 1024;

/// Shortest `period_s` of `Generic.Client.Stats`: a sample every second is already
/// far more than an operator reads; 0 would be a busy loop.
pub const MIN_CLIENT_STATS_PERIOD: Duration = Duration::from_secs(1);

// ---- Events: ingest and storage -----------------------------------------------------------
// (event batches on a frontend and the monitoring day files)
// Event batches are capped by `max_upload_bytes` like result batches; pages of
// `GET /api/v1/clients/{id}/monitoring/{artifact}` reuse `MAX_RESULT_PAGE_ROWS`,
// `DEFAULT_RESULT_PAGE_ROWS` and `MAX_RESULT_PAGE_BYTES`, so one API answer is bounded the
// same way whichever row set it reads.

// ---- Events: live watch ------------------------------------------------------------------
// (watchers on the master and what crosses the replication link)

/// Live watchers (`GET /api/v1/events/watch`) one master serves at once; one more is
/// answered 503. Each is an analyst's screen or a script: a few dozen is far beyond what
/// a team watches at once, and each holds up to `MAX_WATCHER_QUEUED_BYTES`.
pub const MAX_WATCHERS_COUNT: usize = 32;
/// Event batches waiting for one watcher's connection. A watcher with more waiting has
/// fallen behind: it is cut off (end line) instead of growing memory or slowing ingest.
/// At an agent's usual batch a second, 1,024 batches is minutes of a busy fleet's stream.
pub const MAX_WATCHER_QUEUED_BATCHES_COUNT: usize = 1024;
/// Row bytes waiting for one watcher's connection (the same cut-off). Above the default
/// `max_upload_bytes`, so one full batch always fits; a larger batch is taken only by an
/// empty queue. 32 watchers x 8 MiB bounds the memory watchers can hold.
pub const MAX_WATCHER_QUEUED_BYTES: usize = 8 * 1024 * 1024;
/// A minion's monitoring events waiting to cross the link to the master, in bytes, from
/// the shard that ingested them until the link's gRPC stream takes them. Beyond it a
/// batch is dropped and counted: live watch is best effort (the rows are on the
/// datastore), and presence must never wait behind a flood of events.
pub const MAX_FORWARD_QUEUED_BYTES: usize = 16 * 1024 * 1024;
/// The same bound in batches (many tiny batches).
pub const MAX_FORWARD_QUEUED_BATCHES_COUNT: usize = 4096;
/// Slots of a minion's link queue that monitoring events never take: with fewer free, a
/// batch is dropped and counted, so presence and flow states always find room.
pub const FORWARD_LINK_QUEUE_RESERVED_COUNT: usize = REPLICATION_LINK_QUEUE_COUNT / 2;
/// At shutdown, how long watchers get to be sent their end line before the executor
/// stops: a flush, not a drain of their queues.
pub const WATCHERS_END_ON_SHUTDOWN: Duration = Duration::from_millis(500);
const _: () = assert!(MAX_WATCHER_QUEUED_BYTES as u64 >= DEFAULT_MAX_UPLOAD_BYTES);

// ---- Events: sinks ------------------------------------------------------------------------
// (shipping events to Elasticsearch, ClickHouse, webhooks and files)

/// Event batches queued between the agent shards' `offer` and a sink's spool writer; full
/// means the spool writer is behind (disk stalled), and further batches are dropped and
/// counted rather than wait on an agent shard. Most batches are one row: 1,024 was 70 ms
/// of 15,000 agents' events and dropped 13,744 batches in a 5-minute run (tuning.md,
/// target `events`); 65,536 is seconds of slack. `SINK_QUEUE_BYTES` bounds the memory.
pub const SINK_QUEUE_BATCHES_COUNT: usize = 65_536;

/// Row bytes queued for one sink's spool writer at most (the batches are shared with the
/// other consumers, so this is what the sink keeps alive, not a copy).
pub const SINK_QUEUE_BYTES: u64 = 64 * 1024 * 1024;

/// Events in one request to a sink when `batch_rows` is not set: a `_bulk` or INSERT of
/// 1000 rows is the size Elasticsearch and ClickHouse both advise (a few MB at most).
pub const DEFAULT_SINK_BATCH_ROWS_COUNT: usize = 1000;
/// Largest `batch_rows`: bounds the memory of one batch held by the sender (rows are
/// bounded by `max_upload_bytes` each, but are a few hundred bytes in practice).
pub const MAX_SINK_BATCH_ROWS_COUNT: usize = 100_000;

/// How long a partial batch waits for more events before it is sent anyway: the sink's
/// latency floor when events trickle in.
pub const DEFAULT_SINK_BATCH_AGE: Duration = Duration::from_millis(1000);

/// On-disk spool of one sink when `spool_bytes` is not set: at ~300 bytes an event, about
/// 3.5 million events, i.e. an hour of a 1000-event/s fleet during a sink outage.
pub const DEFAULT_SINK_SPOOL_BYTES: u64 = 1024 * 1024 * 1024;
/// Smallest `spool_bytes`: a spool of a few typical batches (a few KiB each); the bound
/// can be passed by one batch at most, since a batch is appended whole.
pub const MIN_SINK_SPOOL_BYTES: u64 = 64 * 1024;
/// The spool is cut into this many segments, so that dropping the oldest one on overflow
/// frees about 1/8 of it while keeping 7/8 of the backlog.
pub const SINK_SPOOL_SEGMENTS_COUNT: u64 = 8;
/// Largest spool segment, whatever `spool_bytes`: what one overflow drops at most.
pub const MAX_SINK_SPOOL_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// First wait after a failed send; doubles per failure up to `MAX_SINK_RETRY_BACKOFF`,
/// each wait jittered to 50-100 % so a fleet of frontends does not retry in step.
pub const MIN_SINK_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two attempts (also the cap on an honoured Retry-After): a sink
/// that comes back is used again within this. Attempts are not capped in number: the
/// spool bound, not a retry count, decides what is given up (oldest first).
pub const MAX_SINK_RETRY_BACKOFF: Duration = Duration::from_secs(30);

/// One HTTP request to a sink, connect to answer read: a sink that hangs is retried.
pub const SINK_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest sink answer read: a `_bulk` answer for `MAX_SINK_BATCH_ROWS_COUNT` items is a
/// few MB; anything bigger is not read whole (and counts as a failed attempt).
pub const MAX_SINK_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// A `file` sink's file is rotated once it reaches this size (`max_file_bytes`).
pub const DEFAULT_SINK_FILE_BYTES: u64 = 100 * 1024 * 1024;
/// Rotated files a `file` sink keeps (`<path>.1` newest .. `<path>.N` oldest).
pub const DEFAULT_SINK_FILE_COUNT: u32 = 10;
/// Smallest `max_file_bytes`: a smaller file would rotate on every batch.
pub const MIN_SINK_FILE_BYTES: u64 = 4096;

/// How often an idle sender looks at its spool and refreshes its lag gauge; also how fast
/// it notices a stop.
pub const SINK_POLL_INTERVAL: Duration = Duration::from_millis(200);

// ---- Datastore ----------------------------------------------------------------------------

/// Largest document `read_json` accepts. Our documents are a few KiB; a bigger file is
/// not ours (or is corrupt) and must not be read into memory whole.
pub const MAX_DOCUMENT_BYTES: u64 = 16 * 1024 * 1024;

/// Bytes of row data one `read_rows` page returns at most (it always returns at least
/// one row, itself bounded by `max_upload_bytes`): bounds API memory per request.
pub const MAX_RESULT_PAGE_BYTES: u64 = 16 * 1024 * 1024;

/// Longest hostname, os or version kept from an agent, in characters: real values are
/// far shorter (a DNS name is at most 253 bytes) and these are shown in the GUI.
pub const MAX_CLIENT_FACT_CHARS: usize = 256;

/// How stale a stored `last_seen_ms` may get before a reconnect rewrites `info.json`
/// with unchanged facts. Rewriting on every connect made each reconnect allocate and
/// fsync a new inode (temp file, rename, directory sync): half the frontend's CPU per
/// connection in a reconnect storm. Whether an agent is connected now comes from
/// presence, not from this field.
pub const LAST_SEEN_WRITE_INTERVAL_MS: u64 = 10 * 60 * 1000;

/// Longest artifact name. Catalogue names are ~30 characters; 128 leaves room and keeps
/// `<name>.batches` far below NAME_MAX (255 bytes).
pub const MAX_ARTIFACT_NAME_BYTES: usize = 128;
/// Longest sanitised upload path component, in characters (all ASCII after
/// sanitising): below NAME_MAX (255 bytes) with room for a suffix.
pub const MAX_UPLOAD_COMPONENT_CHARS: usize = 200;
/// Deepest sanitised upload path; deeper agent paths keep their last components, since
/// the file name is the part an analyst needs.
pub const MAX_UPLOAD_DEPTH_COUNT: usize = 32;
/// Longest sanitised upload path, in bytes, so that datastore root + flow folder +
/// upload stays under Linux PATH_MAX (4096). 32 × 200 alone would exceed it.
pub const MAX_UPLOAD_RELATIVE_BYTES: usize = 2048;

// ---- Agent --------------------------------------------------------------------------------

/// Largest server->agent frame the agent accepts on its task stream. A task names a few
/// artifacts and parameters; 1 MiB is far above any real one and caps a hostile length.
pub const MAX_TASK_FRAME_BYTES: usize = 1024 * 1024;
/// Largest ack body the agent reads back from the server: an ack is a few fields.
pub const MAX_ACK_BYTES: usize = 64 * 1024;

/// Agent-side deadline for connect + TLS + HTTP/2 setup: the server's handshake timeout
/// plus room for the TCP connect and a slow network.
pub const AGENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Agent-side deadline for one upload round trip: the server's request timeout, so the
/// agent does not give up on an upload the server is still allowed to finish.
pub const AGENT_UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Agent reconnect backoff: starts here, doubles per failed round of URLs, capped.
pub const AGENT_BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const AGENT_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Flow ids the agent remembers so a task pushed twice (queue scan + notification,
/// reconnect) runs once. Bounded: the oldest are forgotten first.
pub const MAX_AGENT_REMEMBERED_FLOWS_COUNT: usize = 10_000;
/// Task-stream messages (tasks, event tables) received but not yet taken up, at most;
/// beyond it the stream is read no further and the server's session queue holds the rest.
pub const MAX_AGENT_QUEUED_TASKS_COUNT: usize = 256;
/// Pause after the server says it is overloaded (503) without a Retry-After.
pub const AGENT_OVERLOAD_PAUSE: Duration = Duration::from_secs(5);
/// Longest Retry-After honoured: a misconfigured server must not park agents for days.
pub const MAX_AGENT_RETRY_AFTER: Duration = Duration::from_secs(3600);

// ---- Users and roles ----------------------------------------------------------------------

/// Shortest password `packhunt user` and the users API accept: OWASP ASVS 4.0 2.1.1
/// ("user set passwords are at least 12 characters in length").
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Longest password accepted: ASVS 2.1.2 asks that at least 64 characters be allowed and
/// no more than 128 be refused; past this it is not a password but a payload for argon2.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Longest user name: names travel in Basic credentials, URLs, log lines and audit entries.
pub const MAX_USER_NAME_CHARS: usize = 64;

/// Most `[[users]]` entries: every login scans the list, and the GUI shows it on one page.
pub const MAX_USERS_COUNT: usize = 1_000;

/// How often the master looks at its config file's size and mtime to pick up user
/// changes: an added, removed or re-passworded user takes effect within this.
pub const USERS_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

// ---- Audit trail --------------------------------------------------------------------------

/// Audit entries waiting for the writer thread, at most. Entries are a few hundred bytes
/// and the writer appends thousands a second, so this absorbs a burst of minutes' worth of
/// human activity; past it an entry is dropped and counted rather than blocking an executor.
pub const AUDIT_QUEUE_CAPACITY_COUNT: usize = 4096;
/// Entries the writer appends before one fdatasync (when `fsync_documents` is on): a burst
/// costs one sync per batch, not one per entry.
pub const AUDIT_BATCH_MAX_COUNT: usize = 256;
/// Longest audit line, newline included, in bytes: PIPE_BUF (4096 on Linux), the size
/// POSIX guarantees atomic for pipes and well inside what local filesystems append in one
/// piece, so lines from several frontends sharing the datastore do not interleave. A
/// longer entry has its `detail` (then its longest field) cut to fit.
pub const MAX_AUDIT_LINE_BYTES: usize = 4096;
/// How long a stopping frontend waits for the audit writer to append and sync what is
/// queued: a full queue is a few hundred milliseconds of appends.
pub const AUDIT_FLUSH_ON_SHUTDOWN: Duration = Duration::from_secs(5);
/// At most one error log line per this interval for audit entries dropped or not written
/// (the counters say how many): a flood must not also flood the log.
pub const AUDIT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Audit entries in one `GET /api/v1/audit` page by default, and at most (a page is
/// shown whole in the GUI; a script pages with `start_row`).
pub const DEFAULT_AUDIT_PAGE_ROWS: u64 = 100;
pub const MAX_AUDIT_PAGE_ROWS: u64 = 1000;
/// Widest time range one `GET /api/v1/audit` reads, in days of day files: each day in
/// range is a file read (twice for the page's days), so a year is the most one request
/// may cost.
pub const MAX_AUDIT_QUERY_DAYS_COUNT: u64 = 366;
/// The range `GET /api/v1/audit` reads when `start_ms` is not given: the last day.
pub const DEFAULT_AUDIT_QUERY_SPAN: Duration = Duration::from_secs(24 * 3600);
const _: () = assert!(DEFAULT_AUDIT_PAGE_ROWS <= MAX_AUDIT_PAGE_ROWS);
// Room for every field cut to its marker plus the keys: an entry always fits.
const _: () = assert!(MAX_AUDIT_LINE_BYTES >= 512);

// ---- gRPC API and API clients -------------------------------------------------------------

/// The `[api]` port `config generate` writes: the GUI's port plus one, easy to remember.
pub const DEFAULT_API_PORT: u16 = 8890;
/// An API client certificate lives a year: long enough for a script's service account,
/// short enough that a forgotten one stops working on its own (there is no revocation list).
pub const API_CLIENT_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(366 * 24 * 3600);
/// An API client's name: short enough for a log line and a certificate URI.
pub const MAX_API_CLIENT_NAME_CHARS: usize = 64;
/// gRPC calls being answered at once (each holds a slot from its start until its last
/// streamed message): bounds the work API clients can put on the priority executor.
pub const MAX_GRPC_CALLS_IN_FLIGHT_COUNT: usize = 64;
/// gRPC calls waiting for the priority executor to take them; the in-flight cap keeps this
/// from filling in practice, and a full queue answers Unavailable instead of waiting.
pub const GRPC_CALL_QUEUE_COUNT: usize = 64;
/// Chunks of a streamed answer between the priority executor and the gRPC thread: a slow
/// reader holds the producer back after this many (backpressure, bounded memory).
pub const GRPC_STREAM_CHUNKS_QUEUED_COUNT: usize = 4;
/// Open gRPC API connections (and handshakes): each costs a file and TLS state; beyond it
/// new connections are closed at once and counted.
pub const MAX_GRPC_CONNECTIONS_COUNT: usize = 256;
/// A TLS handshake on the API port must finish within this, so a peer that connects and
/// says nothing holds a connection slot only briefly.
pub const GRPC_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows asked for per page when a gRPC call streams a result set (the JSON API's pages
/// underneath): big enough to amortise a page's datastore read, far under its row cap.
pub const GRPC_RESULT_PAGE_ROWS: u64 = 1_000;
/// HTTP/2 keepalive on API connections: a peer that vanished without a FIN is noticed.
pub const GRPC_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keepalive ping may go unanswered before the connection is closed.
pub const GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// A JSON line of a streamed answer (a watch event) larger than this ends the stream with
/// an error rather than grow a buffer without bound.
pub const MAX_GRPC_STREAM_LINE_BYTES: usize = 16 * 1024 * 1024;

// ---- Agent port hardening -----------------------------------------------------------------

/// A connection must have sent its whole ClientHello within this: a real agent sends it
/// at once, so seconds are plenty; the full handshake deadline (10 s) is for the rest.
pub const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// Handshakes in flight one source address may hold on one agent shard; beyond it the
/// connection is closed before any TLS work, so one address cannot take every handshake
/// permit. Generous for agents behind one NAT address reconnecting together (they retry).
pub const HANDSHAKES_IN_FLIGHT_PER_SOURCE_COUNT: usize = 32;
/// An upload's body must keep arriving: this long without a DATA frame (before the first
/// one or between two) ends the stream. A real agent sends its body at once.
pub const UPLOAD_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Uploads one connection may have admitted (holding a concurrency permit) at once: an
/// agent uploads one batch at a time, so a few stalled connections hold few permits.
pub const MAX_UPLOADS_ADMITTED_PER_CONNECTION_COUNT: usize = 2;
/// Task-stream bytes a stream's pump takes off its (count-bounded) queue ahead of the
/// agent's flow-control window; beyond it frames wait in that queue, and pushes that
/// find it full leave their task on disk. At least one largest task frame.
pub const MAX_TASK_STREAM_QUEUED_BYTES: usize = 1024 * 1024;
/// A task stream holding `MAX_TASK_STREAM_QUEUED_BYTES` whose agent took nothing for this
/// long is not being read: it is ended, and its tasks wait on disk for the next connect.
pub const TASK_STREAM_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// h2's per-stream send buffer: what a task stream may hand h2 beyond the agent's window.
pub const H2_SEND_BUFFER_BYTES: usize = 64 * 1024;
/// Streams the peer reset before we accepted them that h2 may hold (rapid reset);
/// above it h2 says GOAWAY ENHANCE_YOUR_CALM. h2's default is 20.
pub const H2_PENDING_ACCEPT_RESETS_COUNT: usize = 20;
/// Streams h2 itself reset for the peer's protocol errors before it ends the connection
/// (ENHANCE_YOUR_CALM). A real agent makes none.
pub const H2_LOCAL_ERROR_RESETS_COUNT: usize = 32;
/// Frames per second (and burst) one agent connection may send, per kind, before it is
/// ended with GOAWAY ENHANCE_YOUR_CALM. h2 answers PINGs and SETTINGS itself and bounds
/// only what it buffers, not the CPU a flood costs. A real agent sends a SETTINGS at
/// start, no PING, a reset now and then, one HEADERS per upload.
pub const H2_PINGS_PER_SECOND: u64 = 10;
pub const H2_PING_BURST_COUNT: u64 = 50;
pub const H2_SETTINGS_PER_SECOND: u64 = 10;
pub const H2_SETTINGS_BURST_COUNT: u64 = 50;
pub const H2_RESETS_PER_SECOND: u64 = 50;
pub const H2_RESET_BURST_COUNT: u64 = 200;
/// HEADERS: loadgen's fast agents upload a few hundred small batches a second.
pub const H2_HEADERS_PER_SECOND: u64 = 2000;
pub const H2_HEADERS_BURST_COUNT: u64 = 4000;
/// An agent's headers fit one frame: CONTINUATION is never needed.
pub const H2_CONTINUATIONS_PER_SECOND: u64 = 20;
pub const H2_CONTINUATION_BURST_COUNT: u64 = 100;
/// PRIORITY and WINDOW_UPDATE frames and empty DATA frames (no END_STREAM): cheap each,
/// costly as a flood (CVE-2019-9513, -9517, -9518).
pub const H2_SMALL_FRAMES_PER_SECOND: u64 = 2000;
pub const H2_SMALL_FRAME_BURST_COUNT: u64 = 4000;

// ---- Fleet trust: minion messages and clones ----------------------------------------------
/// How long the frontend holding a client's older task stream waits for the HTTP/2 PING
/// answer on that stream's connection before calling it dead (a half-open connection
/// after a network blip) rather than a live clone. A live agent's h2 task answers a PING
/// within milliseconds even on a busy host; 2 s leaves room for a loaded box and is
/// still short beside the idle timeout that would otherwise find the dead peer.
pub const CLONE_LIVENESS_PING_DEADLINE: Duration = Duration::from_secs(2);
/// Displaced streams (a client id seen at a second place) the hub holds for dispatch to
/// the shard or frontend that owns the older stream. When full the notice is dropped and
/// counted (`packhunt_fleet_displaced_dropped_total`): the older stream then ends when its
/// agent goes away or idles out, as it did before clones were detected.
pub const DISPLACED_QUEUE_COUNT: usize = 1024;
/// Frontends a master keeps per-minion refusal counters for: bounded by the configured
/// minions, which every admitted link must be; a margin for minions added at run time.
pub const MAX_MINION_COUNTERS_COUNT: usize = 256;

// ---- Secrets, GUI port and decoders -------------------------------------------------------

/// A GUI/API connection must finish its TLS handshake this long after accept
/// (`gui.tls_accept_timeout_ms`): a browser does it in one round trip; a peer that opens
/// a socket and sends nothing holds a file and a slot of the cap until then.
pub const DEFAULT_GUI_TLS_ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
/// An HTTP/1 request's headers must be complete this long after their first byte
/// (`gui.header_timeout_ms`): a real request's headers come in one packet; a slow-loris
/// peer trickling bytes is cut here rather than at the idle timeout.
pub const DEFAULT_GUI_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A GUI/API connection with no request in flight for this long is closed
/// (`gui.connection_idle_timeout_ms`). Browsers keep idle connections 60-300 s and reopen on need;
/// live views are requests in flight, so they never idle out.
pub const DEFAULT_GUI_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// GUI/API connections open at once (`gui.max_connections`); more are closed at accept
/// and counted. They come out of the files `RESERVED_FILES_COUNT` keeps back from agents
/// (at most half of it, checked at load), so a flood of GUI connections cannot take the
/// files result sets and the datastore need. A browser opens ~6 per origin.
pub const DEFAULT_MAX_GUI_CONNECTIONS_COUNT: u32 = 128;
/// How often a GUI connection's watchdog looks at its clock: the timeouts above bite
/// within this much of their value.
pub const GUI_CONNECTION_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// A GUI/API request body must have arrived this long after its headers; a body trickled
/// byte by byte otherwise holds its connection and its request in flight forever.
pub const GUI_REQUEST_BODY_DEADLINE: Duration = Duration::from_secs(60);

/// Mode of every datastore folder at creation: owner rwx, group rx, others nothing. The
/// datastore holds what agents collected (files, process lists, events): no other local
/// user may read it; a group may, for backups and read-only tooling.
pub const DATASTORE_DIR_MODE: u32 = 0o750;
/// Mode of every datastore file at creation (owner rw, group r); the frontend also sets
/// its umask to `PROCESS_UMASK` so files made by any library follow it.
pub const DATASTORE_FILE_MODE: u32 = 0o640;
/// The frontend's umask: whatever it creates (datastore, spools, sink files) leaves out
/// others' bits and group write.
pub const PROCESS_UMASK: u32 = 0o027;

/// Bytes of the enrolment secret `config generate --enrolment-secret` makes (before
/// base64url): 256 bits, beyond guessing.
pub const ENROLMENT_SECRET_BYTES: usize = 32;
/// Shortest enrolment secret a config may set: shorter ones can be guessed by a peer
/// that tries from many connections.
pub const MIN_ENROLMENT_SECRET_CHARS: usize = 16;
/// Longest enrolment secret: it travels in a header on every agent request, within
/// `MAX_H2_HEADER_LIST_BYTES`.
pub const MAX_ENROLMENT_SECRET_CHARS: usize = 256;

/// Cases each property test of an untrusted decoder runs by default (`PROPTEST_CASES`
/// overrides): enough to find the shallow panics, short enough for every CI run.
pub const DEFAULT_PROPERTY_TEST_CASES_COUNT: u32 = 256;

/// The property tests' runner settings: `PROPTEST_CASES`, or
/// `DEFAULT_PROPERTY_TEST_CASES_COUNT`; no regression files written into the source tree.
#[cfg(test)]
pub fn property_test_config() -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_PROPERTY_TEST_CASES_COUNT);
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

// ---- Operations: the datastore mount's start-up checks ------------------------------------

/// Free space the datastore's mount must have for a frontend to start
/// (`[datastore] min_free_bytes`; 0 turns the check off). 256 MiB covers the upload bodies
/// one default frontend may hold at once (`concurrency × max_upload_bytes` = 160 MiB on 2
/// cores) with room for the documents around them: a frontend started on a nearly full
/// mount would only answer its agents with 503s (docs/operating.md, "The datastore on a
/// network filesystem").
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;
/// A mount check's scratch folder older than this was left by a frontend killed mid-check
/// (a check takes milliseconds, seconds on a slow NFS server): the next start removes it.
pub const MOUNT_CHECK_STALE_AFTER: Duration = Duration::from_secs(10 * 60);
/// Appends the mount check makes through its two O_APPEND handles, alternating: enough to
/// see one handle write at a stale offset over the other's record.
pub const MOUNT_CHECK_APPEND_COUNT: usize = 8;

// ---- Operations: health checks, drain and rolling restarts --------------------------------

/// How long a stopping frontend lets uploads in flight finish (`frontend.drain_timeout_ms`)
/// after it told its agents to move. Agents send one upload at a time of at most
/// `max_upload_bytes` (10 MiB): 30 s carries one at ~3 Mbit/s, a slow agent link; a
/// stalled agent must not hold a rolling restart longer than that, and what it did not
/// finish it resends to the next frontend (its outbox keeps it until acknowledged).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest drain a config may ask for: a service manager's stop timeout (systemd's
/// `TimeoutStopSec`, 90 s by default) must outlast it, or it kills the process mid-drain.
pub const MAX_DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
/// How often a draining shard looks whether its connections have all closed.
pub const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long the main thread waits for the shards' drains beyond the drain timeout before
/// it stops the rest anyway: a shard's last steps (closing its queues, logging) are quick,
/// so this only bounds a bug.
pub const DRAIN_REPORT_SLACK: Duration = Duration::from_secs(5);
/// How long the hub, once every shard has drained, waits for the last presence and flow
/// events the shards queued to be applied and handed to the replication link.
pub const PRESENCE_FLUSH_ON_SHUTDOWN: Duration = Duration::from_secs(2);
/// How long a stopping minion's link keeps sending what is queued for the master (agents
/// that left, flows that ended during the drain) before it closes.
pub const LINK_FLUSH_ON_SHUTDOWN: Duration = Duration::from_secs(2);
/// A session the server ended sooner than this after it began counts as a failed connect
/// in the agent's round of URLs: "go to the next frontend at once" must not become a tight
/// reconnect loop against frontends that take agents and end their streams at once.
pub const AGENT_MIN_SESSION_FOR_MOVE: Duration = Duration::from_secs(1);

// ---- Operations: a full shared disk --------------------------------------------------------

/// Bounds of `[limits] disk_full_retry_after_s` (default `RETRY_AFTER_DISK_FULL`). At least
/// a second: 0 would tell a whole fleet to retry at once against a disk that is still full.
/// At most what agents honour (`MAX_AGENT_RETRY_AFTER`): a longer wait is cut to that by
/// every agent anyway, so accepting it would only mislead whoever reads the config.
pub const MIN_DISK_FULL_RETRY_AFTER: Duration = Duration::from_secs(1);
pub const MAX_DISK_FULL_RETRY_AFTER: Duration = MAX_AGENT_RETRY_AFTER;

/// At most one log line per this interval says the datastore is full (its start, then
/// reminders with the count so far; the end is logged once): a start and an end alone
/// leave an operator reading the log mid-outage guessing, a line per refusal is a flood
/// (a 15,000-agent fleet retries ~50 times a second at the default Retry-After), and at
/// the edge of full the state flaps within milliseconds (a failed write gives back its
/// pages, and the next may fit).
pub const DISK_FULL_LOG_INTERVAL: Duration = Duration::from_secs(60);

// ---- Performance: targeted notifications ----------------------------------------------------

/// How long the master remembers a notice (work, a cancel, a label change) it sent toward
/// the frontend presence had the client at, so that it can send it again where the client
/// turns up next (notify/fleet.rs). It covers a presence report's trip from a minion's
/// shard to the master's hub over a link that stays up: milliseconds normally, seconds in
/// a reconnect storm of 19,000 agents on this box (task delivery p99 was 15 s in the soak,
/// tuning.md); a link that stops carrying anything is cut within keepalive interval +
/// timeout (10 s) and its minion then rescans every agent at its relink. 120 s is eight
/// times the worst trip measured.
pub const FLEET_RESEND_WINDOW: Duration = Duration::from_secs(120);
/// Clients whose notices the master remembers at once. Past it (after the ones older than
/// `FLEET_RESEND_WINDOW` are let go) a notice goes to every minion, as before targeting,
/// and is counted (`reason="record_full"`). 131,072 holds a hunt over every agent of a
/// 100,000-agent fleet recruited within the window, at ~150 bytes each (~20 MiB).
pub const MAX_FLEET_RESEND_CLIENTS_COUNT: usize = 131_072;
/// Notices remembered per client within the window; a client tasked faster than this
/// gets its next ones sent to every minion. An analyst or a hunt rarely queues more than
/// a few flows per client a minute.
pub const MAX_FLEET_RESEND_NOTICES_PER_CLIENT_COUNT: usize = 16;
/// A full log is swept for expired entries at most this often, so a log full of fresh
/// entries does not cost a sweep per notice.
pub const FLEET_RESEND_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

const _: () = assert!(
    ms(FLEET_RESEND_WINDOW)
        > ms(REPLICATION_KEEPALIVE_INTERVAL) + ms(REPLICATION_KEEPALIVE_TIMEOUT)
);
const _: () = assert!(ms(FLEET_RESEND_SWEEP_INTERVAL) < ms(FLEET_RESEND_WINDOW));

// ---- Performance: facts (sessions/facts.rs) -------------------------------------------------

/// Largest upload body that takes the facts path (an agent's ClientInfo) instead of the
/// general upload path and its permits. Real facts are three strings the server cuts to
/// `MAX_CLIENT_FACT_CHARS` characters (≤ 4 bytes each in UTF-8) plus a few bytes of tags
/// and lengths; a longer ClientInfo still works, through the general path.
pub const MAX_FACTS_UPLOAD_BYTES: u64 = 4 * 1024;

/// Facts trips to the blocking pool (read info.json, write it when the facts changed) a
/// shard runs at once: its own small budget beside the upload permits, so a fresh fleet's
/// first contact neither waits for nor takes a permit. Half of the default 8 io threads
/// per executor: a first-contact write costs three fsyncs (~2 ms each on this box's
/// disk), so 4 in flight write ~650 clients' facts a second per shard, and the other
/// threads stay free for results.
pub const FACTS_TRIPS_IN_FLIGHT_PER_SHARD_COUNT: usize = 4;

/// How long facts wait for the shard's facts budget before 503 + Retry-After. Generous:
/// an agent does nothing else before its facts are in (hunts need them), so a refusal
/// only makes it come back later; at ~650 facts/s a shard works through a queue of the
/// size below within it. Short of the 60 s request timeout.
pub const FACTS_WAIT: Duration = Duration::from_secs(30);

/// Facts waiting for the budget per shard before new ones are refused at once. One per
/// connection a process can hold (its 20,000 open files), so a fleet that connects all
/// at once is queued, not refused; each waiter holds at most `MAX_FACTS_UPLOAD_BYTES`.
pub const MAX_FACTS_WAITING_PER_SHARD_COUNT: usize = 20_000;

/// Clients whose facts a frontend remembers (a hash of them and when they were last
/// recorded) so that a reconnect with the same facts costs no blocking-pool trip. One
/// per agent a process can hold with this box's 20,000 open files, twice over so that a
/// fleet moving between frontends in a storm still finds its own; the oldest half is
/// forgotten when it is full. About 150 bytes each: ≤ 6 MiB per process.
pub const FACTS_SEEN_PER_PROCESS_COUNT: usize = 40_000;

// ---- Relations ----------------------------------------------------------------------------

const fn ms(d: Duration) -> u128 {
    d.as_millis()
}

const _: () = assert!(ms(CLIENT_HELLO_TIMEOUT) < ms(DEFAULT_HANDSHAKE_TIMEOUT));
const _: () = assert!(ms(UPLOAD_BODY_IDLE_TIMEOUT) < ms(DEFAULT_REQUEST_TIMEOUT));
const _: () = assert!(MAX_TASK_STREAM_QUEUED_BYTES >= MAX_TASK_FRAME_BYTES);

const _: () = assert!(MIN_CLIENT_UPLOAD_BYTES <= DEFAULT_MAX_UPLOAD_BYTES);
const _: () = assert!(DEFAULT_MAX_UPLOAD_BYTES <= MAX_MAX_UPLOAD_BYTES);
const _: () = assert!(MIN_IO_MEMORY_BYTES <= DEFAULT_IO_MEMORY_BYTES);
const _: () = assert!(MIN_IO_RING_DEPTH <= DEFAULT_IO_RING_DEPTH);
const _: () = assert!(DEFAULT_IO_RING_DEPTH <= MAX_IO_RING_DEPTH);
const _: () = assert!(MIN_FILE_WORK_NICE <= DEFAULT_FILE_WORK_NICE);
const _: () = assert!(DEFAULT_FILE_WORK_NICE <= MAX_FILE_WORK_NICE);
const _: () = assert!(DEFAULT_IO_THREADS_PER_EXECUTOR <= MAX_IO_THREADS_PER_EXECUTOR);
const _: () = assert!(RESERVED_FILES_COUNT < DEFAULT_MAX_OPEN_FILES);
const _: () = assert!(DEFAULT_MAX_GUI_CONNECTIONS_COUNT as u64 <= RESERVED_FILES_COUNT / 2);
const _: () = assert!(MIN_ENROLMENT_SECRET_CHARS <= MAX_ENROLMENT_SECRET_CHARS);
const _: () = assert!(DEFAULT_RESULT_PAGE_ROWS <= MAX_RESULT_PAGE_ROWS);
// A permit wait that outlasts the request would be cut short by the request timeout.
const _: () = assert!(ms(DEFAULT_CONCURRENCY_WAIT) < ms(DEFAULT_REQUEST_TIMEOUT));
const _: () = assert!(ms(NOTIFY_SEND_DEADLINE) < ms(DEFAULT_REQUEST_TIMEOUT));
const _: () = assert!(ms(RETRY_AFTER_CONCURRENCY_MIN) <= ms(RETRY_AFTER_CONCURRENCY_MAX));
// The agent must honour every Retry-After the server sends, or it returns too early.
const _: () = assert!(ms(RETRY_AFTER_DISK_FULL) <= ms(MAX_AGENT_RETRY_AFTER));
const _: () = assert!(ms(MIN_DISK_FULL_RETRY_AFTER) <= ms(RETRY_AFTER_DISK_FULL));
const _: () = assert!(ms(RETRY_AFTER_DISK_FULL) <= ms(MAX_DISK_FULL_RETRY_AFTER));
const _: () = assert!(ms(MIN_DISK_FULL_RETRY_AFTER) > 0);
const _: () = assert!(ms(RETRY_AFTER_CONCURRENCY_MAX) <= ms(MAX_AGENT_RETRY_AFTER));
const _: () = assert!(ms(AGENT_UPLOAD_TIMEOUT) >= ms(DEFAULT_REQUEST_TIMEOUT));
const _: () = assert!(ms(AGENT_CONNECT_TIMEOUT) >= ms(DEFAULT_HANDSHAKE_TIMEOUT));
const _: () = assert!(ms(AGENT_BACKOFF_MIN) <= ms(AGENT_BACKOFF_MAX));
const _: () = assert!(ms(DEFAULT_DRAIN_TIMEOUT) <= ms(MAX_DRAIN_TIMEOUT));
const _: () = assert!(ms(REPLICATION_BACKOFF_MIN) <= ms(REPLICATION_BACKOFF_MAX));
const _: () = assert!(ms(REPLICATION_BACKOFF_MAX) < ms(REPLICATION_HEALTHY_LINK_UPTIME));
const _: () = assert!(MAX_UPLOAD_COMPONENT_CHARS < MAX_UPLOAD_RELATIVE_BYTES);
// Facts the server keeps whole (three fields cut to MAX_CLIENT_FACT_CHARS, 4 bytes a
// character at most, with tags and lengths) fit the facts path.
const _: () = assert!(3 * (MAX_CLIENT_FACT_CHARS as u64 * 4 + 3) + 8 <= MAX_FACTS_UPLOAD_BYTES);
// A facts body is read whole within the connection's idle window (no widening for it).
const _: () = assert!(MAX_FACTS_UPLOAD_BYTES <= H2_CONNECTION_WINDOW_IDLE_BYTES as u64);
const _: () = assert!(FACTS_TRIPS_IN_FLIGHT_PER_SHARD_COUNT < DEFAULT_IO_THREADS_PER_EXECUTOR);
const _: () = assert!(ms(FACTS_WAIT) < ms(DEFAULT_REQUEST_TIMEOUT));
const _: () = assert!(FACTS_SEEN_PER_PROCESS_COUNT >= 2);

/// A shard's share of a per-frontend limit (`concurrency`, `max_connections_per_second`):
/// shares differ by at most one and every shard gets at least one.
pub fn shard_share(total: u32, shards: usize, shard: usize) -> u64 {
    let (shards, shard) = (shards.max(1) as u64, shard as u64);
    let total = u64::from(total);
    (total / shards + u64::from(shard < total % shards)).max(1)
}

/// A reconnect delay for the `round`-th failed attempt in a row: full jitter between `min`
/// and a ceiling that doubles per round up to `max`, so a fleet (or the minions) that lost
/// its peer at once comes back spread out instead of in one wave.
pub fn jittered_backoff(min: Duration, max: Duration, round: u32) -> Duration {
    let ceiling = min.saturating_mul(1u32 << round.min(16)).min(max);
    let ms = rand::thread_rng().gen_range(min.as_millis() as u64..=ceiling.as_millis() as u64);
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_its_bounds_and_its_ceiling_grows() {
        let (min, max) = (AGENT_BACKOFF_MIN, AGENT_BACKOFF_MAX);
        for round in [0, 1, 3, 16, 40] {
            let ceiling = min.saturating_mul(1u32 << round.min(16)).min(max);
            for _ in 0..100 {
                let pause = jittered_backoff(min, max, round);
                assert!(min <= pause && pause <= ceiling, "round {round}: {pause:?}");
            }
        }
        assert_eq!(jittered_backoff(min, max, 0), min);
    }

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
