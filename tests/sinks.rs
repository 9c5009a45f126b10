//! Sinks, driven through their public API (`RunningSink::start`, then `offer` of
//! `IngestedBatch`es as an agent shard would) against real receivers: a ClickHouse server
//! run here, and HTTP receivers in this file that fail, throttle and check formats.
//!
//! Goal: every event reaches its sink exactly once by id through outages, throttling,
//! rejections and restarts; the spool stays within its bound, dropping the oldest and
//! counting them; a file sink rotates. Method: wait (bounded) for what the receiver holds
//! and for the sink's own metrics; never assert timings.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use packhunt::config::{HttpTarget, HttpUrl, Sink, SinkKind};
use packhunt::events::IngestedBatch;
use packhunt::metrics::SinkDrop;
use packhunt::sinks::RunningSink;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);
const ARTIFACT: &str = "Linux.Events.ProcessStart";

fn batch(client: &str, seq: u64, rows: usize) -> Arc<IngestedBatch> {
    let mut jsonl = Vec::new();
    let mut time_ms = Vec::new();
    for row in 0..rows {
        jsonl.extend_from_slice(
            format!("{{\"pid\":{row},\"cmd\":\"/bin/x \\\"{seq}\\\"\"}}\n").as_bytes(),
        );
        time_ms.push(1_700_000_000_000 + seq * 1000 + row as u64);
    }
    Arc::new(IngestedBatch {
        client_id: packhunt::ids::ClientId::parse(client).expect("a valid id"),
        artifact: packhunt::datastore::ArtifactName::parse(ARTIFACT).expect("valid"),
        seq,
        time_ms,
        jsonl: bytes::Bytes::from(jsonl),
        labels: Arc::from(vec!["prod".to_string()]),
    })
}

fn ids_of(batches: &[Arc<IngestedBatch>]) -> BTreeSet<String> {
    batches
        .iter()
        .flat_map(|b| (0..b.time_ms.len()).map(|i| b.event_id(i)))
        .collect()
}

fn http_sink(name: &str, url: &str, kind: fn(HttpTarget) -> SinkKind) -> Sink {
    let target = HttpTarget {
        url: HttpUrl::parse(url).expect("a test URL"),
        headers: vec![(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("ApiKey test"),
        )],
        ca_file: None,
    };
    Sink {
        name: name.to_string(),
        kind: kind(target),
        artifacts: vec![ARTIFACT.to_string()],
        labels: Vec::new(),
        batch_rows: NonZeroUsize::new(50).expect("not zero"),
        batch_age: Duration::from_millis(50),
        spool_bytes: 64 << 20,
        spool_dir: None,
    }
}

fn offer_all(sink: &RunningSink, batches: &[Arc<IngestedBatch>]) {
    let consumer = sink.consumer();
    for b in batches {
        consumer.offer(b);
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// What the receiver answers: status, extra headers, body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// An HTTP/1.1 receiver on a loopback port: answers request `n` with `respond(n, req)`
/// and keeps every request. One request per connection (the sinks open one per batch).
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start(respond: impl Fn(usize, &Request) -> Answer + Send + 'static) -> Self {
        Self::start_on(common::free_port(), respond)
    }

    fn start_on(port: u16, respond: impl Fn(usize, &Request) -> Answer + Send + 'static) -> Self {
        Self::serve(port, None, respond)
    }

    /// The same over TLS with `tls` (HTTPS).
    fn start_tls(
        tls: Arc<rustls::ServerConfig>,
        respond: impl Fn(usize, &Request) -> Answer + Send + 'static,
    ) -> Self {
        Self::serve(common::free_port(), Some(tls), respond)
    }

    fn serve(
        port: u16,
        tls: Option<Arc<rustls::ServerConfig>>,
        respond: impl Fn(usize, &Request) -> Answer + Send + 'static,
    ) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the receiver");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let mut stream: Box<dyn ReadWrite> = match &tls {
                    None => Box::new(stream),
                    Some(config) => {
                        let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                            continue;
                        };
                        Box::new(rustls::StreamOwned::new(conn, stream))
                    }
                };
                let Ok(request) = read_request(&mut stream) else {
                    continue;
                };
                let n = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(request.clone());
                    seen.len() - 1
                };
                let _ = write_answer(&mut stream, respond(n, &request));
            }
        });
        Self { port, requests }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn read_request(stream: &mut Box<dyn ReadWrite>) -> Result<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let mut headers = HashMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let Some((k, v)) = line.trim_end().split_once(':') else {
            break;
        };
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Request {
        path,
        headers,
        body,
    })
}

