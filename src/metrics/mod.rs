//! Process-wide counters and gauges, rendered in Prometheus text format by `GET /metrics`.
//! One typed field per thing that can happen (vector-style events, not string keys), so
//! a misspelt metric is a compile error. Relaxed atomics: each value is independent and
//! only ever read for display. client_id is never a label.

mod histogram;

pub use histogram::LatencyHistogram;

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;

/// Why an upload or connection was refused; the `reason` label of rejection counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    TooLarge,
    BadFrame,
    BadJsonl,
    BadName,
    /// Also a flow that does not exist: only the client's own folder is searched, so
    /// the two are one case.
    NotYourFlow,
    FlowClosed,
    Internal,
    Overloaded,
    Timeout,
    Busy,
    Concurrency,
    /// An event batch whose time_ms do not match its rows or span two UTC days.
    BadEventTimes,
    /// An event batch for an artifact that is not an event artifact of the catalogue.
    NotEventArtifact,
}

impl RejectReason {
    pub const ALL: [RejectReason; 13] = [
        Self::TooLarge,
        Self::BadFrame,
        Self::BadJsonl,
        Self::BadName,
        Self::NotYourFlow,
        Self::FlowClosed,
        Self::Internal,
        Self::Overloaded,
        Self::Timeout,
        Self::Busy,
        Self::Concurrency,
        Self::BadEventTimes,
        Self::NotEventArtifact,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::BadFrame => "bad_frame",
            Self::BadJsonl => "bad_jsonl",
            Self::BadName => "bad_name",
            Self::NotYourFlow => "not_your_flow",
            Self::FlowClosed => "flow_closed",
            Self::Internal => "internal",
            Self::Overloaded => "overloaded",
            Self::Timeout => "timeout",
            Self::Busy => "busy",
            Self::Concurrency => "concurrency",
            Self::BadEventTimes => "bad_event_times",
            Self::NotEventArtifact => "not_event_artifact",
        }
    }
}

/// Why an agent connection ended before or instead of serving; `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    OutOfFiles,
    HandshakeFailed,
    HandshakeTimeout,
    NoClientCertificate,
    Http2Failed,
    IdleTimeout,
    RateLimited,
    PeerGone,
}

impl ConnectionRefusal {
    pub const ALL: [ConnectionRefusal; 8] = [
        Self::OutOfFiles,
        Self::HandshakeFailed,
        Self::HandshakeTimeout,
        Self::NoClientCertificate,
        Self::Http2Failed,
        Self::IdleTimeout,
        Self::RateLimited,
        Self::PeerGone,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::OutOfFiles => "out_of_files",
            Self::HandshakeFailed => "handshake_failed",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::NoClientCertificate => "no_client_certificate",
            Self::Http2Failed => "http2_failed",
            Self::IdleTimeout => "idle_timeout",
            Self::RateLimited => "rate_limited",
            Self::PeerGone => "peer_gone",
        }
    }
}

/// The replication queues whose drops are counted; `queue` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationQueue {
    /// executors -> replication thread (crossbeam).
    Outbound,
    /// replication thread -> hub.
    Inbound,
    /// one peer's stream on the link (slow or stuck peer).
    Link,
    /// queued while no link was up (presence is resent as a snapshot).
    LinkDown,
}

impl ReplicationQueue {
    pub const ALL: [ReplicationQueue; 4] =
        [Self::Outbound, Self::Inbound, Self::Link, Self::LinkDown];

    pub fn label(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
            Self::Link => "link",
            Self::LinkDown => "link_down",
        }
    }
}

/// Flow state transitions, counted once each as they are written to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEvent {
    Scheduled,
    Started,
    Finished,
    Errored,
}

// ---- Events: sinks ----

/// Why a sink gave events up (`packhunt_sink_dropped_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkDrop {
    /// The queue from the agent shards to the spool writer was full (disk stalled).
    QueueFull,
    /// The spool reached `spool_bytes`: its oldest segment was deleted unsent.
    SpoolFull,
    /// The sink refused them for good (a 4xx other than 408/429, a bulk item's mapping
    /// error): sending them again would fail again.
    Rejected,
    /// A spool line that could not be read back (torn by a crash, or not ours).
    Corrupt,
    /// The spool could not be written (disk full, I/O error).
    SpoolError,
}

impl SinkDrop {
    pub const ALL: [SinkDrop; 5] = [
        Self::QueueFull,
        Self::SpoolFull,
        Self::Rejected,
        Self::Corrupt,
        Self::SpoolError,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::SpoolFull => "spool_full",
            Self::Rejected => "rejected",
            Self::Corrupt => "corrupt",
            Self::SpoolError => "spool_error",
        }
    }
}

/// One sink's series, labelled `sink="name"`. Counts are events, not batches.
#[derive(Default)]
pub struct SinkMetrics {
    pub sent: AtomicU64,
    /// Events in attempts that failed and were (or will be) tried again.
    pub retried: AtomicU64,
    pub spooled_bytes: AtomicI64,
    /// Now minus the time of the oldest unsent event, in seconds; 0 when none is waiting.
    pub lag_seconds: AtomicI64,
    dropped: [AtomicU64; SinkDrop::ALL.len()],
}

impl SinkMetrics {
    pub fn dropped(&self, reason: SinkDrop, events: u64) {
        self.dropped[reason as usize].fetch_add(events, Ordering::Relaxed);
    }

