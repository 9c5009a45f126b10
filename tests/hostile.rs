//! Goal: a hostile or broken agent gets a clear refusal (status code, ack message, a
//! `packhunt_upload_rejections_total` reason) for every bad upload, nothing it sends
//! corrupts or escapes its own results, and the frontend keeps serving everyone after.
//! Covers: bodies above `max_upload_bytes` (declared and streamed), malformed JSONL,
//! paths and names that try to leave the client folder, frames claiming huge lengths,
//! results for another client's flow, resent and out-of-order batches, and connections
//! that are not TLS or carry no client certificate.
//! Method: a generated deployment and a real frontend process on loopback; agents are
//! tests/common's `RawAgent` (the real comms client, `packhunt::agent::comms`, with a
//! fresh identity, on its own current-thread tokio runtime). Each agent connects
//! (registers; its Hello names its identity), sends its ClientInfo, is tasked through the
//! API, and the test reads the Task off its stream.
//! What landed on disk is compared byte for byte before and after each hostile upload.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use packhunt::agent::comms::UploadReply;
use packhunt::protocol::pb::{self, upload::Kind, upload_ack::Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use common::{count_lines, set_keys, wait_until, Deployment, RawAgent};

const MAX_UPLOAD_BYTES: u64 = 65536;
const USERS: &str = "Linux.Sys.Users";

// ---------------------------------------------------------------------------------------
// The cases. Each runs against any live deployment and checks its own metric deltas, so
// they can run one per deployment or all in a row on one.
// ---------------------------------------------------------------------------------------

/// Goal: an upload above max_upload_bytes is refused with 413 whether its size is
/// declared (content-length) or only discovered while streaming, and writes nothing.
fn case_oversized_upload(d: &Deployment, rt: &Runtime) -> Result<()> {
    let mut agent = RawAgent::connect(d)?;
    let flow = tasked(d, &mut agent)?;
    let too_large = rejections(d, "too_large")?;
    let big = batch(&flow, USERS, 0, &rows(0, 1500));
    ensure!(
        pb_len(&big) > MAX_UPLOAD_BYTES,
        "the test body must exceed the limit"
    );

    let reply = agent.upload(&big)?;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert!(
        ack_message(&reply).contains("max_upload_bytes"),
        "{reply:?}"
    );
    // No content-length: the server can only find out by counting what arrives.
    let whole = packhunt::protocol::framing::encode(&big);
    let status = rt.block_on(raw_post(d.agent_port, agent.tls.clone(), None, whole, true))?;
    assert_eq!(status, 413);

    let results = flow_dir(d, &agent.client_id, &flow).join("results");
    assert!(
        !results.exists(),
        "a refused upload created {}",
        results.display()
    );
    assert_eq!(rejections(d, "too_large")? - too_large, 2);
    // The flow still takes a batch of the right size, as seq 0: nothing was counted.
    assert_ok(&agent.upload(&batch(&flow, USERS, 0, &rows(0, 5)))?, 1);
    assert_eq!(count_lines(&result_paths(d, &agent.client_id, &flow)[0]), 5);
    Ok(())
}

/// Goal: a batch with a bad line is refused with 400 naming the line, the three result
/// files stay byte-identical, and the next valid batch is appended as if nothing happened.
fn case_malformed_jsonl(d: &Deployment) -> Result<()> {
    let mut agent = RawAgent::connect(d)?;
    let flow = tasked(d, &mut agent)?;
    let paths = result_paths(d, &agent.client_id, &flow);
    let bad_jsonl = rejections(d, "bad_jsonl")?;

    let reply = agent.upload(&batch(&flow, USERS, 0, b"{\"user\":\"a\"}\n[1,2]\n"))?;
    assert_refused(&reply, 400, &["line 2", "not a JSON object"]);
    assert!(
        snapshot(&paths)
            .iter()
            .all(|f| f.as_ref().is_none_or(|b| b.is_empty())),
        "bad seq 0 wrote bytes"
    );

    let first = rows(0, 2);
    assert_ok(&agent.upload(&batch(&flow, USERS, 0, &first))?, 1);
    let committed = snapshot(&paths);
    assert!(committed
        .iter()
        .all(|f| f.as_ref().is_some_and(|b| !b.is_empty())));
    let bad: [(&[u8], &[&str]); 3] = [
        (
            b"{\"user\":\"c\"}\n\"not an object\"\n",
            &["line 2", "not a JSON object"],
        ),
        (
            b"{\"user\":\"c\"}\n{\"user\":\"d\"}",
            &["line 2", "newline"],
        ),
        (b"{\"user\":}\n", &["line 1", "invalid JSON"]),
    ];
    for (jsonl, words) in bad {
        assert_refused(&agent.upload(&batch(&flow, USERS, 1, jsonl))?, 400, words);
        assert!(
            snapshot(&paths) == committed,
            "a refused batch changed the result files"
        );
    }
    assert_eq!(rejections(d, "bad_jsonl")? - bad_jsonl, 4);

    let second = rows(2, 1);
    assert_ok(&agent.upload(&batch(&flow, USERS, 1, &second))?, 2);
    assert_eq!(std::fs::read(&paths[0])?, [first, second].concat());
    let (code, page) = d.api().get(&format!(
        "/api/v1/clients/{}/collections/{flow}/results?artifact={USERS}",
        agent.client_id
    ))?;
    assert_eq!(code, 200);
    assert_eq!(page["total_rows"], 3, "{page}");
    Ok(())
}

/// Goal: file paths with `..`, roots and drive prefixes land strictly inside the flow's
/// uploads/ (a name another upload took gets the upload number, never overwrites);
/// names that are not ids or artifact names are refused with 400.
fn case_path_escape(d: &Deployment) -> Result<()> {
    let mut agent = RawAgent::connect(d)?;
    let flow = common::uploads::upload_flow(d, &agent.client_id, Default::default())?;
    let flow_root = flow_dir(d, &agent.client_id, &flow);
    let uploads = flow_root.join("uploads");
    let unique = format!("packhunt-hostile-{}", &agent.client_id[2..]);
    let before: BTreeSet<PathBuf> = files_under(d.path()).into_iter().collect();
    let bad_name = rejections(d, "bad_name")?;

    let deep = format!("{}tmp/{unique}", "../".repeat(20));
    let deep_lands_at = format!("tmp/{unique}");
    let landed = [
        ("../../../../etc/evil", "etc/evil"),
        ("/../../x", "x"),
        (deep.as_str(), deep_lands_at.as_str()),
        ("C:\\..\\..\\..\\..\\win", "win"),
        ("/etc", "etc~4"),
        ("/x/y", "~5/x/y"),
    ];
    for (n, (agent_path, _)) in landed.iter().enumerate() {
        let chunk = file_chunk(&flow, n as u32, agent_path, agent_path.as_bytes());
        assert_ok(&agent.upload(&chunk)?, agent_path.len() as u64);
    }
    let refused = [
        file_chunk(&flow, 9, "../../..", b"nothing left"),
        file_chunk("../../../../etc", 9, "y", b"bad flow id"),
        batch(&flow, "../../x", 0, b"{}\n"),
        batch(&flow, "Linux.Sys.Users/../../../../x", 0, b"{}\n"),
    ];
    for upload in &refused {
        let reply = agent.upload(upload)?;
        assert_refused(&reply, 400, &[]);
        assert!(
            !ack_message(&reply).contains(d.path().to_str().unwrap()),
            "server path leaked: {reply:?}"
        );
    }
    assert_eq!(rejections(d, "bad_name")? - bad_name, 4);

    let after: BTreeSet<PathBuf> = files_under(d.path()).into_iter().collect();
    let created: BTreeSet<PathBuf> = after.difference(&before).cloned().collect();
    let mut expected: BTreeSet<PathBuf> = landed.iter().map(|(_, rel)| uploads.join(rel)).collect();
    expected.insert(flow_root.join("uploads.jsonl"));
    assert_eq!(
        created,
        expected,
        "exactly the uploads (and their index) were created, all under {}",
        uploads.display()
    );
    for (agent_path, rel) in &landed {
        assert_eq!(std::fs::read(uploads.join(rel))?, agent_path.as_bytes());
    }
    for path in &after {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if ["evil", "x", "win", unique.as_str()].contains(&name) {
            assert!(
                path.starts_with(&uploads),
                "{} is outside uploads/",
                path.display()
            );
        }
    }
    assert!(
        !Path::new("/tmp").join(&unique).exists(),
        "an upload escaped to /tmp"
    );
    Ok(())
}

/// Goal: a frame whose varint claims gigabytes (or 2^63) is refused at once from its
/// prefix with 413, malformed prefixes with 400, and the connection stays usable.
fn case_huge_frame_claims(d: &Deployment) -> Result<()> {
    let mut agent = RawAgent::connect(d)?;
    let flow = tasked(d, &mut agent)?;
    let (too_large, bad_frame) = (rejections(d, "too_large")?, rejections(d, "bad_frame")?);
    let two_pow_63: Vec<u8> = [[0x80u8; 9].as_slice(), &[0x01]].concat();
    let cases: [(Vec<u8>, u16, &str); 4] = [
        (
            vec![0xff, 0xff, 0xff, 0xff, 0x0f],
            413,
            "claims 4294967295 bytes",
        ),
        (two_pow_63, 413, "claims 9223372036854775808 bytes"),
        (vec![0x80; 12], 400, "not a valid varint"),
        (vec![100, 1, 2, 3], 400, "ends inside a frame"),
    ];
    for (body, status, words) in cases {
        let reply = agent.rt.block_on(agent.conn.post_raw(Bytes::from(body)))?;
        assert_refused(&reply, status, &[words]);
    }
    assert_eq!(rejections(d, "too_large")? - too_large, 2);
    assert_eq!(rejections(d, "bad_frame")? - bad_frame, 2);
    assert_ok(&agent.upload(&batch(&flow, USERS, 0, &rows(0, 1)))?, 1);
    Ok(())
}

/// Goal: agent B cannot write results, files or a status into agent A's flow (403,
/// nothing written anywhere); A then uploads the very same batch successfully.
fn case_foreign_flow(d: &Deployment) -> Result<()> {
    let mut a = RawAgent::connect(d)?;
    let flow = tasked(d, &mut a)?;
    let mut b = RawAgent::connect(d)?;
    let a_flow = flow_dir(d, &a.client_id, &flow);
    let a_status = std::fs::read(a_flow.join("status.json"))?;
    let not_your_flow = rejections(d, "not_your_flow")?;

    let stolen = batch(&flow, USERS, 0, &rows(0, 3));
    let finish = pb::Upload {
        kind: Some(Kind::Status(pb::FlowStatus {
            flow_id: flow.clone(),
            ..Default::default()
        })),
    };
    for upload in [
        &stolen,
        &file_chunk(&flow, 0, "/etc/passwd", b"root:x:0:0"),
        &finish,
    ] {
        assert_refused(&b.upload(upload)?, 403, &[flow.as_str()]);
    }
    assert_eq!(rejections(d, "not_your_flow")? - not_your_flow, 3);
    assert!(!a_flow.join("results").exists() && !a_flow.join("uploads").exists());
    assert_eq!(
        std::fs::read(a_flow.join("status.json"))?,
        a_status,
        "A's status.json changed"
    );
    assert!(
        !flow_dir(d, &b.client_id, &flow).exists(),
        "B's folder gained A's flow"
    );
    let (_, status) = d.api().get(&format!(
        "/api/v1/clients/{}/collections/{flow}",
        a.client_id
    ))?;
    assert_eq!(status["state"], "scheduled", "{status}");

    assert_ok(&a.upload(&stolen)?, 1);
    assert_eq!(count_lines(&result_paths(d, &a.client_id, &flow)[0]), 3);
    Ok(())
}

/// Goal: a resent batch is acknowledged DUPLICATE and not written again (even with other
/// bytes), a batch ahead of the expected one gets OUT_OF_ORDER with next_seq, and the
/// flow's final row count is what is on disk.
fn case_resent_batches(d: &Deployment) -> Result<()> {
    let mut agent = RawAgent::connect(d)?;
    let flow = tasked(d, &mut agent)?;
    let paths = result_paths(d, &agent.client_id, &flow);
    let first = rows(0, 3);
    assert_ok(&agent.upload(&batch(&flow, USERS, 0, &first))?, 1);
    let committed = snapshot(&paths);

    let again = agent.upload(&batch(&flow, USERS, 0, &first))?;
    assert_ack(&again, Status::Duplicate, 1);
    let other = agent.upload(&batch(&flow, USERS, 0, &rows(10, 7)))?;
    assert_ack(&other, Status::Duplicate, 1);
    let ahead = agent.upload(&batch(&flow, USERS, 5, &rows(20, 2)))?;
    assert_ack(&ahead, Status::OutOfOrder, 1);
    assert!(
        snapshot(&paths) == committed,
        "a duplicate or early batch was written"
    );
    assert_eq!(count_lines(&paths[0]), 3);

    assert_ok(&agent.upload(&batch(&flow, USERS, 1, &rows(3, 1)))?, 2);
    let artifacts = vec![pb::ArtifactRows {
        name: USERS.into(),
        rows: 4,
        batches: 2,
    }];
    let done = pb::FlowStatus {
        flow_id: flow.clone(),
        artifacts,
        ..Default::default()
    };
    assert_ok(
        &agent.upload(&pb::Upload {
            kind: Some(Kind::Status(done)),
        })?,
        0,
    );
    let statuses = d.wait_flows(
        &[(agent.client_id.clone(), flow.clone())],
        Duration::from_secs(10),
    )?;
    assert_eq!(statuses[0]["state"], "finished", "{}", statuses[0]);
    assert_eq!(statuses[0]["total_rows"], 4);
    assert_eq!(count_lines(&paths[0]), 4);
    // A closed flow still acknowledges resends, and takes no new batches.
    assert_ack(
        &agent.upload(&batch(&flow, USERS, 1, &rows(3, 1)))?,
        Status::Duplicate,
        2,
    );
    assert_refused(
        &agent.upload(&batch(&flow, USERS, 2, &rows(4, 1)))?,
        409,
        &["finished"],
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn oversized_uploads_get_413_and_write_nothing() -> Result<()> {
    let (d, rt) = (start()?, runtime());
    case_oversized_upload(&d, &rt)?;
    assert_still_serving(&d)
}

#[test]
fn malformed_jsonl_gets_400_naming_the_line_and_leaves_files_untouched() -> Result<()> {
    let d = start()?;
    case_malformed_jsonl(&d)?;
    assert_still_serving(&d)
}

#[test]
fn paths_and_names_cannot_leave_the_client_folder() -> Result<()> {
    let d = start()?;
    case_path_escape(&d)?;
    assert_still_serving(&d)
}

#[test]
fn frames_claiming_huge_lengths_are_refused_from_the_prefix() -> Result<()> {
    let d = start()?;
    case_huge_frame_claims(&d)?;
    assert_still_serving(&d)
}

#[test]
fn an_agent_cannot_write_into_another_clients_flow() -> Result<()> {
    let d = start()?;
    case_foreign_flow(&d)?;
    assert_still_serving(&d)
}

#[test]
fn resent_and_early_batches_are_acknowledged_and_written_once() -> Result<()> {
    let d = start()?;
    case_resent_batches(&d)?;
    assert_still_serving(&d)
}

/// Goal: one frontend that took every hostile case in a row still serves a fresh agent
/// and the API, and its /metrics shows each kind of refusal.
#[test]
fn frontend_still_serves_after_every_hostile_case() -> Result<()> {
    let (d, rt) = (start()?, runtime());
    case_oversized_upload(&d, &rt)?;
    case_malformed_jsonl(&d)?;
    case_path_escape(&d)?;
    case_huge_frame_claims(&d)?;
    case_foreign_flow(&d)?;
    case_resent_batches(&d)?;
    assert_still_serving(&d)?;
    for reason in [
        "too_large",
        "bad_jsonl",
        "not_your_flow",
        "bad_name",
        "bad_frame",
        "flow_closed",
    ] {
        assert!(
            rejections(&d, reason)? > 0,
            "no rejection counted for {reason}"
        );
    }
    Ok(())
}

/// Goal: bytes that are not TLS, and TLS without a client certificate, get a closed
/// connection and never an HTTP/2 answer; both are counted as failed handshakes.
#[test]
fn non_tls_and_certificateless_connections_are_refused() -> Result<()> {
    let (d, rt) = (start()?, runtime());
    let series = "packhunt_connection_refusals_total{reason=\"handshake_failed\"}";
    let failed = metric(&d, series)?;
    let port = d.agent_port;
    rt.block_on(async {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.write_all(b"GET /agent/v1/tasks HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\x16\x03")
            .await?;
        let answer = read_until_closed(&mut tcp).await.context("garbage bytes")?;
        // At most a TLS alert record (content type 21), never an HTTP answer.
        ensure!(
            answer.is_empty() || answer.starts_with(&[0x15, 0x03]),
            "server answered garbage with {answer:?}"
        );
        anyhow::Ok(())
    })?;
    let ca_pem = ca_pem(&d)?;
    rt.block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        for cert in packhunt::tls::pem::certificates(&ca_pem)? {
            roots.add(cert)?;
        }
        let mut config =
            rustls::ClientConfig::builder_with_provider(packhunt::tls::server::provider())
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
        // TLS 1.3: the client may finish before the server has judged its (absent)
        // certificate, so the refusal shows on the first read.
        let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
        else {
            return Ok(());
        };
        let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let answer = read_until_closed(&mut tls)
            .await
            .context("TLS without a client certificate")?;
        ensure!(
            answer.is_empty(),
            "server sent {} bytes of application data",
            answer.len()
        );
        Ok(())
    })?;
    wait_metric_at_least(&d, series, failed + 2)?;
    assert_still_serving(&d)
}

/// Goal: an upload whose body stops halfway does not hold its request open: it is
/// answered 408 at the request timeout, counted (reason timeout), and the agent's other
/// work goes on. (Silent TCP peers and idle connections: tests/timeouts.rs.)
#[test]
fn a_stalled_upload_body_is_answered_408_at_the_request_timeout() -> Result<()> {
    let d = Deployment::start_with(|text| set_keys(text, &[("request_timeout_ms", "1000")]))?;
    let rt = runtime();
    let mut agent = RawAgent::connect(&d)?;
    let flow = tasked(&d, &mut agent)?;
    let timeouts = rejections(&d, "timeout")?;
    // Declares 1000 bytes, sends 10, never ends the stream.
    let half = Bytes::from_static(&[0u8; 10]);
    let status = rt.block_on(raw_post(
        d.agent_port,
        agent.tls.clone(),
        Some(1000),
        half,
        false,
    ))?;
    assert_eq!(status, 408);
    assert_eq!(rejections(&d, "timeout")? - timeouts, 1);
    assert!(!flow_dir(&d, &agent.client_id, &flow)
        .join("results")
        .exists());
    assert_ok(&agent.upload(&batch(&flow, USERS, 0, &rows(0, 1)))?, 1);
    assert_still_serving(&d)
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A deployment whose uploads are capped at 64 KiB, so oversized bodies stay small.
fn start() -> Result<Deployment> {
    Deployment::start_with(|text| {
        set_keys(text, &[("max_upload_bytes", &MAX_UPLOAD_BYTES.to_string())])
    })
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds")
}

fn ca_pem(d: &Deployment) -> Result<String> {
    Ok(packhunt::config::ClientFile::load(&d.client_config())?
        .client
        .ca_certificate)
}

/// Schedules a Linux.Sys.Users collection for the agent and reads its Task; returns the flow id.
fn tasked(d: &Deployment, agent: &mut RawAgent) -> Result<String> {
    let flow = d.api().collect(&agent.client_id, &[USERS])?;
    let task = agent.expect_task(&flow)?;
    let artifacts: Vec<&str> = task.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(artifacts, [USERS]);
    Ok(flow)
}

/// POSTs `body` on a fresh HTTP/2 connection of the agent's identity, with `declared` as
/// content-length (none if None), ending the stream after it only if `end`; returns the
/// status.
async fn raw_post(
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    declared: Option<u64>,
    body: Bytes,
    end: bool,
) -> Result<u16> {
    let tls = common::agent_tls_connect(port, tls).await?;
    let (send, conn) = h2::client::handshake(tls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let uri = format!(
        "https://127.0.0.1:{port}{}",
        packhunt::protocol::UPLOAD_PATH
    );
    let mut request =
        http::Request::post(uri).header("content-type", packhunt::protocol::CONTENT_TYPE);
    if let Some(n) = declared {
        request = request.header("content-length", n);
    }
    let (response, mut stream) = send.ready().await?.send_request(request.body(())?, false)?;
    let chunks: Vec<Bytes> = body.chunks(16 * 1024).map(Bytes::copy_from_slice).collect();
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        // The server may refuse (and reset the stream) before the end; that is the point.
        if stream.send_data(chunk, end && i == last).is_err() {
            break;
        }
    }
    let response = tokio::time::timeout(Duration::from_secs(30), response)
        .await
        .context("no answer")??;
    Ok(response.status().as_u16())
}

/// Reads until the peer closes; returns what it sent before closing.
async fn read_until_closed(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> Result<Vec<u8>> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return received,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .context("connection was not closed")
}

fn batch(flow: &str, artifact: &str, seq: u64, jsonl: &[u8]) -> pb::Upload {
    let row_count = jsonl.iter().filter(|&&b| b == b'\n').count() as u32;
    let jsonl = Bytes::copy_from_slice(jsonl);
    let batch = pb::ResultBatch {
        flow_id: flow.into(),
        artifact: artifact.into(),
        seq,
        jsonl,
        row_count,
    };
    pb::Upload {
        kind: Some(Kind::Result(batch)),
    }
}

fn file_chunk(flow: &str, upload: u32, path: &str, data: &[u8]) -> pb::Upload {
    let data = Bytes::copy_from_slice(data);
    let chunk = pb::FileChunk {
        flow_id: flow.into(),
        path: path.into(),
        offset: 0,
        size: data.len() as u64,
        sha256: {
            use sha2::Digest;
            Bytes::from(sha2::Sha256::digest(&data).to_vec())
        },
        data,
        eof: true,
        upload,
        artifact: common::uploads::GLOB.into(),
    };
    pb::Upload {
        kind: Some(Kind::File(chunk)),
    }
}

/// `count` JSONL rows numbered from `first`, ~90 bytes each.
fn rows(first: usize, count: usize) -> Vec<u8> {
    let row = |i| {
        format!("{{\"user\":\"user{i}\",\"uid\":{i},\"home\":\"/home/user{i}\",\"shell\":\"/bin/bash\"}}\n")
    };
    (first..first + count)
        .map(row)
        .collect::<String>()
        .into_bytes()
}

fn pb_len(upload: &pb::Upload) -> u64 {
    packhunt::protocol::framing::encode(upload).len() as u64
}

fn ack_message(reply: &UploadReply) -> String {
    reply
        .ack
        .as_ref()
        .map(|a| a.message.clone())
        .unwrap_or_default()
}

fn assert_ack(reply: &UploadReply, status: Status, next_seq: u64) {
    assert_eq!(reply.status, 200, "{reply:?}");
    let ack = reply
        .ack
        .as_ref()
        .expect("an accepted upload carries an ack");
    assert_eq!(
        (ack.status, ack.next_seq),
        (status as i32, next_seq),
        "{reply:?}"
    );
}

fn assert_ok(reply: &UploadReply, next_seq: u64) {
    assert_ack(reply, Status::Ok, next_seq);
}

/// A refusal: the status code, a REJECTED ack (FLOW_CLOSED for a flow that has ended),
/// and a message containing `words`.
fn assert_refused(reply: &UploadReply, status: u16, words: &[&str]) {
    assert_eq!(reply.status, status, "{reply:?}");
    let ack = reply
        .ack
        .as_ref()
        .expect("a refusal carries an ack with a message");
    let closed = ack.message.contains("no more results are taken");
    let want = if closed {
        Status::FlowClosed
    } else {
        Status::Rejected
    };
    assert_eq!(ack.status, want as i32, "{reply:?}");
    assert!(!ack.message.is_empty(), "{reply:?}");
    for word in words {
        assert!(
            ack.message.contains(word),
            "ack message {:?} should mention {word:?}",
            ack.message
        );
    }
}

fn flow_dir(d: &Deployment, client: &str, flow: &str) -> PathBuf {
    d.datastore()
        .join("clients")
        .join(client)
        .join("collections")
        .join(flow)
}

/// `.jsonl`, `.index`, `.batches` of the flow's Linux.Sys.Users result set.
fn result_paths(d: &Deployment, client: &str, flow: &str) -> [PathBuf; 3] {
    let results = flow_dir(d, client, flow).join("results");
    ["jsonl", "index", "batches"].map(|ext| results.join(format!("{USERS}.{ext}")))
}

fn snapshot(paths: &[PathBuf]) -> Vec<Option<Vec<u8>>> {
    paths.iter().map(|p| std::fs::read(p).ok()).collect()
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(entry.path()),
                Ok(_) => out.push(entry.path()),
                Err(_) => {}
            }
        }
    }
    out
}