fn write_answer(stream: &mut Box<dyn ReadWrite>, (status, headers, body): Answer) -> Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    stream.flush()?;
    Ok(())
}

fn ok() -> Answer {
    (200, Vec::new(), b"{}".to_vec())
}

/// Event ids in the webhook batches a receiver accepted (answered 200).
fn webhook_ids(requests: &[Request], accepted: impl Fn(usize) -> bool) -> Vec<String> {
    let mut ids = Vec::new();
    for (n, r) in requests.iter().enumerate() {
        if !accepted(n) {
            continue;
        }
        let body: Value = serde_json::from_slice(&r.body).expect("a webhook body is JSON");
        for e in body["events"].as_array().expect("events") {
            ids.push(e["id"].as_str().expect("an id").to_string());
        }
    }
    ids
}

#[test]
fn webhook_retries_through_errors_and_throttling_and_delivers_each_event() -> Result<()> {
    // The receiver fails the first 3 requests with 500, throttles the next 2 with 429 and
    // Retry-After: 1, then accepts.
    let fail = |n: usize| n < 5;
    let receiver = Receiver::start(move |n, _| match n {
        0..=2 => (500, Vec::new(), b"boom".to_vec()),
        3..=4 => (429, vec![("Retry-After".into(), "1".into())], Vec::new()),
        _ => ok(),
    });
    let dir = tempfile::tempdir()?;
    let sink = RunningSink::start(
        &http_sink("hook-retry", &receiver.url(), |http| SinkKind::Webhook {
            http,
        }),
        dir.path(),
    )?;
    let batches: Vec<_> = (1..=20)
        .map(|seq| batch("C.00000000000000a1", seq, 10))
        .collect();
    offer_all(&sink, &batches);
    let expected = ids_of(&batches);
    common::wait_until(
        "every event accepted by the receiver",
        LIMIT,
        || Ok(webhook_ids(&receiver.requests(), |n| !fail(n)).len()),
        |n| *n >= expected.len(),
    )?;
    let requests = receiver.requests();
    let accepted = webhook_ids(&requests, |n| !fail(n));
    assert_eq!(accepted.len(), expected.len(), "no event accepted twice");
    assert_eq!(accepted.into_iter().collect::<BTreeSet<_>>(), expected);
    let first: Value = serde_json::from_slice(&requests[5].body)?;
    assert_eq!(first["sink"], "hook-retry");
    let event = &first["events"][0];
    assert_eq!(event["client_id"], "C.00000000000000a1");
    assert_eq!(event["artifact"], ARTIFACT);
    assert!(event["time_ms"].as_u64().is_some() && event["row"]["pid"].is_u64());
    assert_eq!(requests[0].headers["authorization"], "ApiKey test");
    let m = sink.metrics();
    common::wait_until(
        "sent counted",
        LIMIT,
        || Ok(m.sent.load(Ordering::Relaxed)),
        |s| *s == expected.len() as u64,
    )?;
    assert!(m.retried.load(Ordering::Relaxed) > 0);
    assert_eq!(m.dropped_count(SinkDrop::QueueFull), 0);
    sink.stop();
    Ok(())
}

