//! Goal: each limit that keeps a frontend stable, exceeded on purpose, gives the agent
//! the documented answer and shows in /metrics. Method: a frontend with tiny limits,
//! peers built in the test (raw HTTP/2 where a misbehaving agent is needed).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{set_keys, wait_until, Deployment, RawAgent};
use packhunt::protocol::pb;

/// Opens an upload whose body never finishes: it holds a concurrency permit.
async fn stalled_upload(
    port: u16,
    tls: Arc<rustls::ClientConfig>,
) -> anyhow::Result<(h2::client::SendRequest<Bytes>, h2::SendStream<Bytes>)> {
    let stream = common::agent_tls_connect(port, tls).await?;
    let (send, conn) = h2::client::handshake(stream).await?;
    tokio::spawn(conn);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "https://127.0.0.1:{port}{}",
            packhunt::protocol::UPLOAD_PATH
        ))
        .header("content-type", packhunt::protocol::CONTENT_TYPE)
        .body(())?;
    let (_response, mut body) = send.clone().ready().await?.send_request(request, false)?;
    body.send_data(Bytes::from_static(&[0u8; 16]), false)?;
    Ok((send, body))
}

#[test]
fn uploads_beyond_the_concurrency_limit_wait_then_get_503_with_retry_after() -> anyhow::Result<()> {
    let deployment = Deployment::start_with(|t| {
        set_keys(
            t,
            &[
                ("shards", "1"),
                ("concurrency", "1"),
                ("concurrency_wait_ms", "300"),
            ],
        );
    })?;
    assert_eq!(deployment.metric("packhunt_upload_concurrency_limit")?, 1);
    assert_eq!(
        deployment.metric("packhunt_upload_memory_bound_bytes")?,
        5 * 1024 * 1024
    );
    // Connected (and its ClientInfo sent) before the permit is taken.
    let mut agent = RawAgent::connect(&deployment)?;
    let tls = agent.tls.clone();
    // A runtime with its own thread keeps the stalled connection alive in the background.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let stalled = rt.block_on(stalled_upload(deployment.agent_port, tls))?;
    wait_until(
        "the stalled upload holds the only permit",
        Duration::from_secs(10),
        || deployment.metric("packhunt_uploads_in_flight"),
        |in_flight| *in_flight == 1,
    )?;

    // Any upload but an agent's facts takes a permit: a result batch finds none.
    let batch = pb::Upload {
        kind: Some(pb::upload::Kind::Result(pb::ResultBatch {
            flow_id: "F.0000000000000001".into(),
            artifact: "Generic.Client.Info".into(),
            jsonl: Bytes::from_static(b"{}\n"),
            row_count: 1,
            ..Default::default()
        })),
    };
    let started = std::time::Instant::now();
    let reply = agent.upload(&batch)?;
    assert_eq!(reply.status, 503, "no permit within the wait");
    // A lower bound only: the configured 300 ms wait was honoured (less a little for
    // timer granularity). How long a refusal takes under load is a bench's business.
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "it waited for a permit first"
    );
    let retry = reply.retry_after.expect("a Retry-After comes with the 503");
    assert!((2..=10).contains(&retry.as_secs()), "{retry:?}");
    assert_eq!(
        deployment.metric("packhunt_upload_rejections_total{reason=\"concurrency\"}")?,
        1
    );

    // A real agent connecting now sends its facts on their own path, without a permit:
    // it is listed while the only permit is still held.
    let _agent = common::start_agent(&deployment)?;
    let listed = || -> anyhow::Result<u64> {
        Ok(deployment.api().get("/api/v1/clients")?.1["total"]
            .as_u64()
            .unwrap_or(0))
    };
    wait_until(
        "the new agent listed while the permit is held",
        Duration::from_secs(20),
        listed,
        |n| *n >= 2,
    )?;
    assert_eq!(
        deployment.metric("packhunt_upload_rejections_total{reason=\"concurrency\"}")?,
        1,
        "its facts were not refused"
    );
    assert_eq!(
        deployment.metric("packhunt_agent_facts_total{outcome=\"refused\"}")?,
        0
    );

    // The permit comes back when the stalled upload goes away.
    drop(stalled);
    drop(rt);
    wait_until(
        "the stalled upload's permit back",
        Duration::from_secs(10),
        || deployment.metric("packhunt_uploads_in_flight"),
        |in_flight| *in_flight == 0,
    )?;
    let info = pb::Upload {
        kind: Some(pb::upload::Kind::Info(pb::ClientInfo {
            hostname: "h".into(),
            os: "linux".into(),
            version: "t".into(),
        })),
    };
    assert_eq!(agent.upload(&info)?.status, 200);
    assert_eq!(deployment.metric("packhunt_uploads_in_flight")?, 0);
    assert_eq!(deployment.metric("packhunt_upload_bytes_in_flight")?, 0);
    Ok(())
}

#[test]
fn connections_above_the_accept_rate_are_closed_before_tls_and_the_fleet_still_converges(
) -> anyhow::Result<()> {
    let deployment = Deployment::start_with(|t| {
        set_keys(t, &[("shards", "1"), ("max_connections_per_second", "20")])
    })?;
    assert_eq!(
        deployment.metric("packhunt_limit{name=\"max_connections_per_second\"}")?,
        20,
        "the limit shows in /metrics"
    );
    let tls = deployment.fresh_agent_tls()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // 60 handshakes at once against a bucket of 20: the excess fails in the handshake.
    let outcomes = rt.block_on(async {
        let attempts = (0..60).map(|_| {
            let tls = tls.clone();
            common::agent_tls_connect(deployment.agent_port, tls)
        });
        futures::future::join_all(attempts).await
    });
    // The full bucket's 20 are admitted and the excess is refused: how many more the
    // refill lets through while the 60 race depends on the machine's speed, so only the
    // bounds and the exact accounting are checked (the accept rate under a storm is the
    // `storm` target of benches/targets.sh).
    let completed = outcomes.iter().filter(|o| o.is_ok()).count();
    assert!(
        (20..60).contains(&completed),
        "the burst of 20 is admitted, not all 60: {completed}"
    );
    let refused =
        deployment.metric("packhunt_connection_refusals_total{reason=\"rate_limited\"}")?;
    assert_eq!(
        refused as usize,
        60 - completed,
        "every other connection was refused and counted"
    );
    // The server finishes a TLS 1.3 handshake after the client does: it catches up.
    let handshakes = wait_until(
        "the server's side of every admitted handshake done",
        Duration::from_secs(10),
        || deployment.metric("packhunt_handshakes_completed_total"),
        |n| *n as usize >= completed,
    )?;
    assert_eq!(
        handshakes as usize, completed,
        "no TLS work for the refused"
    );
    drop(outcomes);

    // Real agents that are refused back off and come back: all 80 connect, at the rate.
    let report = deployment.path().join("report.json");
    let mut loadgen = common::spawn_loadgen(&deployment.client_config(), 80, 60, &report, &[])?;
    deployment.wait_connected(80, Duration::from_secs(45))?;
    assert!(
        deployment.metric("packhunt_connection_refusals_total{reason=\"rate_limited\"}")? > refused,
        "the fleet was shed on the way"
    );
    let _ = loadgen.0.kill();
    Ok(())
}
