//! Goal: nothing an unauthenticated peer of the agent port does (anyone may make a key
//! pair and connect as an agent) can stall real agents or grow the server without bound.
//! Each case attacks one limit (docs/security/agent-port.md) and checks that the attack
//! is ended and counted in /metrics while a real agent keeps working.
//! Method: a generated deployment and a real frontend on loopback; attackers are built
//! in the test from h2's client, or raw HTTP/2 frames, over rustls on real TCP sockets
//! (tests/common/attacker.rs); the real agent is `packhunt client` (common::start_agent)
//! or the comms client (RawAgent).

mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;

use common::attacker::{self, frame, Outcomes, RawFrames, ENHANCE_YOUR_CALM};
use common::{set_keys, wait_until, Deployment, RawAgent};

fn runtime() -> Result<tokio::runtime::Runtime> {
    // One worker of its own: the attackers' connections keep running between calls.
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

fn metric(d: &Deployment, series: &str) -> Result<u64> {
    d.metric(series)
}

/// A real agent collects and its flow finishes; returns how long that took.
fn real_collection(d: &Deployment, client: &str) -> Result<Duration> {
    let started = Instant::now();
    let flow = d.api().collect(client, &["Generic.Client.Info"])?;
    let done = d.wait_flows(&[(client.to_string(), flow)], Duration::from_secs(60))?;
    ensure!(
        done[0]["state"] == "finished",
        "collection ended {}",
        done[0]
    );
    Ok(started.elapsed())
}

// ---------------------------------------------------------------------------------------
// 1. Upload permits are held only while a body flows.
// ---------------------------------------------------------------------------------------

/// Four self-made agent connections each open 16 upload streams that stall (headers
/// only, or headers and one DATA byte); a real agent's collection meanwhile finishes in
/// well under the 60 s request timeout that every stalled permit used to wait out (the
/// issue measured 56 s), and every stalled stream is ended and counted.
fn stalled_uploads_do_not_delay_a_real_agent(one_byte: bool) -> Result<()> {
    let d = Deployment::start()?;
    let rt = runtime()?;
    let outcomes = Outcomes::default();
    let mut held = Vec::new();
    for _ in 0..4 {
        let tls = d.fresh_agent_tls()?;
        let opened = rt.block_on(attacker::stalled_uploads(
            d.agent_port,
            tls,
            16,
            one_byte,
            &outcomes,
        ))?;
        held.push(opened);
    }
    // The streams reached the server before the real agent starts.
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });
    let _agent = common::start_agent(&d)?;
    let client = d.wait_connected(1, Duration::from_secs(20))?.remove(0);
    let took = real_collection(&d, &client)?;
    // A generous bound: what is proven gone is a stall of tens of seconds.
    assert!(took < Duration::from_secs(10), "collection took {took:?}");
    // Every stalled stream is ended by the server (a 408 at the body deadline, or a 503
    // when its connection's upload slots stayed taken) and counted.
    wait_until(
        "every stalled stream ended",
        Duration::from_secs(40),
        || Ok(outcomes.ended()),
        |n| *n >= 64,
    )?;
    for status in outcomes.statuses() {
        assert!(
            [0, 408, 503].contains(&status),
            "stalled upload answered {status}"
        );
    }
    let before_body = metric(
        &d,
        "packhunt_agentport_uploads_stalled_total{phase=\"before_body\"}",
    )?;
    let in_body = metric(
        &d,
        "packhunt_agentport_uploads_stalled_total{phase=\"in_body\"}",
    )?;
    let busy = metric(&d, "packhunt_agentport_uploads_connection_busy_total")?;
    if one_byte {
        assert!(in_body >= 1, "in-body stalls counted");
        assert_eq!(in_body + busy, 64, "each stall counted once");
    } else {
        assert_eq!(before_body, 64, "every headers-only stream counted");
        assert_eq!(busy, 0, "headers alone never took a slot");
    }
    drop(held);
    Ok(())
}

#[test]
fn headers_without_a_body_hold_no_upload_permit() -> Result<()> {
    stalled_uploads_do_not_delay_a_real_agent(false)
}

#[test]
fn a_body_that_stalls_after_one_byte_holds_its_permit_for_seconds_only() -> Result<()> {
    stalled_uploads_do_not_delay_a_real_agent(true)
}

// ---------------------------------------------------------------------------------------
// 2. A task-stream request with a body is refused.
// ---------------------------------------------------------------------------------------