#[test]
fn elastic_sends_bulk_ndjson_and_retries_only_the_retryable_items() -> Result<()> {
    // Every request is checked line by line; the first answers item 1 with 429 (retry)
    // and item 2 with a mapping error (given up); later ones accept everything.
    let receiver = Receiver::start(|n, request| {
        let lines: Vec<&[u8]> = request
            .body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let mut items = Vec::new();
        for (i, pair) in lines.chunks(2).enumerate() {
            let status = match (n, i) {
                (0, 1) => 429,
                (0, 2) => 400,
                _ => 201,
            };
            let id = serde_json::from_slice::<Value>(pair[0]).map(|a| a["index"]["_id"].clone());
            let mut item =
                serde_json::json!({"index": {"_id": id.unwrap_or_default(), "status": status}});
            if status != 201 {
                item["index"]["error"] = serde_json::json!({"type": "test_error"});
            }
            items.push(item);
        }
        let body = serde_json::json!({"took": 1, "errors": n == 0, "items": items});
        (200, Vec::new(), body.to_string().into_bytes())
    });
    let dir = tempfile::tempdir()?;
    let sink = RunningSink::start(
        &http_sink("elastic-bulk", &format!("{}/es", receiver.url()), |http| {
            SinkKind::Elastic {
                http,
                index: "packhunt-test".into(),
            }
        }),
        dir.path(),
    )?;
    let batches: Vec<_> = (1..=3)
        .map(|seq| batch("C.00000000000000b2", seq, 10))
        .collect();
    offer_all(&sink, &batches);
    let m = sink.metrics().clone();
    common::wait_until(
        "all but the refused event sent",
        LIMIT,
        || Ok(m.sent.load(Ordering::Relaxed)),
        |s| *s == 29,
    )?;
    let requests = receiver.requests();
    let mut indexed = Vec::new();
    for r in &requests {
        assert_eq!(r.path, "/es/_bulk");
        assert_eq!(r.headers["content-type"], "application/x-ndjson");
        assert!(r.body.ends_with(b"\n"), "a _bulk body ends with a newline");
        let lines: Vec<&[u8]> = r
            .body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len() % 2, 0, "action + document per event");
        for pair in lines.chunks(2) {
            let action: Value = serde_json::from_slice(pair[0])?;
            let doc: Value = serde_json::from_slice(pair[1])?;
            assert_eq!(action["index"]["_index"], "packhunt-test");
            let id = action["index"]["_id"].as_str().expect("an _id").to_string();
            assert_eq!(doc["id"], id.as_str());
            assert_eq!(doc["client_id"], "C.00000000000000b2");
            assert_eq!(doc["artifact"], ARTIFACT);
            let time_ms = doc["time_ms"].as_u64().expect("time_ms");
            assert!(doc["@timestamp"]
                .as_str()
                .expect("@timestamp")
                .starts_with("2023-11-14T"));
            assert!(
                doc["row"]["pid"].is_u64(),
                "the row as a JSON object: {doc}"
            );
            assert!(time_ms >= 1_700_000_000_000);
            indexed.push(id);
        }
    }
    let first_batch: Vec<String> = (0..10).map(|i| batches[0].event_id(i)).collect();
    // The 429 item was sent again, alone or with later events; the refused one was not.
    let count = |id: &String| indexed.iter().filter(|i| *i == id).count();
    assert_eq!(count(&first_batch[1]), 2);
    assert_eq!(count(&first_batch[2]), 1);
    assert_eq!(m.dropped_count(SinkDrop::Rejected), 1);
    let all = ids_of(&batches);
    assert_eq!(indexed.iter().cloned().collect::<BTreeSet<_>>(), all);
    sink.stop();
    Ok(())
}