fn metric(d: &Deployment, series: &str) -> Result<u64> {
    d.metric(series)
}

fn rejections(d: &Deployment, reason: &str) -> Result<u64> {
    metric(
        d,
        &format!("packhunt_upload_rejections_total{{reason=\"{reason}\"}}"),
    )
}

/// The server counts a refused connection as it drops it, which may be just after the
/// client sees the close.
fn wait_metric_at_least(d: &Deployment, series: &str, want: u64) -> Result<()> {
    wait_until(
        &format!("{series} at least {want}"),
        Duration::from_secs(10),
        || metric(d, series),
        |value| *value >= want,
    )?;
    Ok(())
}

/// A fresh agent connects, is tasked, and uploads; the API lists it as connected.
fn assert_still_serving(d: &Deployment) -> Result<()> {
    let mut fresh = RawAgent::connect(d)?;
    let flow = tasked(d, &mut fresh)?;
    assert_ok(&fresh.upload(&batch(&flow, USERS, 0, &rows(0, 2)))?, 1);
    let listed = |clients: &serde_json::Value| {
        clients["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|c| c["client_id"] == fresh.client_id.as_str() && c["connected"] == true)
        })
    };
    wait_until(
        &format!("fresh agent {} listed as connected", fresh.client_id),
        Duration::from_secs(10),
        || {
            let (code, clients) = d.api().get("/api/v1/clients?limit=1000")?;
            ensure!(code == 200, "{clients}");
            Ok(clients)
        },
        listed,
    )?;
    Ok(())
}