    pub fn dropped_count(&self, reason: SinkDrop) -> u64 {
        self.dropped[reason as usize].load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct Metrics {
    pub connections_accepted: AtomicU64,
    pub connections_open: AtomicI64,
    pub handshakes_completed: AtomicU64,
    pub handshakes_resumed: AtomicU64,
    pub sessions_open: AtomicI64,
    pub session_conflicts: AtomicU64,
    pub tasks_pushed: AtomicU64,
    pub notifications_sent: AtomicU64,
    pub notifications_dropped: AtomicU64,
    pub uploads_accepted: AtomicU64,
    pub uploads_duplicate: AtomicU64,
    pub uploads_out_of_order: AtomicU64,
    pub upload_bytes: AtomicU64,
    pub rows_written: AtomicU64,
    pub result_bytes_written: AtomicU64,
    pub files_uploaded_bytes: AtomicU64,
    pub api_requests: AtomicU64,
    pub api_unauthorized: AtomicU64,
    pub replication_links_up: AtomicI64,
    pub hunt_recruited: AtomicU64,
    /// Recruitment candidates whose facts came from the master's client index.
    pub hunt_facts_from_memory: AtomicU64,
    /// Recruitment candidates whose info.json was read (not in the index yet).
    pub hunt_facts_read: AtomicU64,
    pub hunt_pending_recruitment: AtomicI64,
    /// EventTable frames sent down task streams (at connect and on a table change).
    pub event_table_frames_sent: AtomicU64,
    /// EventTable frames not sent because the agent already held exactly that table: its
    /// digest header at connect, or a table or label change that left its queries as they
    /// were.
    pub event_table_frames_skipped: AtomicU64,
    /// Table hand-offs from the hub to a shard dropped (shard queue full past deadline).
    pub event_table_handoffs_dropped: AtomicU64,
    /// The client event table version this frontend last handed to its shards.
    pub event_table_version: AtomicI64,
    /// The configured `[limits]`, set once at start: every limit shows in /metrics.
    limits: OnceLock<Vec<(&'static str, i64)>>,
    /// GUI/API requests, from their headers parsed to their answer built: the frontend's
    /// own handling, not the network, TLS or the client. Reads (GET) and changes apart.
    pub api_read_latency: LatencyHistogram,
    pub api_write_latency: LatencyHistogram,
    pub uploads_in_flight: AtomicI64,
    pub uploads_waiting: AtomicI64,
    pub upload_bytes_in_flight: AtomicI64,
    /// Set at start: `concurrency` and `concurrency × max_upload_bytes`.
    pub upload_concurrency_limit: AtomicI64,
    pub upload_memory_bound_bytes: AtomicI64,
    pub replication_sent: AtomicU64,
    pub replication_received: AtomicU64,
    /// Links the master refused: failed TLS (not signed by the CA), unknown minion name,
    /// or a certificate other than the one configured for the name.
    pub replication_refused: AtomicU64,
    /// A minion's attempts to link to the master that failed or ended.
    pub replication_link_failures: AtomicU64,
    /// Messages from a linked frontend dropped for a field this one cannot read (an
    /// unknown flow state, a malformed id): a version mismatch or a bug on the sender.
    pub replication_malformed: AtomicU64,
    // ---- Events: live watch (events/watch.rs, replication/forward.rs) ----
    /// Watchers connected to this master's `GET /api/v1/events/watch`.
    pub events_watchers: AtomicI64,
    /// Event artifacts watched: on the master, by its watchers; on a minion, the ones the
    /// master last said it watches (what this minion forwards).
    pub events_watched_artifacts: AtomicI64,
    /// Events (rows) written to watchers' streams.
    pub events_watch_delivered: AtomicU64,
    /// Watchers cut off for falling behind (their queue was full).
    pub events_watch_cut_off: AtomicU64,
    /// Watch requests refused because `MAX_WATCHERS_COUNT` were connected.
    pub events_watch_refused: AtomicU64,
    /// Minion: monitoring event batches handed to the link for the master.
    pub events_watch_forwarded: AtomicU64,
    /// Minion: watched batches dropped (forward queue or link queue full, link down).
    pub events_watch_forward_dropped: AtomicU64,
    /// Minion: batches not forwarded because the master watches no such artifact.
    pub events_watch_unwatched: AtomicU64,
    /// Master: monitoring event batches received from minions for its watchers.
    pub events_watch_received: AtomicU64,
    // Events: ingest and storage (sessions/event_streams.rs), counted per written batch.
    pub events_rows_ingested: AtomicU64,
    pub events_bytes_ingested: AtomicU64,
    pub events_batches_ingested: AtomicU64,
    /// Event batches answered DUPLICATE (a resend; nothing written).
    pub events_duplicate_batches: AtomicU64,
    /// Sum of `dropped_before` over written batches: events agents lost to a full buffer.
    pub events_dropped_by_agents: AtomicU64,
    replication_dropped: [AtomicU64; ReplicationQueue::ALL.len()],
    upload_rejections: [AtomicU64; RejectReason::ALL.len()],
    connection_refusals: [AtomicU64; ConnectionRefusal::ALL.len()],
    flow_events: [AtomicU64; 4],
    // ---- Events: sinks ----
    /// Each configured sink's series, registered when the sink starts (a few per process).
    sinks: std::sync::Mutex<Vec<(String, std::sync::Arc<SinkMetrics>)>>,
    // ---- Files: server side (sessions/file_upload.rs, api/uploads.rs) ----
    /// Files announced by their first chunk.
    pub files_started: AtomicU64,
    /// Files complete, moved into uploads/ and listed (mismatched ones included).
    pub files_completed: AtomicU64,
    /// File bytes written (only new bytes: an overlapping resend counts its new part).
    pub files_bytes_written: AtomicU64,
    /// File chunks answered DUPLICATE or OUT_OF_ORDER: resends and resumes.
    pub files_resumed_chunks: AtomicU64,
    /// Files whose stored size or SHA-256 differs from what the agent announced.
    pub files_mismatches: AtomicU64,
    /// Downloads served (`GET .../uploads/{n}`, whole or a range).
    pub files_downloads: AtomicU64,
    files_refused: [AtomicU64; FileRefusal::ALL.len()],
    // ---- Cancel (api/cancel.rs, notify, sessions/tasks.rs) ----
    /// Flows set to cancelled (a collection cancel, or a hunt stopped with cancel_flows).
    pub cancel_flows: AtomicU64,
    /// Cancels not done because the flow had already ended (409, or skipped by a hunt stop).
    pub cancel_refused: AtomicU64,
    /// Flows a hunt stop could not cancel (datastore error; logged).
    pub cancel_failed: AtomicU64,
    /// Cancel frames queued on an agent's task stream by this frontend.
    pub cancel_frames_pushed: AtomicU64,
    /// Cancel frames not queued: the agent's task stream queue was full (not reading).
    pub cancel_frames_dropped: AtomicU64,
    /// Cancel hand-offs dropped: a shard queue full past its deadline, or the replication
    /// queue full.
    pub cancel_notices_dropped: AtomicU64,
    /// Flows of stopped hunts still waiting to be cancelled.
    pub cancel_hunt_flows_pending: AtomicI64,
    // ---- Files: downloads, results streaming and exports ----
    /// Whole result sets and zip exports started (their streams began).
    pub exports_started: AtomicU64,
    /// Of those, the ones aborted by an error after the answer had started (not a client
    /// that went away).
    pub exports_failed: AtomicU64,
    // ---- GUI: sessions and request checks (api/auth.rs, api/login.rs, api/session.rs) ----
    /// Logins through the GUI's form that opened a session.
    pub gui_logins: AtomicU64,
    /// Wrong passwords (the form's and Basic credentials'), each after an argon2 check.
    pub gui_login_failures: AtomicU64,
    /// Login or Basic attempts answered 429 without a password check (throttled or busy).
    pub gui_logins_throttled: AtomicU64,
    /// Sessions ended early because the store was full.
    pub gui_sessions_evicted: AtomicU64,
    /// Browser sessions held (expired ones not yet dropped included).
    pub gui_sessions_open: AtomicI64,
    gui_requests_refused: [AtomicU64; GuiRefusal::ALL.len()],
    // ---- GUI: live views (api/live) ----
    /// Live streams (`GET /api/v1/live/...`) open now.
    pub gui_live_streams: AtomicI64,
    /// Live stream requests refused with 503: `MAX_LIVE_STREAMS_COUNT` were open.
    pub gui_live_refused: AtomicU64,
    /// Events (changed figures) queued on live streams.
    pub gui_live_events: AtomicU64,
    /// Ticks skipped because a stream's queue was full (its client reads slowly).
    pub gui_live_skipped: AtomicU64,
    /// Streams ended because their client took nothing for `LIVE_STREAM_STALLED_END`.
    pub gui_live_stalled: AtomicU64,
    // ---- GUI: client index (src/clients/) ----
    /// Clients listed by the master's client index.
    pub client_index_entries: AtomicI64,
    /// 1 once the index has read every client folder at start, 0 while it loads.
    pub client_index_complete: AtomicI64,
    /// How long the start-up load took, milliseconds (0 until it finished).
    pub client_index_load_ms: AtomicI64,
    /// Entries changed, by what told the index (see `ClientIndexRefresh`).
    client_index_refreshes: [AtomicU64; ClientIndexRefresh::ALL.len()],
    /// `info.json` documents the index could not read (listed with empty facts).
    pub client_index_unreadable: AtomicU64,
    /// Snapshot chunks not re-read from disk: the resync queue was full.
    pub client_index_resyncs_dropped: AtomicU64,
    /// Client list and search requests answered from the index.
    pub client_index_searches: AtomicU64,
    /// Time to match, count and page one search inside the index.
    pub client_index_search_latency: histogram::LatencyHistogram,
    // ---- Audit trail (src/audit/) ----
    /// Audit entries appended to day files.
    pub audit_entries_written: AtomicU64,
    /// Audit entries dropped: the writer's queue was full (or its thread never started).
    pub audit_dropped: AtomicU64,
    /// Day files that could not be opened, appended to or synced.
    pub audit_write_errors: AtomicU64,
    /// Entries written with a field cut to fit `MAX_AUDIT_LINE_BYTES`.
    pub audit_truncated: AtomicU64,
    /// Lines skipped by readers of the audit trail because they were not entries.
    pub audit_malformed_lines: AtomicU64,
    // ---- gRPC API and API clients (src/grpc/) ----
    /// gRPC calls answered, by gRPC status code (`GRPC_CODE_LABELS` order).
    grpc_calls: [AtomicU64; GRPC_CODE_LABELS.len()],
    /// gRPC calls being answered now (streams until their last message).
    pub grpc_calls_in_flight: AtomicI64,
    /// gRPC calls refused with Unavailable: `MAX_GRPC_CALLS_IN_FLIGHT_COUNT` in flight or
    /// the queue to the priority executor full.
    pub grpc_calls_busy: AtomicU64,
    /// API connections open now (handshaking included).
    pub grpc_connections_open: AtomicI64,
    /// API connections closed at once: `MAX_GRPC_CONNECTIONS_COUNT` were open.
    pub grpc_connections_refused: AtomicU64,
    /// TLS handshakes refused on the API port: no client certificate, one the CA did not
    /// sign, an expired one, or no handshake within `GRPC_HANDSHAKE_TIMEOUT`.
    pub grpc_handshakes_refused: AtomicU64,
    /// Calls whose verified certificate names no usable API client (no or a malformed
    /// `urn:packhunt:api-client:` name, an unknown role).
    pub grpc_identities_refused: AtomicU64,
    // ---- Agent port hardening (src/transport/, sessions/tasks.rs) ----
    /// Connections closed because their ClientHello had not arrived within
    /// `CLIENT_HELLO_TIMEOUT`.
    pub agentport_client_hello_timeouts: AtomicU64,
    /// Connections closed at accept: their source address held
    /// `HANDSHAKES_IN_FLIGHT_PER_SOURCE_COUNT` handshakes on the shard.
    pub agentport_source_handshakes_refused: AtomicU64,
    /// Upload streams ended because their body stopped for `UPLOAD_BODY_IDLE_TIMEOUT`.
    agentport_uploads_stalled: [AtomicU64; UploadStall::ALL.len()],
    /// Uploads answered 503: their connection's admitted uploads were at the cap for the
    /// whole concurrency wait.
    pub agentport_uploads_connection_busy: AtomicU64,
    /// Task-stream requests refused because they carried a body.
    pub agentport_task_stream_bodies_refused: AtomicU64,
    /// Task streams ended because their agent did not read them and
    /// `MAX_TASK_STREAM_QUEUED_BYTES` were queued.
    pub agentport_task_streams_stalled: AtomicU64,
    /// Task-stream bytes queued on the server, waiting for agents' flow-control windows.
    pub agentport_task_bytes_queued: AtomicI64,
    /// Connections ended (GOAWAY ENHANCE_YOUR_CALM) for a frame flood, by frame kind.
    agentport_floods: [AtomicU64; FloodFrame::ALL.len()],
    /// Connections h2 ended with a GOAWAY of its own (protocol error, CONTINUATION flood,
    /// rapid reset), by reason.
    agentport_h2_goaways: [AtomicU64; H2GoAway::ALL.len()],
    // ---- Fleet trust: minion messages and clones (src/replication, src/notify,
    // src/sessions/clones.rs) ----
    /// Messages a minion sent that the master refused, by minion and kind (see
    /// `MinionRefusal`). Keyed by the minion's name from its admitted link (so bounded by
    /// the configured minions, and `MAX_MINION_COUNTERS_COUNT` at most).
    fleet_minion_refused:
        std::sync::Mutex<std::collections::BTreeMap<String, [u64; MinionRefusal::ALL.len()]>>,
    /// Older task streams found alive while their client id connected elsewhere: clones.
    pub clone_detected: AtomicU64,
    /// Rekey messages queued on a clone's older stream.
    pub clone_rekeys_sent: AtomicU64,
    /// Rekey messages that could not be queued (the older stream's queue was full or it
    /// was ending): that agent keeps its key and is found again at its next connect.
    pub clone_rekeys_failed: AtomicU64,
    /// Older task streams whose connection was dead (no PING answer within
    /// `CLONE_LIVENESS_PING_DEADLINE`, or already gone): replaced, not counted as clones.
    pub clone_stale_replaced: AtomicU64,
    /// Second streams of one client id on one connection (an agent reopening its task
    /// stream): replaced without a check.
    pub clone_same_connection: AtomicU64,
    /// Notices of a displaced stream dropped: the hub's dispatch queue was full.
    pub fleet_displaced_dropped: AtomicU64,
    /// Notices of a displaced stream sent to the shard or frontend that holds it.
    pub fleet_displaced_sent: AtomicU64,
    // ---- Secrets, GUI port and decoders (api/connection.rs, transport/enrolment.rs) ----
    /// GUI/API connections open now (at most `gui.max_connections`).
    pub gui_connections_open: AtomicI64,
    /// GUI/API connections closed by a limit, by which (`GuiConnectionEnd`).
    gui_connections_closed: [AtomicU64; GuiConnectionEnd::ALL.len()],
    /// Agent requests refused with 403: the enrolment secret missing or wrong.
    pub enrolment_refused: AtomicU64,
    // ---- Users and roles (config/users.rs, api/users.rs, api/auth.rs, api/permissions.rs) ----
    /// Calls refused with 403 because the user's role is below the route's.
    pub users_permission_refusals: AtomicU64,
    /// Times the master re-read `[[users]]` after its config file changed.
    pub users_reloads: AtomicU64,
    /// Re-reads that failed (unreadable or malformed file): the old users stayed.
    pub users_reload_failures: AtomicU64,
    /// Browser sessions ended because their user was removed or got a new password or role.
    pub users_sessions_ended: AtomicU64,
    /// Users added, changed or removed through the API.
    pub users_changes: AtomicU64,
    /// User changes through the API refused (bad input, duplicate, last administrator) or
    /// failed (the config file could not be written).
    pub users_changes_refused: AtomicU64,
    // ---- Operations: a full shared disk (sessions/disk_full.rs) ----
    /// Uploads refused with 503 because the datastore had no space (ENOSPC/EDQUOT), by
    /// what they carried. Also counted in `upload_rejections{reason="overloaded"}`.
    disk_full_refusals: [AtomicU64; DiskFullUpload::ALL.len()],
    /// 1 from an upload refused for a full datastore until an upload is written again.
    pub datastore_full: AtomicI64,
    /// Times ingest resumed after a full datastore: an upload was written after refusals.
    pub disk_full_recoveries: AtomicU64,
    // ---- Health checks for load balancers (api/health.rs) ----
    /// `/healthz` probes answered (200).
    pub health_alive_answered: AtomicU64,
    /// `/readyz` probes answered 200: taking agents.
    pub health_ready_answered: AtomicU64,
    /// `/readyz` probes answered 503: starting or draining.
    pub health_not_ready_answered: AtomicU64,
    // ---- Operations: drain and rolling restarts (transport/accept.rs, agent_conn.rs) ----
    /// Agents told to move at a drain: their task streams ended and their connections
    /// sent GOAWAY.
    pub drain_agents_moved: AtomicU64,
    /// Uploads in flight when a drain began (or admitted after) that finished before its
    /// deadline.
    pub drain_uploads_finished: AtomicU64,
    /// Uploads still in flight at the drain deadline: cut with the process (the agent
    /// resends them to the next frontend).
    pub drain_uploads_cut: AtomicU64,
    /// Agent connections still open at the drain deadline.
    pub drain_connections_cut: AtomicU64,
    /// Task streams refused with 503 because the shard was draining.
    pub drain_task_streams_refused: AtomicU64,
    /// 1 from SIGTERM/SIGINT until the process exits.
    pub draining: AtomicI64,
    // ---- Performance: targeted notifications (notify/fleet.rs, replication/master.rs) ----
    /// Master: messages queued on minions' links, by kind and by whether the message was
    /// meant for one minion or for all of them (a message for all counts once per minion).
    replication_messages_sent: [[AtomicU64; Fanout::ALL.len()]; SentKind::ALL.len()],
    /// Master: per-client notices (work, cancels, label changes) by where presence said
    /// the client was: this frontend (no minion told), one minion, or every minion.
    fleet_notices_routed: [AtomicU64; NoticeRoute::ALL.len()],
    /// Master: notices sent to every minion instead of one, by why.
    fleet_notices_broadcast: [AtomicU64; BroadcastReason::ALL.len()],
    /// Master: notices sent again to the frontend a client turned up at, after they had
    /// gone to the frontend presence had it at.
    pub fleet_notices_resent: AtomicU64,
    // ---- Performance: facts (sessions/facts.rs, transport/agent_conn.rs) ----
    /// Agents' facts (ClientInfo) by what recording them took.
    facts_recorded: [AtomicU64; FactsOutcome::ALL.len()],
    /// Facts that came through the general upload path (and its permits) rather than
    /// the facts path: a ClientInfo too large for it, or split oddly into DATA frames.
    pub facts_general_path: AtomicU64,
    /// Facts trips to the blocking pool running now, and facts waiting for one.
    pub facts_trips_in_flight: AtomicI64,
    pub facts_waiting: AtomicI64,
    /// Clients whose facts the shards remember, and entries forgotten to stay bounded.
    pub facts_seen_entries: AtomicI64,
    pub facts_seen_forgotten: AtomicU64,
}

/// A replication message's kind, as the master counts what it sends; `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentKind {
    Hello,
    Watched,
    Notification,
    CancelFlows,
    LabelsChanged,
    EventTableChanged,
    Displaced,
    /// Anything else (nothing else is sent by the master today).
    Other,
}

impl SentKind {
    pub const ALL: [Self; 8] = [
        Self::Hello,
        Self::Watched,
        Self::Notification,
        Self::CancelFlows,
        Self::LabelsChanged,
        Self::EventTableChanged,
        Self::Displaced,
        Self::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::Watched => "watched",
            Self::Notification => "notification",
            Self::CancelFlows => "cancel_flows",
            Self::LabelsChanged => "labels_changed",
            Self::EventTableChanged => "event_table_changed",
            Self::Displaced => "displaced",
            Self::Other => "other",
        }
    }
}

/// Whether a replication message was meant for one minion or all; `to` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fanout {
    One,
    All,
}