#[test]
fn clickhouse_sink_lands_every_event_once_by_id_across_a_server_outage() -> Result<()> {
    let test = "clickhouse_sink_lands_every_event_once_by_id_across_a_server_outage";
    let Some(mut server) = common::clickhouse::ClickHouse::start()? else {
        common::skip(test, "clickhouse-server (Debian package clickhouse-server)");
        return Ok(());
    };
    server.query(
        "CREATE TABLE events (id String, client_id String, artifact String, time_ms UInt64, \
         row String) ENGINE = ReplacingMergeTree ORDER BY id",
    )?;
    let dir = tempfile::tempdir()?;
    // ClickHouse reads an Authorization header as its own credentials: none here.
    let config = http_sink("ch-outage", &server.url(), |mut http| {
        http.headers.clear();
        SinkKind::ClickHouse {
            http,
            table: "default.events".into(),
        }
    });
    let sink = RunningSink::start(&config, dir.path())?;
    let client = "C.00000000000000c3";
    let before: Vec<_> = (1..=10).map(|seq| batch(client, seq, 25)).collect();
    offer_all(&sink, &before);
    let count = |server: &common::clickhouse::ClickHouse| -> Result<(u64, u64)> {
        let answer = server.query("SELECT count(), uniqExact(id) FROM events FINAL")?;
        let mut fields = answer
            .split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0));
        Ok((fields.next().unwrap_or(0), fields.next().unwrap_or(0)))
    };
    common::wait_until(
        "the first events in ClickHouse",
        LIMIT,
        || count(&server),
        |c| c.0 == 250,
    )?;

    // The server goes down; events keep coming and wait in the spool.
    server.kill();
    let retried_before = sink.metrics().retried.load(Ordering::Relaxed);
    let during: Vec<_> = (11..=20).map(|seq| batch(client, seq, 25)).collect();
    offer_all(&sink, &during);
    let m = sink.metrics().clone();
    common::wait_until(
        "the sink retrying against the stopped server",
        LIMIT,
        || Ok(m.retried.load(Ordering::Relaxed)),
        |r| *r > retried_before,
    )?;
    assert!(m.spooled_bytes.load(Ordering::Relaxed) > 0);

    server.restart()?;
    let after: Vec<_> = (21..=30).map(|seq| batch(client, seq, 25)).collect();
    offer_all(&sink, &after);
    // The same batch ingested again (as a replay would) must not count twice.
    offer_all(&sink, &before[..1]);
    let total = (before.len() + during.len() + after.len()) as u64 * 25;
    common::wait_until(
        "every event in ClickHouse once by id",
        LIMIT,
        || count(&server),
        |c| *c == (total, total),
    )?;
    let ids = server.query("SELECT id FROM events FINAL ORDER BY id")?;
    let got: BTreeSet<String> = ids.lines().map(str::to_string).collect();
    let mut expected = ids_of(&before);
    expected.extend(ids_of(&during));
    expected.extend(ids_of(&after));
    assert_eq!(got, expected);
    let row = server.query(&format!(
        "SELECT client_id, artifact, time_ms, row FROM events FINAL WHERE id = '{}' \
         FORMAT JSONEachRow",
        during[0].event_id(3)
    ))?;
    let row: Value = serde_json::from_str(row.trim())?;
    assert_eq!(row["client_id"], client);
    assert_eq!(row["artifact"], ARTIFACT);
    // 18.16 quotes UInt64 in JSON output; newer versions may not.
    assert_eq!(
        row["time_ms"].to_string().trim_matches('"'),
        "1700000011003"
    );
    let stored: Value = serde_json::from_str(row["row"].as_str().expect("row is a string"))?;
    assert_eq!(stored["pid"], 3);
    assert_eq!(stored["cmd"], "/bin/x \"11\"");
    common::wait_until(
        "lag back to 0",
        LIMIT,
        || Ok(m.lag_seconds.load(Ordering::Relaxed)),
        |l| *l == 0,
    )?;
    sink.stop();
    Ok(())
}

