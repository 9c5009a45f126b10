//! Per-connection cost of an agent on the frontend: CPU per TLS handshake, and heap held
//! per established, idle connection.
//!
//! Timings (`tls_handshake/*`): an in-memory TLS 1.3 mTLS handshake with exactly the
//! frontend's configs (`agent_server_config` for a `config generate` deployment,
//! `agent_client_config` for a fresh agent identity), no sockets. `full` never lets the
//! client keep a ticket; `resumed` feeds each handshake's ticket to the next one.
//! `both_ends` is wall time for client and server together; `server_only` adds up the
//! server's calls alone, which is what limits a frontend's accept rate. Same-run
//! baseline `baseline_ecdsa_p256_sign`: the one private-key operation a full handshake
//! costs the server. The counting allocator below stays on during the timings: a few
//! atomic adds per allocation, small next to the handshake's public-key operations.
//!
//! Memory (printed once to stderr before the timings): a counting global allocator around
//! mimalloc (the frontend's allocator) tracks live bytes. `CONNECTIONS` connections are
//! kept established at once; the figure per connection is the live bytes freed when the
//! server-side objects of all of them are dropped while everything else stays alive,
//! divided by `CONNECTIONS`. Each object is boxed, so its inline size is counted as it is
//! in the frontend, where it lives inside a heap-allocated task. "requested" is what Rust
//! asked for; "usable" is what mimalloc handed out after rounding to its size classes,
//! i.e. what the heap really spends (page-level overhead and fragmentation excluded).
//!
//! Not included, so add them when explaining RSS per agent: the glommio `TcpStream` and
//! the connection's task futures, kernel socket buffers, and the open task stream's
//! session state on the shard (the `registry` row gives its registry part).
//!
//! Run: `cargo bench --bench connection_state -- --warm-up-time 1 --measurement-time 2`

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use packhunt::config::generate::{generate, GenerateOptions};
use packhunt::ids::ClientId;
use packhunt::protocol::{framing, pb, CONTENT_TYPE, TASKS_PATH};
use packhunt::sessions::registry::Registry;
use packhunt::tls::agent_key::AgentIdentity;
use packhunt::tls::client::agent_client_config;
use packhunt::tls::server::agent_server_config;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, HandshakeKind, ServerConnection, SignatureScheme};

/// Connections held at once for the memory figures: enough that one-off allocations
/// (lazy statics, a map's table doubling) are noise in the per-connection quotient.
const CONNECTIONS: usize = 1_000;

/// Mirrors of the private h2 settings in `src/transport/agent_conn.rs` and the agent's
/// in `src/agent/comms.rs`; update them together. Window sizes do not allocate, but the
/// connection-level window makes the server send a WINDOW_UPDATE it must account for.
const SERVER_STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
const SERVER_CONNECTION_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
const SERVER_MAX_CONCURRENT_STREAMS: u32 = 16;
const SERVER_MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
const AGENT_STREAM_WINDOW_BYTES: u32 = 256 * 1024;

/// Room in each in-memory pipe: more than a handshake flight or the h2 preface exchange,
/// so no write ever waits for the other side.
const PIPE_BYTES: usize = 64 * 1024;

/// Polls of every h2 connection (server and client) before giving up on quiescence.
const MAX_SETTLE_ROUNDS: usize = 32;

// ---------------------------------------------------------------- allocator ---------

#[global_allocator]
static GLOBAL: Counting = Counting;

static LIVE_REQUESTED_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_USABLE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_BLOCKS: AtomicIsize = AtomicIsize::new(0);

extern "C" {
    // Part of mimalloc's C API, linked in through the `mimalloc` crate; the Rust binding
    // sits behind libmimalloc-sys's `extended` feature, which this crate does not enable.
    fn mi_usable_size(p: *const c_void) -> usize;
}

/// mimalloc with live-byte counters. The counters are process-wide atomics: the
/// measurements run on one thread, and Relaxed is enough for a single-thread reading.
struct Counting;

impl Counting {
    fn add(size: usize, p: *mut u8) {
        LIVE_REQUESTED_BYTES.fetch_add(size as isize, Ordering::Relaxed);
        LIVE_USABLE_BYTES.fetch_add(
            // SAFETY: `p` is a live block mimalloc just returned.
            unsafe { mi_usable_size(p as *const c_void) } as isize,
            Ordering::Relaxed,
        );
        LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
    }