impl Fanout {
    pub const ALL: [Self; 2] = [Self::One, Self::All];

    pub fn label(self) -> &'static str {
        match self {
            Self::One => "one",
            Self::All => "all",
        }
    }
}

/// Where the master sent a per-client notice; `to` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeRoute {
    /// The client is on the master: its own shards only.
    ThisFrontend,
    OneMinion,
    AllMinions,
}

impl NoticeRoute {
    pub const ALL: [Self; 3] = [Self::ThisFrontend, Self::OneMinion, Self::AllMinions];

    pub fn label(self) -> &'static str {
        match self {
            Self::ThisFrontend => "this_frontend",
            Self::OneMinion => "one_minion",
            Self::AllMinions => "all_minions",
        }
    }
}

/// Why a per-client notice went to every minion; `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BroadcastReason {
    /// Presence knows no frontend for the client (not connected, or between frontends).
    HolderUnknown,
    /// The notice could not be remembered for a resend (the log is at its bound).
    RecordFull,
    /// Presence names a minion whose link is not up when the message goes out.
    MinionUnlinked,
}

impl BroadcastReason {
    pub const ALL: [Self; 3] = [Self::HolderUnknown, Self::RecordFull, Self::MinionUnlinked];

    pub fn label(self) -> &'static str {
        match self {
            Self::HolderUnknown => "holder_unknown",
            Self::RecordFull => "record_full",
            Self::MinionUnlinked => "minion_unlinked",
        }
    }
}

impl Metrics {
    /// Counts `copies` messages of `kind` queued on minions' links, meant for `fanout`.
    pub fn replication_message_sent(&self, kind: SentKind, fanout: Fanout, copies: u64) {
        self.replication_messages_sent[kind as usize][fanout as usize]
            .fetch_add(copies, Ordering::Relaxed);
    }

    pub fn replication_messages_sent_count(&self, kind: SentKind, fanout: Fanout) -> u64 {
        self.replication_messages_sent[kind as usize][fanout as usize].load(Ordering::Relaxed)
    }