#[test]
fn a_full_spool_drops_the_oldest_and_a_restarted_sink_sends_what_it_kept() -> Result<()> {
    // Nothing listens at the sink's URL at first: events pile up in a 64 KiB spool,
    // which drops its oldest segments. The sink is stopped with events spooled, the
    // receiver comes up, and a new sink on the same spool sends exactly what was kept.
    let port = common::free_port();
    let dir = tempfile::tempdir()?;
    let mut config = http_sink("hook-spool", &format!("http://127.0.0.1:{port}"), |http| {
        SinkKind::Webhook { http }
    });
    config.spool_bytes = 64 * 1024;
    let sink = RunningSink::start(&config, dir.path())?;
    let batches: Vec<_> = (1..=100)
        .map(|seq| batch("C.00000000000000d4", seq, 20))
        .collect();
    let total = 100 * 20;
    // Offered in steps, so the queue to the spool writer never overflows.
    for chunk in batches.chunks(10) {
        offer_all(&sink, chunk);
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = sink.metrics().clone();
    common::wait_until(
        "the spool over its bound, oldest dropped",
        LIMIT,
        || Ok(m.dropped_count(SinkDrop::SpoolFull)),
        |d| *d > 0,
    )?;
    assert!(m.spooled_bytes.load(Ordering::Relaxed) <= 64 * 1024);
    assert!(m.lag_seconds.load(Ordering::Relaxed) > 0);
    sink.stop();
    let dropped = m.dropped_count(SinkDrop::SpoolFull) + m.dropped_count(SinkDrop::QueueFull);
    assert_eq!(m.sent.load(Ordering::Relaxed), 0);

    let receiver = Receiver::start_on(port, |_, _| ok());
    let sink = RunningSink::start(&config, dir.path())?;
    let kept = total - dropped;
    common::wait_until(
        "what the spool kept, sent after the restart",
        LIMIT,
        || Ok(webhook_ids(&receiver.requests(), |_| true).len() as u64),
        |n| *n >= kept,
    )?;
    let got = webhook_ids(&receiver.requests(), |_| true);
    assert_eq!(got.len() as u64, kept, "nothing sent twice");
    // The newest events are the ones kept: the last batch is there whole, the first not.
    let got: BTreeSet<String> = got.into_iter().collect();
    assert!(ids_of(&batches[99..]).is_subset(&got));
    assert!(!got.contains(&batches[0].event_id(0)));
    sink.stop();
    Ok(())
}

#[test]
fn a_file_sink_writes_each_event_as_a_line_and_rotates_by_size() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("out").join("events.jsonl");
    let config = Sink {
        name: "file-rotate".into(),
        kind: SinkKind::File {
            path: path.clone(),
            max_file_bytes: 4096,
            max_files: 3,
        },
        artifacts: vec![ARTIFACT.into()],
        labels: vec!["prod".into()],
        batch_rows: NonZeroUsize::new(5).expect("not zero"),
        batch_age: Duration::from_millis(20),
        spool_bytes: 1 << 20,
        spool_dir: None,
    };
    let sink = RunningSink::start(&config, &dir.path().join("spool"))?;
    let batches: Vec<_> = (1..=40)
        .map(|seq| batch("C.00000000000000e5", seq, 5))
        .collect();
    offer_all(&sink, &batches);
    let m = sink.metrics().clone();
    common::wait_until(
        "every event written",
        LIMIT,
        || Ok(m.sent.load(Ordering::Relaxed)),
        |s| *s == 200,
    )?;
    sink.stop();
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    let files: Vec<PathBuf> = std::iter::once(path.clone())
        .chain((1..=3).map(numbered))
        .collect();
    let mut ids = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        assert!(
            text.len() as u64 <= 4096,
            "{} is {} bytes",
            file.display(),
            text.len()
        );
        for line in text.lines() {
            let event: Value = serde_json::from_str(line)?;
            assert_eq!(event["artifact"], ARTIFACT);
            ids.push(event["id"].as_str().expect("an id").to_string());
        }
    }
    assert!(!numbered(4).exists(), "at most max_files rotated files");
    // The newest event is in the current file, each kept event once.
    assert!(ids.contains(&batches[39].event_id(4)));
    assert_eq!(ids.len(), ids.iter().collect::<BTreeSet<_>>().len());
    Ok(())
}

#[test]
fn label_and_artifact_filters_pick_what_a_sink_receives() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("events.jsonl");
    let mut config = Sink {
        name: "file-filter".into(),
        kind: SinkKind::File {
            path: path.clone(),
            max_file_bytes: 1 << 20,
            max_files: 1,
        },
        artifacts: vec![ARTIFACT.into()],
        labels: vec!["other-label".into()],
        batch_rows: NonZeroUsize::new(1).expect("not zero"),
        batch_age: Duration::from_millis(20),
        spool_bytes: 1 << 20,
        spool_dir: None,
    };
    let sink = RunningSink::start(&config, &dir.path().join("spool-a"))?;
    offer_all(&sink, &[batch("C.00000000000000f6", 1, 3)]);
    sink.stop();
    assert!(!path.exists(), "a client without the label is not shipped");
    config.labels = vec!["prod".into()];
    config.name = "file-filter-2".into();
    let sink = RunningSink::start(&config, &dir.path().join("spool-b"))?;
    offer_all(&sink, &[batch("C.00000000000000f6", 2, 3)]);
    let m = sink.metrics().clone();
    common::wait_until(
        "written",
        LIMIT,
        || Ok(m.sent.load(Ordering::Relaxed)),
        |s| *s == 3,
    )?;
    sink.stop();
    assert_eq!(common::count_lines(&path), 3);
    Ok(())
}