#[test]
fn a_task_stream_request_with_a_body_is_refused() -> Result<()> {
    let d = Deployment::start()?;
    let rt = runtime()?;
    let tls = d.fresh_agent_tls()?;
    let port = d.agent_port;
    let status = rt.block_on(async move {
        let mut send = attacker::h2_client(port, tls).await?;
        let request = http::Request::builder()
            .method("GET")
            .uri(format!(
                "https://127.0.0.1:{port}{}",
                packhunt::protocol::TASKS_PATH
            ))
            .body(())?;
        let (response, mut body) = send.send_request(request, false)?;
        body.send_data(Bytes::from(vec![0u8; 32 * 1024]), false)?;
        let response = tokio::time::timeout(Duration::from_secs(10), response).await??;
        anyhow::Ok(response.status().as_u16())
    })?;
    assert_eq!(status, 400);
    assert_eq!(
        metric(&d, "packhunt_agentport_task_stream_bodies_refused_total")?,
        1
    );
    // Refused before it registered: no agent shows as connected.
    let (_, clients) = d.api().get("/api/v1/clients?connected=true")?;
    assert_eq!(clients["items"].as_array().map(Vec::len), Some(0));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. A short ClientHello deadline.
// ---------------------------------------------------------------------------------------

/// A peer that sends nothing and one that sends a ClientHello's first bytes only are
/// closed at the ClientHello deadline (3 s), not the 10 s handshake deadline, and counted.
#[test]
fn silent_and_partial_client_hellos_are_closed_at_the_hello_deadline() -> Result<()> {
    let d = Deployment::start()?;
    let rt = runtime()?;
    let port = d.agent_port;
    let closed = rt.block_on(async move {
        let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut partial = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        // A handshake record header announcing 512 bytes, and 10 of them.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        partial.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await?;
        partial.write_all(&[1u8; 10]).await?;
        let started = Instant::now();
        let mut buf = [0u8; 16];
        // Below the 10 s handshake deadline: closing by then is the ClientHello deadline.
        let limit = Duration::from_secs(9);
        let n = tokio::time::timeout(limit, silent.read(&mut buf)).await??;
        ensure!(n == 0, "silent peer: closed without an answer");
        let n = tokio::time::timeout(limit, partial.read(&mut buf)).await??;
        ensure!(n == 0, "partial peer: closed without an answer");
        anyhow::Ok(started.elapsed())
    })?;
    assert!(closed < Duration::from_secs(9), "closed after {closed:?}");
    assert_eq!(
        metric(&d, "packhunt_agentport_client_hello_timeouts_total")?,
        2
    );
    assert_eq!(
        metric(
            &d,
            "packhunt_connection_refusals_total{reason=\"handshake_timeout\"}"
        )?,
        0
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 4. Handshake permits: per source address, and released once TLS is done.
// ---------------------------------------------------------------------------------------

/// One shard with 40 handshake permits; 127.0.0.1 opens 100 silent connections. Only 32
/// (HANDSHAKES_IN_FLIGHT_PER_SOURCE_COUNT) are held, the rest closed at accept, so
/// 127.0.0.2 connects at once, before any of the held ones reached its ClientHello
/// deadline (without the cap it would wait for that deadline to free a permit).
#[test]
fn one_source_with_many_slow_handshakes_cannot_keep_another_out() -> Result<()> {
    let d = Deployment::start_with(|text| {
        set_keys(
            text,
            &[("shards", "1"), ("handshakes_in_flight_per_shard", "40")],
        )
    })?;
    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(std::net::TcpStream::connect(("127.0.0.1", d.agent_port))?);
    }
    wait_until(
        "the source's connections beyond its cap refused",
        Duration::from_secs(10),
        || metric(&d, "packhunt_agentport_source_handshakes_refused_total"),
        |n| *n >= 68,
    )?;
    let rt = runtime()?;
    let tls = d.fresh_agent_tls()?;
    let port = d.agent_port;
    rt.block_on(async move {
        let source = "127.0.0.2".parse()?;
        let stream = tokio::time::timeout(
            Duration::from_secs(10),
            attacker::tls_connect_from(source, port, tls),
        )
        .await
        .context("second source: TLS handshake")??;
        let (_send, conn) = h2::client::handshake(stream).await?;
        tokio::spawn(conn);
        anyhow::Ok(())
    })?;
    let hello_timeouts = metric(&d, "packhunt_agentport_client_hello_timeouts_total")?;
    if started.elapsed() < Duration::from_secs(3) {
        // Still inside the held connections' ClientHello deadline: no permit was freed
        // by a timeout, so the cap is what let the second source in.
        assert_eq!(hello_timeouts, 0);
    }
    assert_eq!(
        metric(&d, "packhunt_agentport_source_handshakes_refused_total")?,
        68
    );
    // The client is done with TLS once it has the server's Finished; the server counts
    // the handshake when the client's Finished is in, a moment later.
    wait_until(
        "the second source's handshake counted",
        Duration::from_secs(10),
        || metric(&d, "packhunt_handshakes_completed_total"),
        |n| *n >= 1,
    )?;
    drop(silent);
    Ok(())
}

/// The handshake permit is returned once TLS is done: with one permit, a TLS peer that
/// never starts HTTP/2 does not keep the next agent waiting.
#[test]
fn the_handshake_permit_comes_back_once_tls_is_done() -> Result<()> {
    let d = Deployment::start_with(|text| {
        set_keys(
            text,
            &[("shards", "1"), ("handshakes_in_flight_per_shard", "1")],
        )
    })?;
    let rt = runtime()?;
    let port = d.agent_port;
    let (first, second) = (d.fresh_agent_tls()?, d.fresh_agent_tls()?);
    rt.block_on(async move {
        // TLS done, then silence: no HTTP/2 preface.
        let _idle = common::agent_tls_connect(port, first).await?;
        let next = tokio::time::timeout(
            Duration::from_secs(5),
            common::agent_tls_connect(port, second),
        )
        .await;
        ensure!(
            matches!(next, Ok(Ok(_))),
            "second handshake waited on the first connection's HTTP/2 setup"
        );
        anyhow::Ok(())
    })?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 5. Task frames respect HTTP/2 flow control.
// ---------------------------------------------------------------------------------------

/// An agent that stops reading its task stream while collections pile up for it: the
/// server queues at most MAX_TASK_STREAM_QUEUED_BYTES (1 MiB) for it, then ends the
/// stream (counted); the tasks wait on disk and reach the agent when it reconnects.
#[test]
fn an_agent_that_stops_reading_cannot_grow_server_memory() -> Result<()> {
    const LIMIT_BYTES: u64 = 1024 * 1024;
    let d = Deployment::start()?;
    let agent = RawAgent::connect(&d)?;
    let client = agent.client_id.clone();
    // ~96 KiB per task: 32 globs of 3,000 bytes each.
    let globs: Vec<String> = (0..32)
        .map(|i| format!("/{i}{}", "a".repeat(3000)))
        .collect();
    let body = serde_json::json!({
        "artifacts": ["Generic.Collectors.File"],
        "parameters": {"Generic.Collectors.File": {"globs": globs.join("\n")}},
    });
    let api = d.api();
    let mut flows = Vec::new();
    let mut most_queued = 0;
    for _ in 0..40 {
        let (status, answer) = api.post(&format!("/api/v1/clients/{client}/collections"), &body)?;
        ensure!(status == 200, "collection refused: {status} {answer}");
        flows.push(answer["flow_id"].as_str().context("flow_id")?.to_string());
        most_queued = most_queued.max(metric(&d, "packhunt_agentport_task_bytes_queued")?);
    }
    wait_until(
        "the unread task stream ended",
        Duration::from_secs(30),
        || metric(&d, "packhunt_agentport_task_streams_stalled_total"),
        |n| *n >= 1,
    )?;
    // At most the limit plus the frame that crossed it.
    assert!(
        most_queued <= LIMIT_BYTES + 128 * 1024,
        "queued {most_queued} bytes"
    );
    assert_eq!(metric(&d, "packhunt_agentport_task_bytes_queued")?, 0);
    // The tasks were durable on disk: the same agent, connecting again, gets them.
    let identity = agent.identity.clone();
    drop(agent);
    // Without facts: an upload would wait behind the unread tasks in the test client's
    // connection window (a real agent reads its stream on a task of its own).
    let mut again = RawAgent::connect_without_facts(&d.client_config(), identity)?;
    let mut seen = std::collections::HashSet::new();
    while seen.len() < flows.len() {
        match again.next_message()? {
            packhunt::protocol::pb::server_message::Kind::Task(task) => {
                seen.insert(task.flow_id);
            }
            _ => continue,
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 6. Frame floods.
// ---------------------------------------------------------------------------------------

/// Frames of the flood and the metric series that must count it.
fn flood(kind: &str) -> (Vec<u8>, Vec<&'static str>) {
    let mut bytes = Vec::new();
    let block = attacker::get_root_block();
    match kind {
        "ping" => {
            for i in 0..5000u64 {
                bytes.extend(attacker::encode_frame(frame::PING, 0, 0, &i.to_be_bytes()));
            }
            (
                bytes,
                vec!["packhunt_agentport_floods_total{frame=\"ping\"}"],
            )
        }
        "settings" => {
            for _ in 0..5000 {
                bytes.extend(attacker::encode_frame(frame::SETTINGS, 0, 0, &[]));
            }
            (
                bytes,
                vec!["packhunt_agentport_floods_total{frame=\"settings\"}"],
            )
        }
        "rapid_reset" => {
            for i in 0..5000u32 {
                let stream = 2 * i + 1;
                bytes.extend(attacker::encode_frame(
                    frame::HEADERS,
                    frame::END_HEADERS,
                    stream,
                    &block,
                ));
                // CANCEL
                bytes.extend(attacker::encode_frame(
                    frame::RST_STREAM,
                    0,
                    stream,
                    &[0, 0, 0, 8],
                ));
            }
            (
                bytes,
                vec![
                    "packhunt_agentport_floods_total{frame=\"rst_stream\"}",
                    "packhunt_agentport_h2_goaways_total{reason=\"enhance_your_calm\"}",
                ],
            )
        }
        "continuation" => {
            // A header block that never ends: 16 KiB literal headers, one per frame.
            bytes.extend(attacker::encode_frame(frame::HEADERS, 0, 1, &block));
            let mut literal = vec![0x40, 0x7f, 0x00];
            literal.extend(std::iter::repeat_n(b'x', 127));
            literal.extend([0x7f, 0x81, 0x7f]);
            literal.extend(std::iter::repeat_n(b'y', 16_000));
            for _ in 0..2000 {
                bytes.extend(attacker::encode_frame(frame::CONTINUATION, 0, 1, &literal));
            }
            (
                bytes,
                vec![
                    "packhunt_agentport_floods_total{frame=\"continuation\"}",
                    "packhunt_agentport_h2_goaways_total{reason=\"enhance_your_calm\"}",
                    "packhunt_agentport_h2_goaways_total{reason=\"protocol_error\"}",
                    "packhunt_agentport_h2_goaways_total{reason=\"other\"}",
                ],
            )
        }
        "empty_data" => {
            bytes.extend(attacker::encode_frame(
                frame::HEADERS,
                frame::END_HEADERS,
                1,
                &block,
            ));
            for _ in 0..10_000 {
                bytes.extend(attacker::encode_frame(frame::DATA, 0, 1, &[]));
            }
            (
                bytes,
                vec![
                    "packhunt_agentport_floods_total{frame=\"small\"}",
                    "packhunt_agentport_h2_goaways_total{reason=\"enhance_your_calm\"}",
                ],
            )
        }
        other => panic!("no flood {other}"),
    }
}

fn counted(d: &Deployment, series: &[&str]) -> Result<u64> {
    series.iter().map(|s| metric(d, s)).sum()
}

/// Each flood from a raw client ends with GOAWAY (ENHANCE_YOUR_CALM, or a protocol
/// error for a header block h2 refuses) and a counter bumped; a real agent connected all
/// along keeps working.
#[test]
fn frame_floods_end_the_connection_and_real_agents_keep_working() -> Result<()> {
    let d = Deployment::start()?;
    let _agent = common::start_agent(&d)?;
    let client = d.wait_connected(1, Duration::from_secs(20))?.remove(0);
    let rt = runtime()?;
    for kind in [
        "ping",
        "settings",
        "rapid_reset",
        "continuation",
        "empty_data",
    ] {
        let (frames, series) = flood(kind);
        let before = counted(&d, &series)?;
        let tls = d.fresh_agent_tls()?;
        let port = d.agent_port;
        let code = rt.block_on(async move {
            let mut raw = RawFrames::connect(port, tls).await?;
            raw.flood(&frames).await;
            raw.goaway(Duration::from_secs(10)).await
        })?;
        if kind == "continuation" {
            assert_ne!(code, u32::MAX, "{kind}: GOAWAY before the close");
        } else {
            assert_eq!(code, ENHANCE_YOUR_CALM, "{kind}: GOAWAY ENHANCE_YOUR_CALM");
        }
        wait_until(
            &format!("{kind} flood counted"),
            Duration::from_secs(10),
            || counted(&d, &series),
            |n| *n > before,
        )?;
        d.wait_connected(1, Duration::from_secs(5))
            .with_context(|| format!("real agent still connected after the {kind} flood"))?;
    }
    let took = real_collection(&d, &client)?;
    assert!(took < Duration::from_secs(10), "collection took {took:?}");
    Ok(())
}