    pub fn fleet_notice_routed(&self, route: NoticeRoute) {
        self.fleet_notices_routed[route as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn fleet_notice_broadcast(&self, reason: BroadcastReason) {
        self.fleet_notices_broadcast[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn fleet_notice_broadcast_count(&self, reason: BroadcastReason) -> u64 {
        self.fleet_notices_broadcast[reason as usize].load(Ordering::Relaxed)
    }

    /// Targeted notifications (notify/fleet.rs, replication/master.rs).
    fn render_targeted_notifications(&self, out: &mut String) {
        let mut sent = Vec::new();
        for kind in SentKind::ALL {
            for fanout in Fanout::ALL {
                let labels = format!("kind=\"{}\",to=\"{}\"", kind.label(), fanout.label());
                sent.push((
                    labels,
                    self.replication_messages_sent_count(kind, fanout) as i64,
                ));
            }
        }
        write_labelled(
            out,
            "packhunt_replication_messages_sent_total",
            "Master: messages queued on minions' links, by kind and whether meant for one minion or all (one count per minion reached)",
            &sent,
        );
        let routed = by_label(
            "to",
            NoticeRoute::ALL.map(NoticeRoute::label),
            &self.fleet_notices_routed,
        );
        write_labelled(
            out,
            "packhunt_fleet_notices_routed_total",
            "Master: per-client notices (work, cancels, label changes) by where they went: this frontend only, the one minion holding the client, or every minion",
            &routed,
        );
        let broadcast = by_label(
            "reason",
            BroadcastReason::ALL.map(BroadcastReason::label),
            &self.fleet_notices_broadcast,
        );
        write_labelled(
            out,
            "packhunt_fleet_notices_broadcast_total",
            "Master: per-client notices sent to every minion instead of one, by why",
            &broadcast,
        );
        write_counters(
            out,
            &[(
                "packhunt_fleet_notices_resent_total",
                "Master: notices sent again to the frontend a client turned up at after they went to where presence had it",
                &self.fleet_notices_resent,
            )],
        );
    }
}

/// What a master refused from a minion; the `kind` label of
/// `packhunt_fleet_minion_messages_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinionRefusal {
    /// A flow state for a client not connected to that minion.
    FlowState,
    /// Facts for a client not connected to that minion.
    Facts,
    /// A work notification whose flow is not queued for its client on the datastore.
    Notification,
    /// A message only the master may send (cancel, watched set, displaced notice).
    MasterOnly,
}

impl MinionRefusal {
    pub const ALL: [Self; 4] = [
        Self::FlowState,
        Self::Facts,
        Self::Notification,
        Self::MasterOnly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::FlowState => "flow_state",
            Self::Facts => "facts",
            Self::Notification => "notification",
            Self::MasterOnly => "master_only",
        }
    }
}

impl Metrics {
    /// Counts a message from minion `frontend` refused as `why`.
    pub fn minion_refused(&self, frontend: &str, why: MinionRefusal) {
        let mut map = self
            .fleet_minion_refused
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(frontend) && map.len() >= crate::limits::MAX_MINION_COUNTERS_COUNT {
            return;
        }
        map.entry(frontend.to_string())
            .or_insert([0; MinionRefusal::ALL.len()])[why as usize] += 1;
    }

    /// What `minion_refused` counted for `frontend` and `why`.
    pub fn minion_refused_count(&self, frontend: &str, why: MinionRefusal) -> u64 {
        let map = self
            .fleet_minion_refused
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.get(frontend).map_or(0, |counts| counts[why as usize])
    }

    /// Minion message checks and clone detection.
    fn render_fleet_trust(&self, out: &mut String) {
        let refused: Vec<(String, i64)> = {
            let map = self
                .fleet_minion_refused
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            map.iter()
                .flat_map(|(frontend, counts)| {
                    MinionRefusal::ALL.iter().map(move |why| {
                        let labels = format!("frontend=\"{frontend}\",kind=\"{}\"", why.as_str());
                        (labels, counts[*why as usize] as i64)
                    })
                })
                .collect()
        };
        write_labelled(
            out,
            "packhunt_fleet_minion_messages_refused_total",
            "Messages from a minion the master refused: flow states and facts for clients not connected to it, notifications of flows not queued, master-only kinds",
            &refused,
        );
        let counters: [(&str, &str, &AtomicU64); 7] = [
            ("packhunt_clone_detected_total", "A client id held two live task streams at once (clones); the older was told to re-key", &self.clone_detected),
            ("packhunt_fleet_rekeys_sent_total", "Rekey messages queued on a clone's older task stream", &self.clone_rekeys_sent),
            ("packhunt_fleet_rekeys_failed_total", "Rekey messages that could not be queued (the older stream was not reading or ending)", &self.clone_rekeys_failed),
            ("packhunt_fleet_stale_streams_replaced_total", "Older task streams of a reconnecting client whose connection was dead: replaced, not clones", &self.clone_stale_replaced),
            ("packhunt_fleet_same_connection_streams_total", "Task streams reopened on the connection that held the older one: replaced, not clones", &self.clone_same_connection),
            ("packhunt_fleet_displaced_sent_total", "Notices sent to the shard or frontend holding a client's older task stream", &self.fleet_displaced_sent),
            ("packhunt_fleet_displaced_dropped_total", "Notices of a client's older task stream dropped (dispatch queue full)", &self.fleet_displaced_dropped),
        ];
        write_counters(out, &counters);
    }
}

/// Where an upload's body stopped; `phase` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadStall {
    /// Headers and never a DATA frame.
    BeforeBody,
    /// Some DATA, then nothing.
    InBody,
}

impl UploadStall {
    pub const ALL: [Self; 2] = [Self::BeforeBody, Self::InBody];

    pub fn label(self) -> &'static str {
        match self {
            Self::BeforeBody => "before_body",
            Self::InBody => "in_body",
        }
    }
}

/// The frame kind a flood was made of; `frame` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodFrame {
    Ping,
    Settings,
    RstStream,
    Headers,
    Continuation,
    /// PRIORITY, WINDOW_UPDATE and empty DATA frames.
    Small,
}

impl FloodFrame {
    pub const ALL: [Self; 6] = [
        Self::Ping,
        Self::Settings,
        Self::RstStream,
        Self::Headers,
        Self::Continuation,
        Self::Small,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Settings => "settings",
            Self::RstStream => "rst_stream",
            Self::Headers => "headers",
            Self::Continuation => "continuation",
            Self::Small => "small",
        }
    }
}

/// Why h2 ended an agent connection on its own; `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H2GoAway {
    EnhanceYourCalm,
    ProtocolError,
    Other,
}

impl H2GoAway {
    pub const ALL: [Self; 3] = [Self::EnhanceYourCalm, Self::ProtocolError, Self::Other];

    pub fn label(self) -> &'static str {
        match self {
            Self::EnhanceYourCalm => "enhance_your_calm",
            Self::ProtocolError => "protocol_error",
            Self::Other => "other",
        }
    }
}