#[test]
fn a_broken_sinks_section_names_the_file_the_key_and_the_fault() -> Result<()> {
    const PROCESS_START: &str = "artifacts = [\"Linux.Events.ProcessStart\"]";
    let cases: [(String, &str, &str); 7] = [
        (
            format!("name = \"a\"\nkind = \"kafka\"\nurl = \"http://x\"\n{PROCESS_START}"),
            "sinks[0].kind",
            "not one of elastic, clickhouse, webhook, file",
        ),
        (
            format!("name = \"a\"\nkind = \"webhook\"\n{PROCESS_START}"),
            "sinks[0].url",
            "needs its endpoint",
        ),
        (
            "name = \"a\"\nkind = \"webhook\"\nurl = \"http://x\"\nartifacts = []".into(),
            "sinks[0].artifacts",
            "at least one event artifact",
        ),
        (
            "name = \"a\"\nkind = \"webhook\"\nurl = \"http://x\"\n\
             artifacts = [\"Linux.Sys.Pslist\"]"
                .into(),
            "sinks[0].artifacts[0]",
            "not an event artifact",
        ),
        (
            format!(
                "name = \"a\"\nkind = \"clickhouse\"\nurl = \"http://x\"\n\
                 table = \"t; DROP\"\n{PROCESS_START}"
            ),
            "sinks[0].table",
            "database.table",
        ),
        (
            format!(
                "name = \"a\"\nkind = \"webhook\"\nurl = \"http://x\"\ntable = \"t\"\n\
                 {PROCESS_START}"
            ),
            "sinks[0].table",
            "applies only to clickhouse",
        ),
        (
            format!("name = \"a/b\"\nkind = \"file\"\npath = \"x\"\n{PROCESS_START}"),
            "sinks[0].name",
            "letters, digits",
        ),
    ];
    for (entry, key, words) in cases {
        let deployment = common::Deployment::generate_with(|text| {
            text.push_str(&format!("\n[[sinks]]\n{entry}\n"));
        })?;
        let path = deployment.path().join("server.config.toml");
        let err = packhunt::config::ServerConfig::load(&path)
            .expect_err(&entry)
            .to_string();
        assert!(err.contains(&format!("key `{key}`")), "{entry}: {err}");
        assert!(err.contains(words), "{entry}: {err}");
        assert!(err.contains("server.config.toml"), "{err}");
    }
    // A good one loads, with its defaults.
    let deployment = common::Deployment::generate_with(|text| {
        text.push_str(&format!(
            "\n[[sinks]]\nname = \"siem\"\nkind = \"elastic\"\nurl = \"https://es:9200\"\n\
             {PROCESS_START}\n"
        ));
    })?;
    let config =
        packhunt::config::ServerConfig::load(&deployment.path().join("server.config.toml"))?;
    let sink = &config.sinks[0];
    assert_eq!(
        sink.batch_rows.get(),
        packhunt::limits::DEFAULT_SINK_BATCH_ROWS_COUNT
    );
    assert_eq!(sink.spool_bytes, packhunt::limits::DEFAULT_SINK_SPOOL_BYTES);
    let dir = packhunt::sinks::spool_dir(sink, Path::new("/data"), "10.0.0.1:8000");
    assert_eq!(dir, Path::new("/data/spool/10.0.0.1_8000/siem"));
    Ok(())
}

#[test]
fn a_deployment_ships_agent_events_to_its_sink_across_a_frontend_restart() -> Result<()> {
    // Goal: the whole path, agent upload → ingest → tap → spool → webhook, with the
    // frontend stopped while events are still spooled (the receiver answers 503) and
    // started again: every event arrives once by id. Method: a real master configured
    // with a `[[sinks]]` webhook, a RawAgent posting EventBatch uploads.
    use packhunt::protocol::pb;
    let accept = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let open = accept.clone();
    let receiver = Receiver::start(move |_, _| {
        if open.load(Ordering::Relaxed) {
            ok()
        } else {
            (503, vec![("Retry-After".into(), "1".into())], Vec::new())
        }
    });
    let url = receiver.url();
    let mut deployment = common::Deployment::start_with(|text| {
        text.push_str(&format!(
            "\n[[sinks]]\nname = \"e2e-hook\"\nkind = \"webhook\"\nurl = \"{url}\"\n\
             artifacts = [\"Generic.Client.Stats\"]\nbatch_rows = 20\nbatch_age_ms = 100\n"
        ));
    })?;
    let mut agent = common::RawAgent::connect(&deployment)?;
    let client = agent.client_id.clone();
    let now_ms = packhunt::clock::now_ms();
    let mut expected = BTreeSet::new();
    for seq in 1..=5u64 {
        let rows = 10u64;
        let batch = pb::EventBatch {
            artifact: "Generic.Client.Stats".into(),
            seq,
            jsonl: (0..rows)
                .map(|i| format!("{{\"seq\":{seq},\"i\":{i}}}\n"))
                .collect::<String>()
                .into(),
            row_count: rows as u32,
            time_ms: (0..rows).map(|i| now_ms + i).collect(),
            dropped_before: 0,
        };
        let reply = agent.upload(&pb::Upload {
            kind: Some(pb::upload::Kind::Events(batch)),
        })?;
        anyhow::ensure!(reply.status == 200, "batch {seq}: HTTP {}", reply.status);
        expected.extend((0..rows).map(|i| format!("{client}:Generic.Client.Stats:{seq}:{i}")));
    }
    let retried = "packhunt_sink_retried_total{sink=\"e2e-hook\"}";
    common::wait_until(
        "the sink retrying",
        LIMIT,
        || deployment.metric(retried),
        |r| *r > 0,
    )?;
    drop(agent);
    deployment.stop_frontend()?;
    // Every request so far was answered 503: their events stayed spooled.
    let refused = receiver.requests().len();
    accept.store(true, Ordering::Relaxed);
    deployment.start_frontend()?;
    let sent = "packhunt_sink_sent_total{sink=\"e2e-hook\"}";
    common::wait_until(
        "every event sent after the restart",
        LIMIT,
        || deployment.metric(sent),
        |s| *s == expected.len() as u64,
    )?;
    assert!(refused > 0);
    let got = webhook_ids(&receiver.requests(), |n| n >= refused);
    assert_eq!(got.len(), expected.len(), "each event accepted once");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), expected);
    let spool = deployment.datastore().join("spool");
    assert!(
        spool.is_dir(),
        "the spool is under the datastore by default"
    );
    Ok(())
}