    fn sub(size: usize, p: *mut u8) {
        LIVE_REQUESTED_BYTES.fetch_sub(size as isize, Ordering::Relaxed);
        LIVE_USABLE_BYTES.fetch_sub(
            // SAFETY: `p` is a live block of mimalloc's, about to be freed by the caller.
            unsafe { mi_usable_size(p as *const c_void) } as isize,
            Ordering::Relaxed,
        );
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed straight to mimalloc, a conforming allocator; the
// counters only read the sizes of blocks that mimalloc returned and has not yet freed.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = mimalloc::MiMalloc.alloc(layout);
        if !p.is_null() {
            Self::add(layout.size(), p);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = mimalloc::MiMalloc.alloc_zeroed(layout);
        if !p.is_null() {
            Self::add(layout.size(), p);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        Self::sub(layout.size(), p);
        mimalloc::MiMalloc.dealloc(p, layout);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Read the old usable size before mimalloc may free or reuse the block.
        let old_usable = mi_usable_size(p as *const c_void);
        let q = mimalloc::MiMalloc.realloc(p, layout, new_size);
        if !q.is_null() {
            LIVE_REQUESTED_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
            let new_usable = mi_usable_size(q as *const c_void);
            LIVE_USABLE_BYTES
                .fetch_add(new_usable as isize - old_usable as isize, Ordering::Relaxed);
        }
        q
    }
}

#[derive(Clone, Copy)]
struct Live {
    requested_bytes: isize,
    usable_bytes: isize,
    blocks: isize,
}

impl Live {
    fn now() -> Self {
        Self {
            requested_bytes: LIVE_REQUESTED_BYTES.load(Ordering::Relaxed),
            usable_bytes: LIVE_USABLE_BYTES.load(Ordering::Relaxed),
            blocks: LIVE_BLOCKS.load(Ordering::Relaxed),
        }
    }

    /// `self - other`, per connection: bytes added since an earlier reading,
    /// or bytes freed by the time of a later one.
    fn minus(self, other: Live) -> PerConnection {
        let n = CONNECTIONS as f64;
        PerConnection {
            requested_bytes: (self.requested_bytes - other.requested_bytes) as f64 / n,
            usable_bytes: (self.usable_bytes - other.usable_bytes) as f64 / n,
            blocks: (self.blocks - other.blocks) as f64 / n,
        }
    }
}

struct PerConnection {
    requested_bytes: f64,
    usable_bytes: f64,
    blocks: f64,
}

// ---------------------------------------------------------------- deployment --------

/// A deployment as `packhunt config generate` makes it, and one enrolled agent.
struct Pki {
    server: Arc<rustls::ServerConfig>,
    /// Its resumption cache never receives a ticket, so every handshake is full.
    client_full: Arc<rustls::ClientConfig>,
    client_resuming: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    server_key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut opts = GenerateOptions::new(dir.path());
    opts.admin_password = Some("bench".into());
    let generated = generate(&opts).expect("config generate succeeds in an empty dir");
    let server = packhunt::config::ServerConfig::load(&generated.server_config_path)
        .expect("generated server config loads");
    let client = packhunt::config::ClientConfig::load(&generated.client_config_path)
        .expect("generated client config loads");
    let agent = AgentIdentity::generate().expect("agent identity");
    let client_config = || {
        agent_client_config(
            &client.client.ca_certificate,
            agent.rustls_cert_chain(),
            agent.rustls_private_key(),
        )
        .expect("agent client config")
    };
    Pki {
        server: agent_server_config(server.frontend.master_tls().expect("the master's key"))
            .expect("agent server config"),
        client_full: client_config(),
        client_resuming: client_config(),
        server_name: server.frontend.master_tls_name.clone(),
        server_key: server
            .frontend
            .master_tls()
            .expect("the master's key")
            .key
            .clone_key(),
    }
}

// ---------------------------------------------------------------- TLS driving -------

/// The socket calls of both connection types, under names that do not shadow theirs.
trait Endpoint {
    fn take_tls(&mut self, rd: &mut dyn Read) -> io::Result<usize>;
    fn process(&mut self) -> Result<(), rustls::Error>;
    fn put_tls(&mut self, wr: &mut dyn Write) -> io::Result<usize>;
    fn has_output(&self) -> bool;
}

macro_rules! endpoint {
    ($t:ty) => {
        impl Endpoint for $t {
            fn take_tls(&mut self, rd: &mut dyn Read) -> io::Result<usize> {
                self.read_tls(rd)
            }
            fn process(&mut self) -> Result<(), rustls::Error> {
                self.process_new_packets().map(|_| ())
            }
            fn put_tls(&mut self, wr: &mut dyn Write) -> io::Result<usize> {
                self.write_tls(wr)
            }
            fn has_output(&self) -> bool {
                self.wants_write()
            }
        }
    };
}
endpoint!(ServerConnection);
endpoint!(ClientConnection);

fn feed(conn: &mut impl Endpoint, mut wire: &[u8]) {
    while !wire.is_empty() {
        conn.take_tls(&mut wire).expect("reading from memory");
        conn.process().expect("peer speaks valid TLS");
    }
}

fn drain(conn: &mut impl Endpoint, wire: &mut Vec<u8>) {
    wire.clear();
    while conn.has_output() {
        conn.put_tls(wire).expect("writing to memory");
    }
}

/// A socket with nothing to read. rustls sizes its receive buffer at each read attempt,
/// and the last attempt of a server going idle is one that would block; skipping it
/// would leave the buffer at its largest record's size instead of the idle size.
struct WouldBlock;

impl Read for WouldBlock {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// Both directions of the in-memory wire, reused so their growth is not per handshake.
struct Wire {
    to_server: Vec<u8>,
    to_client: Vec<u8>,
}

impl Wire {
    fn new() -> Self {
        Self {
            to_server: Vec::with_capacity(PIPE_BYTES),
            to_client: Vec::with_capacity(PIPE_BYTES),
        }
    }
}

/// One handshake; returns both ends and the time spent in server calls alone.
/// With `keep_ticket` the client stores the server's ticket for its next handshake.
fn handshake(
    pki: &Pki,
    client_config: &Arc<rustls::ClientConfig>,
    wire: &mut Wire,
    keep_ticket: bool,
) -> (ServerConnection, ClientConnection, Duration) {
    let mut client = ClientConnection::new(client_config.clone(), pki.server_name.clone())
        .expect("client starts");
    drain(&mut client, &mut wire.to_server); // ClientHello

    let start = Instant::now();
    let mut server = ServerConnection::new(pki.server.clone()).expect("server starts");
    feed(&mut server, &wire.to_server);
    drain(&mut server, &mut wire.to_client); // ServerHello .. Finished
    let mut server_time = start.elapsed();

    feed(&mut client, &wire.to_client);
    drain(&mut client, &mut wire.to_server); // Certificate, CertificateVerify, Finished

    let start = Instant::now();
    feed(&mut server, &wire.to_server);
    drain(&mut server, &mut wire.to_client); // NewSessionTicket
    server_time += start.elapsed();

    debug_assert!(!server.is_handshaking() && !client.is_handshaking());
    if keep_ticket {
        feed(&mut client, &wire.to_client);
    }
    (server, client, server_time)
}

/// A few bytes each way, then the server's read that finds nothing: an established
/// connection that has carried traffic and now idles.
fn exchange_and_idle(
    server: &mut ServerConnection,
    client: &mut ClientConnection,
    wire: &mut Wire,
) {
    const PAYLOAD: [u8; 64] = [7; 64];
    client
        .writer()
        .write_all(&PAYLOAD)
        .expect("client buffers plaintext");
    drain(client, &mut wire.to_server);
    feed(server, &wire.to_server);
    let mut got = [0u8; PAYLOAD.len()];
    server
        .reader()
        .read_exact(&mut got)
        .expect("server received the payload");
    server
        .writer()
        .write_all(&PAYLOAD)
        .expect("server buffers plaintext");
    drain(server, &mut wire.to_client);
    let idle = server.read_tls(&mut WouldBlock);
    assert!(matches!(idle, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock));
}

// ---------------------------------------------------------------- memory ------------

/// rustls server state per established connection, after a full or a resumed handshake.
/// Also returns live growth over the whole run (clients dropped as they finish), a
/// cross-check that the freed-on-drop figure misses nothing the connections hold.
fn rustls_server_bytes(pki: &Pki, resumed: bool) -> (PerConnection, PerConnection) {
    let client_config = if resumed {
        &pki.client_resuming
    } else {
        &pki.client_full
    };
    let mut wire = Wire::new();
    let mut servers: Vec<Box<ServerConnection>> = Vec::with_capacity(CONNECTIONS);
    // Warm-up: lazy statics, the ticketer's first key, a first ticket when resuming.
    for _ in 0..2 {
        let (mut server, mut client, _) = handshake(pki, client_config, &mut wire, resumed);
        exchange_and_idle(&mut server, &mut client, &mut wire);
    }
    let start = Live::now();
    for _ in 0..CONNECTIONS {
        let (mut server, mut client, _) = handshake(pki, client_config, &mut wire, resumed);
        let expected = if resumed {
            HandshakeKind::Resumed
        } else {
            HandshakeKind::Full
        };
        assert_eq!(server.handshake_kind(), Some(expected));
        exchange_and_idle(&mut server, &mut client, &mut wire);
        drop(client);
        servers.push(Box::new(server));
    }
    let established = Live::now();
    servers.clear();
    let held = established.minus(Live::now());
    let growth = established.minus(start);
    (held, growth)
}

/// The server half of an h2 connection as `agent_conn` holds it, with the task stream
/// once the agent opened it.
struct H2Server {
    conn: h2::server::Connection<tokio::io::DuplexStream, Bytes>,
    task_stream: Option<h2::SendStream<Bytes>>,
}

/// The agent half; kept alive so the server sees a live peer, never measured.
struct H2Client {
    _send: h2::client::SendRequest<Bytes>,
    _response: Option<h2::client::ResponseFuture>,
    driver: tokio::task::JoinHandle<()>,
}

async fn h2_pair(open_task_stream: bool) -> (Box<H2Server>, H2Client) {
    let (client_io, server_io) = tokio::io::duplex(PIPE_BYTES);
    let server = h2::server::Builder::new()
        .initial_window_size(SERVER_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(SERVER_CONNECTION_WINDOW_BYTES)
        .max_concurrent_streams(SERVER_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(SERVER_MAX_HEADER_LIST_BYTES)
        .handshake::<_, Bytes>(server_io);
    let client = h2::client::Builder::new()
        .initial_window_size(AGENT_STREAM_WINDOW_BYTES)
        .handshake::<_, Bytes>(client_io);
    let (server, client) = tokio::join!(server, client);
    let conn = server.expect("server h2 handshake");
    let (mut send, client_conn) = client.expect("client h2 handshake");
    let driver = tokio::spawn(async move {
        let _ = client_conn.await;
    });
    let response = open_task_stream.then(|| {
        let request = http::Request::builder()
            .method("GET")
            .uri(format!("https://127.0.0.1:8000{TASKS_PATH}"))
            .body(())
            .expect("static request parts are valid");
        send.send_request(request, true)
            .expect("room for one stream")
            .0
    });
    (
        Box::new(H2Server {
            conn,
            task_stream: None,
        }),
        H2Client {
            _send: send,
            _response: response,
            driver,
        },
    )
}

/// Polls the server once: answers a task-stream request as `tasks::serve_task_stream`
/// does (200 and a Hello frame), reads SETTINGS and acks, flushes what is queued.
fn poll_server(server: &mut H2Server, cx: &mut std::task::Context<'_>) {
    while let Poll::Ready(accepted) = server.conn.poll_accept(cx) {
        let (request, mut respond) = accepted
            .expect("client stays connected")
            .expect("valid h2 from the client");
        drop(request);
        let response = http::Response::builder()
            .status(200)
            .header("content-type", CONTENT_TYPE)
            .body(())
            .expect("static response parts are valid");
        let mut stream = respond
            .send_response(response, false)
            .expect("stream is open");
        let hello = pb::Hello {
            client_id: "C.0123456789abcdef".into(),
            frontend: "127.0.0.1:8000".into(),
        };
        let hello = framing::encode(&pb::ServerMessage {
            kind: Some(pb::server_message::Kind::Hello(hello)),
        });
        stream.send_data(hello, false).expect("stream is open");
        server.task_stream = Some(stream);
    }
}

/// Drives every connection until nothing changes any more: the SETTINGS exchange (and
/// the task stream's response) is complete and no frame is in flight.
async fn settle(servers: &mut [Box<H2Server>]) {
    let mut last = Live::now().requested_bytes;
    for _ in 0..MAX_SETTLE_ROUNDS {
        futures::future::poll_fn(|cx| {
            servers.iter_mut().for_each(|s| poll_server(s, cx));
            Poll::Ready(())
        })
        .await;
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let now = Live::now().requested_bytes;
        if now == last {
            return;
        }
        last = now;
    }
    panic!("h2 connections still changing after {MAX_SETTLE_ROUNDS} rounds");
}

fn h2_server_bytes(open_task_stream: bool) -> PerConnection {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let mut servers = Vec::with_capacity(CONNECTIONS);
        let mut clients = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let (server, client) = h2_pair(open_task_stream).await;
            servers.push(server);
            clients.push(client);
        }
        settle(&mut servers).await;
        assert!(servers
            .iter()
            .all(|s| s.task_stream.is_some() == open_task_stream));
        let established = Live::now();
        servers.clear();
        let held = established.minus(Live::now());
        clients.iter().for_each(|c| c.driver.abort());
        held
    })
}

/// What `Registry::register` keeps per agent: the map entry, its queue and duplicate
/// set, and the receiver the task stream holds. Growth, so the map's table doubling is
/// included amortised, as a shard filling up pays it.
fn registry_bytes() -> PerConnection {
    let registry = Registry::default();
    let ids: Vec<ClientId> = (0..CONNECTIONS)
        .map(|i| ClientId::parse(&format!("C.{i:016x}")).expect("valid id"))
        .collect();
    let mut registrations = Vec::with_capacity(CONNECTIONS);
    let start = Live::now();
    for (session, id) in ids.iter().enumerate() {
        registrations.push(
            registry
                .register(id, session as u64)
                .expect("an open registry takes every stream"),
        );
    }
    Live::now().minus(start)
}

fn print_breakdown(pki: &Pki) {
    let (full, full_growth) = rustls_server_bytes(pki, false);
    let (resumed, resumed_growth) = rustls_server_bytes(pki, true);
    let h2_settings = h2_server_bytes(false);
    let h2_task = h2_server_bytes(true);
    let registry = registry_bytes();
    let row = |what: &str, m: &PerConnection| {
        eprintln!(
            "  {what:<58} {:>9.0} {:>9.0} {:>7.1}",
            m.requested_bytes, m.usable_bytes, m.blocks
        );
    };
    eprintln!(
        "heap held per established idle agent connection, server side \
         ({CONNECTIONS} held at once):"
    );
    eprintln!(
        "  {:<58} {:>9} {:>9} {:>7}",
        "", "requested", "usable", "blocks"
    );
    row("rustls ServerConnection, full mTLS handshake", &full);
    row("  cross-check: live growth over the run", &full_growth);
    row("rustls ServerConnection, resumed handshake", &resumed);
    row("  cross-check: live growth over the run", &resumed_growth);
    row(
        "h2 server Connection, after preface + SETTINGS exchange",
        &h2_settings,
    );
    row(
        "h2 server Connection + open task stream (200 + Hello sent)",
        &h2_task,
    );
    row("session Registry entry + task queue receiver", &registry);
    let total = |a: &PerConnection, b: &PerConnection, c: &PerConnection| {
        a.usable_bytes + b.usable_bytes + c.usable_bytes
    };
    eprintln!(
        "  idle agent total (full handshake + h2 with task stream + registry), usable: \
         {:.0} bytes",
        total(&full, &h2_task, &registry)
    );
    eprintln!(
        "  inline sizes (in the figures above): ServerConnection {} B, \
         h2 server Connection {} B",
        std::mem::size_of::<ServerConnection>(),
        std::mem::size_of::<h2::server::Connection<tokio::io::DuplexStream, Bytes>>()
    );
}

// ---------------------------------------------------------------- timings -----------

fn bench_connection_state(c: &mut Criterion) {
    let pki = pki();
    print_breakdown(&pki);

    let mut g = c.benchmark_group("tls_handshake");
    // A full handshake takes ~0.5 ms: 100 samples do not fit the 2 s of CI's quick mode.
    g.sample_size(50);
    let mut wire = Wire::new();
    for (name, resumed) in [("full", false), ("resumed", true)] {
        let client_config = if resumed {
            &pki.client_resuming
        } else {
            &pki.client_full
        };
        // A ticket in hand for the first resumed iteration, and proof the mode is right.
        let mut check = handshake(&pki, client_config, &mut wire, resumed).0;
        if resumed {
            check = handshake(&pki, client_config, &mut wire, resumed).0;
        }
        let expected = if resumed {
            HandshakeKind::Resumed
        } else {
            HandshakeKind::Full
        };
        assert_eq!(check.handshake_kind(), Some(expected), "{name}");

        g.bench_function(format!("{name}/both_ends"), |b| {
            b.iter(|| black_box(handshake(&pki, client_config, &mut wire, resumed)))
        });
        g.bench_function(format!("{name}/server_only"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let (server, client, server_time) =
                        handshake(&pki, client_config, &mut wire, resumed);
                    let start = Instant::now();
                    drop(server);
                    spent += server_time + start.elapsed();
                    drop(client);
                }
                spent
            })
        });
    }

    let signer = rustls::crypto::ring::sign::any_supported_type(&pki.server_key)
        .expect("ring loads the frontend key")
        .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
        .expect("the frontend key is P-256");
    let transcript_hash = [0x5a_u8; 130];
    g.bench_function("baseline_ecdsa_p256_sign", |b| {
        b.iter(|| signer.sign(black_box(&transcript_hash)).expect("signs"))
    });
    g.finish();
}

criterion_group!(benches, bench_connection_state);
criterion_main!(benches);