impl Metrics {
    pub fn agentport_upload_stalled(&self, phase: UploadStall) {
        self.agentport_uploads_stalled[phase as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn agentport_flood(&self, frame: FloodFrame) {
        self.agentport_floods[frame as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn agentport_h2_goaway(&self, reason: H2GoAway) {
        self.agentport_h2_goaways[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The agent port's hardening metrics (src/transport/, sessions/tasks.rs).
    fn render_agent_port(&self, out: &mut String) {
        let counters: [(&str, &str, &AtomicU64); 5] = [
            ("packhunt_agentport_client_hello_timeouts_total", "Agent connections closed because their ClientHello had not arrived within the ClientHello deadline", &self.agentport_client_hello_timeouts),
            ("packhunt_agentport_source_handshakes_refused_total", "Agent connections closed at accept because their source address held the most handshakes in flight", &self.agentport_source_handshakes_refused),
            ("packhunt_agentport_uploads_connection_busy_total", "Uploads answered 503 because their connection's admitted uploads stayed at the per-connection cap", &self.agentport_uploads_connection_busy),
            ("packhunt_agentport_task_stream_bodies_refused_total", "Task-stream requests refused because they carried a body", &self.agentport_task_stream_bodies_refused),
            ("packhunt_agentport_task_streams_stalled_total", "Task streams ended because their agent did not read them (queued bytes at the limit; tasks wait on disk)", &self.agentport_task_streams_stalled),
        ];
        write_counters(out, &counters);
        write_metric(
            out,
            "packhunt_agentport_task_bytes_queued",
            "Task-stream bytes queued on the server waiting for agents' flow-control windows",
            "gauge",
            &[("", self.agentport_task_bytes_queued.load(Ordering::Relaxed))],
        );
        let stalled = by_label(
            "phase",
            UploadStall::ALL.map(UploadStall::label),
            &self.agentport_uploads_stalled,
        );
        write_labelled(out, "packhunt_agentport_uploads_stalled_total", "Upload streams ended because their body stopped for the body idle deadline, by where it stopped", &stalled);
        let floods = by_label(
            "frame",
            FloodFrame::ALL.map(FloodFrame::label),
            &self.agentport_floods,
        );
        write_labelled(out, "packhunt_agentport_floods_total", "Agent connections ended with GOAWAY ENHANCE_YOUR_CALM for sending frames of one kind faster than allowed", &floods);
        let goaways = by_label(
            "reason",
            H2GoAway::ALL.map(H2GoAway::label),
            &self.agentport_h2_goaways,
        );
        write_labelled(out, "packhunt_agentport_h2_goaways_total", "Agent connections HTTP/2 ended with a GOAWAY of its own (protocol errors, CONTINUATION floods, rapid resets), by reason", &goaways);
    }
}

/// gRPC status codes by number, as `packhunt_grpc_calls_total{code=...}` names them.
pub const GRPC_CODE_LABELS: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
];

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process-wide registry.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(Metrics::default)
}

impl Metrics {
    pub fn upload_rejected(&self, reason: RejectReason) {
        let i = RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("ALL lists every reason");
        self.upload_rejections[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_refused(&self, reason: ConnectionRefusal) {
        let i = ConnectionRefusal::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("ALL lists every reason");
        self.connection_refusals[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn flow(&self, event: FlowEvent) {
        self.flow_events[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records the configured limits for `packhunt_limit{name=...}` (first call wins).
    pub fn set_limits(&self, limits: Vec<(&'static str, i64)>) {
        let _ = self.limits.set(limits);
    }

    pub fn replication_dropped(&self, queue: ReplicationQueue) {
        self.replication_dropped[queue as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn replication_dropped_count(&self, queue: ReplicationQueue) -> u64 {
        self.replication_dropped[queue as usize].load(Ordering::Relaxed)
    }

    /// The series of sink `name`, registered on first use (a restarted sink in the same
    /// process keeps counting in the same series).
    pub fn sink(&self, name: &str) -> std::sync::Arc<SinkMetrics> {
        let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, m)) = sinks.iter().find(|(n, _)| n == name) {
            return m.clone();
        }
        let m = std::sync::Arc::new(SinkMetrics::default());
        sinks.push((name.to_string(), m.clone()));
        m
    }

    fn render_sinks(&self, out: &mut String) {
        let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        if sinks.is_empty() {
            return;
        }
        type Read = fn(&SinkMetrics) -> i64;
        let series: [(&str, &str, &str, Read); 4] = [
            (
                "packhunt_sink_sent_total",
                "Events a sink delivered",
                "counter",
                |m| m.sent.load(Ordering::Relaxed) as i64,
            ),
            (
                "packhunt_sink_retried_total",
                "Events in sink attempts that failed and are tried again",
                "counter",
                |m| m.retried.load(Ordering::Relaxed) as i64,
            ),
            (
                "packhunt_sink_spooled_bytes",
                "Bytes of a sink's on-disk spool",
                "gauge",
                |m| m.spooled_bytes.load(Ordering::Relaxed),
            ),
            (
                "packhunt_sink_lag_seconds",
                "Now minus the time of a sink's oldest unsent event (0 when none waits)",
                "gauge",
                |m| m.lag_seconds.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, kind, read) in series {
            let values: Vec<(String, i64)> = sinks
                .iter()
                .map(|(sink, m)| (format!("sink=\"{sink}\""), read(m)))
                .collect();
            let borrowed: Vec<(&str, i64)> = values.iter().map(|(l, v)| (l.as_str(), *v)).collect();
            write_metric(out, name, help, kind, &borrowed);
        }
        let mut dropped = Vec::new();
        for (sink, m) in sinks.iter() {
            for reason in SinkDrop::ALL {
                let label = format!("sink=\"{sink}\",reason=\"{}\"", reason.label());
                dropped.push((label, m.dropped_count(reason) as i64));
            }
        }
        write_labelled(
            out,
            "packhunt_sink_dropped_total",
            "Events a sink gave up, by reason",
            &dropped,
        );
    }

    pub fn upload_rejections(&self, reason: RejectReason) -> u64 {
        let i = RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("ALL lists every reason");
        self.upload_rejections[i].load(Ordering::Relaxed)
    }

    fn event_ingest_counters(&self) -> [(&'static str, &'static str, &AtomicU64); 5] {
        [
            ("packhunt_events_rows_ingested_total", "Monitoring event rows written to day sets", &self.events_rows_ingested),
            ("packhunt_events_bytes_ingested_total", "Monitoring event row bytes written to day sets", &self.events_bytes_ingested),
            ("packhunt_events_batches_ingested_total", "Monitoring event batches written to day sets", &self.events_batches_ingested),
            ("packhunt_events_duplicate_batches_total", "Monitoring event batches answered DUPLICATE (already written; nothing written again)", &self.events_duplicate_batches),
            ("packhunt_events_dropped_by_agents_total", "Monitoring events agents dropped before sending (their buffer was full), as they reported", &self.events_dropped_by_agents),
        ]
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let counters: [(&str, &str, &AtomicU64); 27] = [
            ("packhunt_event_table_frames_sent_total", "Client event table frames sent to agents", &self.event_table_frames_sent),
            ("packhunt_event_table_frames_skipped_total", "Client event table frames not sent: the agent already held that table (digest at connect, or a change that left its queries as they were)", &self.event_table_frames_skipped),
            ("packhunt_event_table_handoffs_dropped_total", "Client event table hand-offs to a shard dropped (queue full past deadline)", &self.event_table_handoffs_dropped),
            ("packhunt_hunt_recruited_total", "Agents assigned to hunts (flows scheduled by the recruiter)", &self.hunt_recruited),
            ("packhunt_hunt_facts_from_memory_total", "Hunt recruitment candidates checked on the facts the master's client index holds", &self.hunt_facts_from_memory),
            ("packhunt_hunt_facts_read_total", "Hunt recruitment candidates whose info.json was read (facts not in the client index yet)", &self.hunt_facts_read),
            ("packhunt_connections_accepted_total", "Agent TCP connections accepted", &self.connections_accepted),
            ("packhunt_handshakes_completed_total", "Agent mTLS handshakes completed", &self.handshakes_completed),
            ("packhunt_handshakes_resumed_total", "Completed agent handshakes that resumed a session (ticket): about half the CPU of a full one", &self.handshakes_resumed),
            ("packhunt_session_conflicts_total", "Task streams opened for a client id that already had one", &self.session_conflicts),
            ("packhunt_tasks_pushed_total", "Tasks pushed to agents", &self.tasks_pushed),
            ("packhunt_notifications_sent_total", "Cross-shard work notifications sent", &self.notifications_sent),
            ("packhunt_notifications_dropped_total", "Cross-shard work notifications dropped (queue full past deadline)", &self.notifications_dropped),
            ("packhunt_uploads_accepted_total", "Upload requests accepted", &self.uploads_accepted),
            ("packhunt_uploads_duplicate_total", "Result batches acknowledged as already written", &self.uploads_duplicate),
            ("packhunt_uploads_out_of_order_total", "Result batches ahead of the expected sequence", &self.uploads_out_of_order),
            ("packhunt_upload_bytes_total", "Upload request body bytes received", &self.upload_bytes),
            ("packhunt_rows_written_total", "Result rows appended to the datastore", &self.rows_written),
            ("packhunt_result_bytes_written_total", "Result bytes appended to the datastore", &self.result_bytes_written),
            ("packhunt_file_upload_bytes_total", "Uploaded file bytes written", &self.files_uploaded_bytes),
            ("packhunt_api_requests_total", "GUI/API requests served", &self.api_requests),
            ("packhunt_api_unauthorized_total", "GUI/API requests refused for missing or wrong credentials", &self.api_unauthorized),
            ("packhunt_replication_sent_total", "Messages sent on replication links", &self.replication_sent),
            ("packhunt_replication_received_total", "Messages received on replication links", &self.replication_received),
            ("packhunt_replication_refused_total", "Replication links refused (not CA-signed, unknown minion, wrong certificate)", &self.replication_refused),
            ("packhunt_replication_link_failures_total", "Minion links to the master that failed to open or broke", &self.replication_link_failures),
            ("packhunt_replication_malformed_total", "Replication messages dropped for a field this frontend cannot read (unknown flow state, malformed id)", &self.replication_malformed),
        ];
        for (name, help, value) in counters.into_iter().chain(self.event_ingest_counters()) {
            write_metric(
                &mut out,
                name,
                help,
                "counter",
                &[("", value.load(Ordering::Relaxed) as i64)],
            );
        }
        let gauges: [(&str, &str, &AtomicI64); 10] = [
            ("packhunt_event_table_version", "Client event table version this frontend serves to its agents (0 before the first table)", &self.event_table_version),
            ("packhunt_hunt_pending_recruitment", "Connected agents waiting to be checked against the running hunts", &self.hunt_pending_recruitment),
            ("packhunt_uploads_in_flight", "Uploads holding a concurrency permit (body being read or handled)", &self.uploads_in_flight),
            ("packhunt_uploads_waiting", "Uploads waiting for a concurrency permit", &self.uploads_waiting),
            ("packhunt_upload_bytes_in_flight", "Upload body bytes held in memory by uploads in flight", &self.upload_bytes_in_flight),
            ("packhunt_upload_concurrency_limit", "limits.concurrency: uploads processed at once by this frontend", &self.upload_concurrency_limit),
            ("packhunt_upload_memory_bound_bytes", "concurrency x max_upload_bytes: the most upload bodies held at once", &self.upload_memory_bound_bytes),
            ("packhunt_replication_links_up", "Replication links up (master: minions linked; minion: 1 when linked to the master)", &self.replication_links_up),
            ("packhunt_connections_open", "Agent connections open", &self.connections_open),
            ("packhunt_sessions_open", "Agents with an open task stream", &self.sessions_open),
        ];
        for (name, help, value) in gauges {
            write_metric(
                &mut out,
                name,
                help,
                "gauge",
                &[("", value.load(Ordering::Relaxed))],
            );
        }
        self.render_watch(&mut out);
        let rejections = by_label(
            "reason",
            RejectReason::ALL.map(RejectReason::label),
            &self.upload_rejections,
        );
        write_labelled(
            &mut out,
            "packhunt_upload_rejections_total",
            "Uploads refused, by reason",
            &rejections,
        );
        let refusals = by_label(
            "reason",
            ConnectionRefusal::ALL.map(ConnectionRefusal::label),
            &self.connection_refusals,
        );
        write_labelled(
            &mut out,
            "packhunt_connection_refusals_total",
            "Agent connections ended early, by reason",
            &refusals,
        );
        let dropped = by_label(
            "queue",
            ReplicationQueue::ALL.map(ReplicationQueue::label),
            &self.replication_dropped,
        );
        if let Some(limits) = self.limits.get() {
            let values: Vec<(String, i64)> = limits
                .iter()
                .map(|(name, v)| (format!("name=\"{name}\""), *v))
                .collect();
            let borrowed: Vec<(&str, i64)> = values.iter().map(|(l, v)| (l.as_str(), *v)).collect();
            write_metric(
                &mut out,
                "packhunt_limit",
                "Configured [limits] of this frontend (units in the name)",
                "gauge",
                &borrowed,
            );
        }
        write_labelled(&mut out, "packhunt_replication_dropped_total", "Replication messages dropped, by queue (each queue's when-full policy: src/replication)", &dropped);
        let flows = by_label(
            "state",
            ["scheduled", "in_progress", "finished", "error"],
            &self.flow_events,
        );
        write_labelled(
            &mut out,
            "packhunt_flow_transitions_total",
            "Flows entering each state",
            &flows,
        );
        let name = "packhunt_api_request_duration_seconds";
        let _ = writeln!(out, "# HELP {name} GUI/API requests from headers parsed to answer built (the frontend's own handling)\n# TYPE {name} histogram");
        self.api_read_latency
            .render(&mut out, name, "kind=\"read\"");
        self.api_write_latency
            .render(&mut out, name, "kind=\"write\"");
        self.render_sinks(&mut out);
        self.render_files(&mut out);
        self.render_cancel(&mut out);
        self.render_exports(&mut out);
        self.render_gui_sessions(&mut out);
        self.render_gui_live(&mut out);
        self.render_client_index(&mut out);
        self.render_audit(&mut out);
        self.render_grpc_api(&mut out);
        self.render_agent_port(&mut out);
        self.render_fleet_trust(&mut out);
        self.render_secrets(&mut out);
        self.render_users(&mut out);
        self.render_disk_full(&mut out);
        self.render_health(&mut out);
        self.render_drain(&mut out);
        self.render_targeted_notifications(&mut out);
        self.render_facts(&mut out);
        out
    }

    /// Load balancers' health checks (api/health.rs).
    fn render_health(&self, out: &mut String) {
        let counters: [(&str, &str, &AtomicU64); 3] = [
            (
                "packhunt_health_alive_answered_total",
                "GET /healthz probes answered 200",
                &self.health_alive_answered,
            ),
            (
                "packhunt_health_ready_answered_total",
                "GET /readyz probes answered 200 (taking agents)",
                &self.health_ready_answered,
            ),
            (
                "packhunt_health_not_ready_answered_total",
                "GET /readyz probes answered 503 (starting or draining: balancers send no agents)",
                &self.health_not_ready_answered,
            ),
        ];
        write_counters(out, &counters);
    }

    /// The audit trail's writer and readers (src/audit/).
    fn render_audit(&self, out: &mut String) {
        let counters: [(&str, &str, &AtomicU64); 5] = [
            ("packhunt_audit_entries_written_total", "Audit entries appended to audit/<day>.jsonl", &self.audit_entries_written),
            ("packhunt_audit_dropped_total", "Audit entries dropped because the audit writer's queue was full (logged at error)", &self.audit_dropped),
            ("packhunt_audit_write_errors_total", "Audit day files that could not be opened, appended to or synced (entries lost; logged at error)", &self.audit_write_errors),
            ("packhunt_audit_truncated_total", "Audit entries written with a field cut to fit one line", &self.audit_truncated),
            ("packhunt_audit_malformed_lines_total", "Lines of audit day files skipped by readers because they are not entries (each read counts again)", &self.audit_malformed_lines),
        ];
        write_counters(out, &counters);
    }

    /// Users and roles.
    fn render_users(&self, out: &mut String) {
        let counters: [(&str, &str, &AtomicU64); 6] = [
            (
                "packhunt_users_permission_refusals_total",
                "API calls refused with 403: the user's role is below the route's",
                &self.users_permission_refusals,
            ),
            (
                "packhunt_users_reloads_total",
                "Re-reads of [[users]] after the config file changed",
                &self.users_reloads,
            ),
            (
                "packhunt_users_reload_failures_total",
                "Re-reads of [[users]] that failed (the old users stayed; see the log)",
                &self.users_reload_failures,
            ),
            (
                "packhunt_users_sessions_ended_total",
                "GUI sessions ended because their user was removed or got a new password or role",
                &self.users_sessions_ended,
            ),
            (
                "packhunt_users_changes_total",
                "Users added, changed or removed through the API",
                &self.users_changes,
            ),
            (
                "packhunt_users_changes_refused_total",
                "User changes through the API refused or failed",
                &self.users_changes_refused,
            ),
        ];
        write_counters(out, &counters);
    }

    /// Browser sessions and the checks of browser requests.
    fn render_gui_sessions(&self, out: &mut String) {
        let counters: [(&str, &str, &AtomicU64); 4] = [
            ("packhunt_gui_logins_total", "Logins through the GUI's form that opened a session", &self.gui_logins),
            ("packhunt_gui_login_failures_total", "Wrong user or password (GUI login or Basic credentials), each after a password check", &self.gui_login_failures),
            ("packhunt_gui_logins_throttled_total", "Login or Basic attempts answered 429 without a password check (too many failures, or checks busy)", &self.gui_logins_throttled),
            ("packhunt_gui_sessions_evicted_total", "GUI sessions ended early because the most sessions were held", &self.gui_sessions_evicted),
        ];
        write_counters(out, &counters);
        write_metric(
            out,
            "packhunt_gui_sessions_open",
            "GUI sessions held",
            "gauge",
            &[("", self.gui_sessions_open.load(Ordering::Relaxed))],
        );
        let refused = by_label(
            "reason",
            GuiRefusal::ALL.map(GuiRefusal::label),
            &self.gui_requests_refused,
        );
        write_labelled(
            out,
            "packhunt_gui_requests_refused_total",
            "State-changing requests (cookie or Basic) refused with 403, by the check they failed",
            &refused,
        );
    }

    pub fn gui_request_refused(&self, reason: GuiRefusal) {
        self.gui_requests_refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn gui_connection_closed(&self, end: GuiConnectionEnd) {
        self.gui_connections_closed[end as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn gui_connections_closed(&self, end: GuiConnectionEnd) -> u64 {
        self.gui_connections_closed[end as usize].load(Ordering::Relaxed)
    }

    /// The GUI port's connection limits and the agent port's enrolment secret.
    fn render_secrets(&self, out: &mut String) {
        write_metric(
            out,
            "packhunt_gui_connections_open",
            "GUI/API connections open now (at most gui.max_connections)",
            "gauge",
            &[("", self.gui_connections_open.load(Ordering::Relaxed))],
        );
        let closed = by_label(
            "reason",
            GuiConnectionEnd::ALL.map(GuiConnectionEnd::label),
            &self.gui_connections_closed,
        );
        write_labelled(
            out,
            "packhunt_gui_connections_closed_total",
            "GUI/API connections closed by a limit: over_cap at accept, tls_timeout, header_timeout, idle_timeout",
            &closed,
        );
        write_counters(
            out,
            &[(
                "packhunt_enrolment_refused_total",
                "Agent requests refused with 403 because the enrolment secret was missing or wrong",
                &self.enrolment_refused,
            )],
        );
    }

    /// Downloads of whole result sets and zip exports (api/export.rs).
    fn render_exports(&self, out: &mut String) {
        let counters: [(&str, &str, &AtomicU64); 2] = [
            ("packhunt_exports_started_total", "Whole result set downloads and zip exports started", &self.exports_started),
            ("packhunt_exports_failed_total", "Whole result set downloads and zip exports aborted by an error after they had started", &self.exports_failed),
        ];
        write_counters(out, &counters);
    }

    /// Cancel's metrics (api/cancel.rs, notify, sessions/tasks.rs).
    fn render_cancel(&self, out: &mut String) {
        let counters: [(&str, &str, &AtomicU64); 6] = [
            ("packhunt_cancel_flows_total", "Flows set to cancelled (a collection cancel, or a hunt stopped with cancel_flows)", &self.cancel_flows),
            ("packhunt_cancel_refused_total", "Cancels not done because the flow had already ended (409, or left alone by a hunt stop)", &self.cancel_refused),
            ("packhunt_cancel_failed_total", "Flows a hunt stop could not cancel (datastore error; see the log)", &self.cancel_failed),
            ("packhunt_cancel_frames_pushed_total", "Cancel frames queued on an agent's task stream by this frontend", &self.cancel_frames_pushed),
            ("packhunt_cancel_frames_dropped_total", "Cancel frames not queued: the agent's task stream was not being read (it is refused at its next upload instead)", &self.cancel_frames_dropped),
            ("packhunt_cancel_notices_dropped_total", "Cancel hand-offs dropped (a shard queue full past its deadline, or the replication queue full)", &self.cancel_notices_dropped),
        ];
        write_counters(out, &counters);
        write_metric(
            out,
            "packhunt_cancel_hunt_flows_pending",
            "Flows of stopped hunts still waiting to be cancelled",
            "gauge",
            &[("", self.cancel_hunt_flows_pending.load(Ordering::Relaxed))],
        );
    }
}

impl Metrics {
    /// The live watch's metrics (events/watch.rs, replication/forward.rs).
    fn render_watch(&self, out: &mut String) {
        let counters: [(&str, &str, &AtomicU64); 7] = [
            ("packhunt_events_watch_delivered_total", "Events (rows) written to live watchers", &self.events_watch_delivered),
            ("packhunt_events_watch_cut_off_total", "Live watchers cut off for falling behind (queue full)", &self.events_watch_cut_off),
            ("packhunt_events_watch_refused_total", "Live watch requests refused: the most watchers were connected", &self.events_watch_refused),
            ("packhunt_events_watch_forwarded_total", "Minion: event batches of watched artifacts handed to the link to the master", &self.events_watch_forwarded),
            ("packhunt_events_watch_forward_dropped_total", "Minion: event batches of watched artifacts dropped (forward or link queue full, link down)", &self.events_watch_forward_dropped),
            ("packhunt_events_watch_unwatched_total", "Minion: event batches not forwarded because the master watches no such artifact", &self.events_watch_unwatched),
            ("packhunt_events_watch_received_total", "Master: event batches received from minions for live watchers", &self.events_watch_received),
        ];
        write_counters(out, &counters);
        let gauges: [(&str, &str, &AtomicI64); 2] = [
            (
                "packhunt_events_watchers",
                "Live watchers connected",
                &self.events_watchers,
            ),
            (
                "packhunt_events_watched_artifacts",
                "Event artifacts watched (master: by its watchers; minion: that it forwards)",
                &self.events_watched_artifacts,
            ),
        ];
        for (name, help, value) in gauges {
            let value = value.load(Ordering::Relaxed);
            write_metric(out, name, help, "gauge", &[("", value)]);
        }
    }
}

/// Which check refused a browser request (403); `reason` label of
/// `packhunt_gui_requests_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuiRefusal {
    CsrfToken,
    Origin,
    ContentType,
}

impl GuiRefusal {
    pub const ALL: [GuiRefusal; 3] = [Self::CsrfToken, Self::Origin, Self::ContentType];

    pub fn label(self) -> &'static str {
        match self {
            Self::CsrfToken => "csrf_token",
            Self::Origin => "origin",
            Self::ContentType => "content_type",
        }
    }
}

/// Which limit closed a GUI/API connection; `reason` label of
/// `packhunt_gui_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuiConnectionEnd {
    /// Closed at accept: `gui.max_connections` were open.
    OverCap,
    /// No finished TLS handshake within `gui.tls_accept_timeout_ms`.
    TlsTimeout,
    /// An HTTP/1 request's headers unfinished after `gui.header_timeout_ms`.
    HeaderTimeout,
    /// No request in flight for `gui.connection_idle_timeout_ms`.
    IdleTimeout,
}

impl GuiConnectionEnd {
    pub const ALL: [GuiConnectionEnd; 4] = [
        Self::OverCap,
        Self::TlsTimeout,
        Self::HeaderTimeout,
        Self::IdleTimeout,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::OverCap => "over_cap",
            Self::TlsTimeout => "tls_timeout",
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
        }
    }
}

/// Why a file chunk or result batch was refused with 409; `reason` label of
/// `packhunt_files_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRefusal {
    /// The flow's `max_upload_bytes` would be exceeded.
    Quota,
    /// A complete file sent again with other content (or a file re-announced otherwise).
    WriteOnce,
    /// A file chunk for a flow that has ended.
    FlowClosed,
    /// A result batch above the flow's `max_rows`.
    MaxRows,
    /// Uploads past the flow's `timeout_s` and its grace.
    Timeout,
}

impl FileRefusal {
    pub const ALL: [FileRefusal; 5] = [
        Self::Quota,
        Self::WriteOnce,
        Self::FlowClosed,
        Self::MaxRows,
        Self::Timeout,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Quota => "quota",
            Self::WriteOnce => "write_once",
            Self::FlowClosed => "flow_closed",
            Self::MaxRows => "max_rows",
            Self::Timeout => "timeout",
        }
    }
}

impl Metrics {
    pub fn file_refused(&self, reason: FileRefusal) {
        self.files_refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The server side of file uploads and downloads.
    fn render_files(&self, out: &mut String) {
        let counters: [(&str, &str, &AtomicU64); 6] = [
            (
                "packhunt_files_started_total",
                "Uploaded files announced by their first chunk",
                &self.files_started,
            ),
            (
                "packhunt_files_completed_total",
                "Uploaded files complete and listed in their flow's uploads index",
                &self.files_completed,
            ),
            (
                "packhunt_files_bytes_written_total",
                "Uploaded file bytes written (new bytes only)",
                &self.files_bytes_written,
            ),
            (
                "packhunt_files_resumed_chunks_total",
                "File chunks answered DUPLICATE or OUT_OF_ORDER (resends and resumes)",
                &self.files_resumed_chunks,
            ),
            (
                "packhunt_files_mismatches_total",
                "Uploaded files whose stored size or SHA-256 differs from the agent's",
                &self.files_mismatches,
            ),
            (
                "packhunt_files_downloads_total",
                "Uploaded files served by the API (whole or a range)",
                &self.files_downloads,
            ),
        ];
        write_counters(out, &counters);
        let refused = by_label(
            "reason",
            FileRefusal::ALL.map(FileRefusal::label),
            &self.files_refused,
        );
        write_labelled(
            out,
            "packhunt_files_refused_total",
            "File chunks and result batches refused with 409, by reason",
            &refused,
        );
    }
}

// ---- GUI: live views (api/live) ----
impl Metrics {
    /// How many connections were refused for `reason` (the dashboard's shed rate).
    pub fn connection_refusal_count(&self, reason: ConnectionRefusal) -> u64 {
        let i = ConnectionRefusal::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("ALL lists every reason");
        self.connection_refusals[i].load(Ordering::Relaxed)
    }

    fn render_gui_live(&self, out: &mut String) {
        let counters: [(&str, &str, &AtomicU64); 4] = [
            (
                "packhunt_gui_live_refused_total",
                "Live stream requests refused with 503: the most live streams were open",
                &self.gui_live_refused,
            ),
            (
                "packhunt_gui_live_events_total",
                "Events (changed figures) queued on live streams",
                &self.gui_live_events,
            ),
            (
                "packhunt_gui_live_skipped_total",
                "Live stream ticks skipped: the stream's queue was full (its client reads slowly)",
                &self.gui_live_skipped,
            ),
            (
                "packhunt_gui_live_stalled_total",
                "Live streams ended because their client read nothing for a minute",
                &self.gui_live_stalled,
            ),
        ];
        write_counters(out, &counters);
        let open = self.gui_live_streams.load(Ordering::Relaxed);
        write_metric(
            out,
            "packhunt_gui_live_streams",
            "Live streams (GET /api/v1/live/...) open",
            "gauge",
            &[("", open)],
        );
    }
}

/// Plain counters, each one series without labels.
fn write_counters(out: &mut String, counters: &[(&str, &str, &AtomicU64)]) {
    for (name, help, value) in counters {
        let value = value.load(Ordering::Relaxed) as i64;
        write_metric(out, name, help, "counter", &[("", value)]);
    }
}

fn write_metric(out: &mut String, name: &str, help: &str, kind: &str, values: &[(&str, i64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in values {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// One counter family's label values and counts, paired in order: `key="label"`.
fn by_label<const N: usize>(
    key: &str,
    labels: [&str; N],
    counts: &[AtomicU64; N],
) -> Vec<(String, i64)> {
    labels
        .iter()
        .zip(counts)
        .map(|(l, v)| (format!("{key}=\"{l}\""), v.load(Ordering::Relaxed) as i64))
        .collect()
}

fn write_labelled(out: &mut String, name: &str, help: &str, values: &[(String, i64)]) {
    let borrowed: Vec<(&str, i64)> = values.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    write_metric(out, name, help, "counter", &borrowed);
}

impl Metrics {
    /// Counts one answered gRPC call by its status code number (out of range: `unknown`).
    pub fn grpc_call(&self, code: i32) {
        let i = usize::try_from(code)
            .ok()
            .filter(|i| *i < GRPC_CODE_LABELS.len())
            .unwrap_or(2);
        self.grpc_calls[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn grpc_call_count(&self, code: i32) -> u64 {
        usize::try_from(code)
            .ok()
            .and_then(|i| self.grpc_calls.get(i))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The gRPC API's metrics (src/grpc/).
    fn render_grpc_api(&self, out: &mut String) {
        let calls = by_label("code", GRPC_CODE_LABELS, &self.grpc_calls);
        write_labelled(
            out,
            "packhunt_grpc_calls_total",
            "gRPC API calls answered, by gRPC status code",
            &calls,
        );
        let gauges: [(&str, &str, &AtomicI64); 2] = [
            (
                "packhunt_grpc_calls_in_flight",
                "gRPC API calls being answered now (streams until their last message)",
                &self.grpc_calls_in_flight,
            ),
            (
                "packhunt_grpc_connections_open",
                "gRPC API connections open now, handshakes included",
                &self.grpc_connections_open,
            ),
        ];
        for (name, help, value) in gauges {
            write_metric(
                out,
                name,
                help,
                "gauge",
                &[("", value.load(Ordering::Relaxed))],
            );
        }
        let counters: [(&str, &str, &AtomicU64); 4] = [
            ("packhunt_grpc_calls_busy_total", "gRPC API calls refused with Unavailable: too many in flight or the queue to the API executor full", &self.grpc_calls_busy),
            ("packhunt_grpc_connections_refused_total", "gRPC API connections closed at once: the connection cap was reached", &self.grpc_connections_refused),
            ("packhunt_grpc_handshakes_refused_total", "TLS handshakes refused on the gRPC API port (no, foreign, expired client certificate, or too slow)", &self.grpc_handshakes_refused),
            ("packhunt_grpc_identities_refused_total", "gRPC API calls refused: the CA-signed certificate names no usable API client or role", &self.grpc_identities_refused),
        ];
        write_counters(out, &counters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_reason_with_its_count() {
        let m = Metrics::default();
        m.upload_rejected(RejectReason::TooLarge);
        m.upload_rejected(RejectReason::TooLarge);
        m.flow(FlowEvent::Finished);
        let text = m.render();
        assert!(text.contains("packhunt_upload_rejections_total{reason=\"too_large\"} 2"));
        assert!(text.contains("packhunt_upload_rejections_total{reason=\"bad_jsonl\"} 0"));
        assert!(text.contains("packhunt_flow_transitions_total{state=\"finished\"} 1"));
        assert!(text.contains("# TYPE packhunt_connections_open gauge"));
    }

    #[test]
    fn renders_each_sink_with_its_name_and_drop_reasons() {
        let m = Metrics::default();
        let sink = m.sink("siem");
        sink.sent.fetch_add(5, Ordering::Relaxed);
        sink.dropped(SinkDrop::SpoolFull, 2);
        assert!(std::sync::Arc::ptr_eq(&sink, &m.sink("siem")));
        let text = m.render();
        assert!(text.contains("packhunt_sink_sent_total{sink=\"siem\"} 5"));
        assert!(text.contains("packhunt_sink_dropped_total{sink=\"siem\",reason=\"spool_full\"} 2"));
        assert!(text.contains("# TYPE packhunt_sink_lag_seconds gauge"));
    }
}

/// What changed an entry of the client index; `source` label of
/// `packhunt_client_index_refreshes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIndexRefresh {
    /// Read from the datastore while loading at start.
    Load,
    /// Facts an agent sent to one of this frontend's shards.
    AgentFacts,
    /// Facts a minion sent over replication.
    MinionFacts,
    /// Re-read from the datastore after a minion's snapshot.
    Resync,
    /// A label change through the API.
    Labels,
}

impl ClientIndexRefresh {
    pub const ALL: [Self; 5] = [
        Self::Load,
        Self::AgentFacts,
        Self::MinionFacts,
        Self::Resync,
        Self::Labels,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::AgentFacts => "agent_facts",
            Self::MinionFacts => "minion_facts",
            Self::Resync => "resync",
            Self::Labels => "labels",
        }
    }
}

impl Metrics {
    pub fn client_index_refreshed(&self, source: ClientIndexRefresh, count: u64) {
        self.client_index_refreshes[source as usize].fetch_add(count, Ordering::Relaxed);
    }

    /// The client index's metrics (src/clients/).
    fn render_client_index(&self, out: &mut String) {
        let gauges: [(&str, &str, &AtomicI64); 3] = [
            (
                "packhunt_client_index_entries",
                "Clients listed by the master's client index",
                &self.client_index_entries,
            ),
            (
                "packhunt_client_index_complete",
                "1 once the client index has read every client folder at start, 0 while it loads",
                &self.client_index_complete,
            ),
            (
                "packhunt_client_index_load_ms",
                "Milliseconds the client index took to load at start (0 until done)",
                &self.client_index_load_ms,
            ),
        ];
        for (name, help, value) in gauges {
            write_metric(
                out,
                name,
                help,
                "gauge",
                &[("", value.load(Ordering::Relaxed))],
            );
        }
        let refreshes = by_label(
            "source",
            ClientIndexRefresh::ALL.map(ClientIndexRefresh::label),
            &self.client_index_refreshes,
        );
        write_labelled(
            out,
            "packhunt_client_index_refreshes_total",
            "Client index entries changed, by what told the index",
            &refreshes,
        );
        let counters: [(&str, &str, &AtomicU64); 3] = [
            ("packhunt_client_index_unreadable_total", "info.json documents the client index could not read (listed with empty facts)", &self.client_index_unreadable),
            ("packhunt_client_index_resyncs_dropped_total", "Snapshot chunks the client index did not re-read from disk (resync queue full; the next snapshot does)", &self.client_index_resyncs_dropped),
            ("packhunt_client_index_searches_total", "Client list and search requests answered from the client index", &self.client_index_searches),
        ];
        write_counters(out, &counters);
        let name = "packhunt_client_index_search_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Time to match, count and page one client search in the index\n# TYPE {name} histogram");
        self.client_index_search_latency
            .render(out, name, "kind=\"search\"");
    }
}

// ---- Operations: a full shared disk ----

/// What an upload refused for a full datastore carried; the `kind` label of
/// `packhunt_disk_full_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFullUpload {
    Rows,
    FileChunk,
    Events,
    FlowStatus,
    ClientInfo,
}

impl DiskFullUpload {
    pub const ALL: [Self; 5] = [
        Self::Rows,
        Self::FileChunk,
        Self::Events,
        Self::FlowStatus,
        Self::ClientInfo,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Rows => "rows",
            Self::FileChunk => "file_chunk",
            Self::Events => "events",
            Self::FlowStatus => "flow_status",
            Self::ClientInfo => "client_info",
        }
    }
}

impl Metrics {
    /// Counts an upload refused for a full datastore; returns the refusals of every kind
    /// since this process started.
    pub fn disk_full_refused(&self, kind: DiskFullUpload) -> u64 {
        self.disk_full_refusals[kind as usize].fetch_add(1, Ordering::Relaxed);
        self.disk_full_refusals
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Uploads of `kind` refused for a full datastore since this process started.
    pub fn disk_full_refused_count(&self, kind: DiskFullUpload) -> u64 {
        self.disk_full_refusals[kind as usize].load(Ordering::Relaxed)
    }

    /// A full shared disk (sessions/disk_full.rs).
    fn render_disk_full(&self, out: &mut String) {
        let refused = by_label(
            "kind",
            DiskFullUpload::ALL.map(DiskFullUpload::label),
            &self.disk_full_refusals,
        );
        write_labelled(
            out,
            "packhunt_disk_full_refusals_total",
            "Uploads refused with 503 + Retry-After because the datastore had no space (ENOSPC/EDQUOT), by what they carried",
            &refused,
        );
        write_metric(
            out,
            "packhunt_datastore_full",
            "1 from an upload refused for a full datastore until an upload is written again",
            "gauge",
            &[("", self.datastore_full.load(Ordering::Relaxed))],
        );
        write_counters(
            out,
            &[(
                "packhunt_disk_full_recoveries_total",
                "Times ingest resumed after a full datastore (an upload written after refusals)",
                &self.disk_full_recoveries,
            )],
        );
    }
}

impl Metrics {
    /// The drain at shutdown (transport/accept.rs, transport/agent_conn.rs).
    fn render_drain(&self, out: &mut String) {
        let counters: [(&str, &str, &AtomicU64); 5] = [
            ("packhunt_drain_agents_moved_total", "Agents told to move to another frontend at a drain (task stream ended, GOAWAY sent)", &self.drain_agents_moved),
            ("packhunt_drain_uploads_finished_total", "Uploads in flight during a drain that finished before the drain deadline", &self.drain_uploads_finished),
            ("packhunt_drain_uploads_cut_total", "Uploads still in flight at the drain deadline, cut with the process (agents resend them)", &self.drain_uploads_cut),
            ("packhunt_drain_connections_cut_total", "Agent connections still open at the drain deadline", &self.drain_connections_cut),
            ("packhunt_drain_task_streams_refused_total", "Task streams refused with 503 because the shard was draining", &self.drain_task_streams_refused),
        ];
        write_counters(out, &counters);
        write_metric(
            out,
            "packhunt_draining",
            "1 while the frontend drains (from SIGTERM/SIGINT until it exits)",
            "gauge",
            &[("", self.draining.load(Ordering::Relaxed))],
        );
    }
}

/// How an agent's facts were recorded; the `outcome` label of
/// `packhunt_agent_facts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactsOutcome {
    /// New or changed facts (or a last_seen gone stale): info.json written.
    Written,
    /// Read from info.json and found unchanged: nothing written.
    Unchanged,
    /// The shard had seen the same facts recently: no blocking-pool trip at all.
    Cached,
    /// Refused with 503: the shard's facts budget stayed full past its wait.
    Refused,
}

impl FactsOutcome {
    pub const ALL: [Self; 4] = [Self::Written, Self::Unchanged, Self::Cached, Self::Refused];

    pub fn label(self) -> &'static str {
        match self {
            Self::Written => "written",
            Self::Unchanged => "unchanged",
            Self::Cached => "cached",
            Self::Refused => "refused",
        }
    }
}

impl Metrics {
    pub fn facts(&self, outcome: FactsOutcome) {
        self.facts_recorded[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn render_facts(&self, out: &mut String) {
        let recorded = by_label(
            "outcome",
            FactsOutcome::ALL.map(FactsOutcome::label),
            &self.facts_recorded,
        );
        write_labelled(
            out,
            "packhunt_agent_facts_total",
            "Agents' facts (ClientInfo) by outcome: written to info.json, found unchanged on disk, seen recently by the shard (no disk), refused (facts budget full)",
            &recorded,
        );
        let counters: [(&str, &str, &AtomicU64); 2] = [
            ("packhunt_agent_facts_general_path_total", "Agents' facts that came through the general upload path and its permits (too large for the facts path)", &self.facts_general_path),
            ("packhunt_agent_facts_seen_forgotten_total", "Clients' facts the shards stopped remembering to stay within their bound", &self.facts_seen_forgotten),
        ];
        write_counters(out, &counters);
        let gauges: [(&str, &str, &AtomicI64); 3] = [
            ("packhunt_agent_facts_trips_in_flight", "Facts trips to the blocking pool running now (read info.json, write it if changed)", &self.facts_trips_in_flight),
            ("packhunt_agent_facts_waiting", "Facts waiting for their shard's facts budget", &self.facts_waiting),
            ("packhunt_agent_facts_seen_entries", "Clients whose facts the shards remember", &self.facts_seen_entries),
        ];
        for (name, help, value) in gauges {
            write_metric(
                out,
                name,
                help,
                "gauge",
                &[("", value.load(Ordering::Relaxed))],
            );
        }
    }
}