#[test]
fn an_https_sink_checks_the_receiver_against_its_ca_file() -> Result<()> {
    // Goal: `https://` with `ca_file` delivers to a receiver whose certificate that CA
    // signed, and refuses (retries) one it did not. Method: the deployment CA and master
    // certificate of a generated config serve a TLS receiver on 127.0.0.1.
    let deployment = common::Deployment::generate_with(|_| {})?;
    let config_path = deployment.path().join("server.config.toml");
    let config = packhunt::config::ServerConfig::load(&config_path)?;
    let file = packhunt::config::ServerFile::load(&config_path)?;
    let ca_file = deployment.path().join("ca.pem");
    std::fs::write(&ca_file, &file.tls.ca_certificate)?;
    let tls = config.frontend.master_tls()?;
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(tls.chain.clone(), tls.key.clone_key())?;
    let receiver = Receiver::start_tls(Arc::new(server), |_, _| ok());
    let url = format!("https://127.0.0.1:{}", receiver.port);
    let mut sink = http_sink("hook-https", &url, |http| SinkKind::Webhook { http });
    if let SinkKind::Webhook { http } = &mut sink.kind {
        http.ca_file = Some(ca_file);
    }
    let dir = tempfile::tempdir()?;
    let running = RunningSink::start(&sink, dir.path())?;
    let batches = [batch("C.00000000000000a7", 1, 5)];
    offer_all(&running, &batches);
    common::wait_until(
        "the events received over TLS",
        LIMIT,
        || Ok(webhook_ids(&receiver.requests(), |_| true).len()),
        |n| *n == 5,
    )?;
    running.stop();

    // With no `ca_file` the system's bundle is trusted, which does not hold the
    // deployment CA: the same receiver is never sent to.
    if !Path::new("/etc/ssl/certs/ca-certificates.crt").is_file() {
        common::skip(
            "an_https_sink_checks_the_receiver_against_its_ca_file (system bundle half)",
            "the ca-certificates package",
        );
        return Ok(());
    }
    let other = tempfile::tempdir()?;
    let mut untrusted = http_sink("hook-https-untrusted", &url, |http| SinkKind::Webhook {
        http,
    });
    untrusted.batch_age = Duration::from_millis(10);
    let running = RunningSink::start(&untrusted, other.path())?;
    offer_all(&running, &[batch("C.00000000000000a7", 2, 5)]);
    let m = running.metrics().clone();
    common::wait_until(
        "the untrusted receiver refused",
        LIMIT,
        || Ok(m.retried.load(Ordering::Relaxed)),
        |r| *r > 0,
    )?;
    assert_eq!(m.sent.load(Ordering::Relaxed), 0);
    assert_eq!(webhook_ids(&receiver.requests(), |_| true).len(), 5);
    running.stop();
    Ok(())
}
