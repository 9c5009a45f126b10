//! Goal: the handshake and idle timeouts close connections that hold a slot without
//! doing anything, count them in /metrics, and leave working agents alone. Method: a
//! frontend with short timeouts; raw TCP / TLS + HTTP/2 peers built in the test; a
//! real agent holding its task stream alongside.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{set_keys, wait_until, Deployment};
use tokio::io::AsyncReadExt;

fn short_timeouts(text: &mut String) {
    set_keys(
        text,
        &[("handshake_timeout_ms", "300"), ("idle_timeout_ms", "500")],
    );
}

#[test]
fn silent_tcp_peer_is_closed_after_the_handshake_timeout() -> anyhow::Result<()> {
    let deployment = Deployment::start_with(short_timeouts)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", deployment.agent_port)).await?;
        let mut buf = [0u8; 16];
        // 10 s only stops a hung test; the metric below says which timeout closed it.
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await??;
        anyhow::ensure!(n == 0, "server closes without sending anything");
        anyhow::Ok(())
    })?;
    // Closed by the handshake timeout, not by chance: counted under its reason.
    assert_eq!(
        deployment.metric("packhunt_connection_refusals_total{reason=\"handshake_timeout\"}")?,
        1
    );
    Ok(())
}

#[test]
fn connection_without_requests_is_closed_when_idle_but_agents_stay() -> anyhow::Result<()> {
    let deployment = Deployment::start_with(short_timeouts)?;
    let _agent = common::start_agent(&deployment)?;
    deployment.wait_connected(1, Duration::from_secs(20))?;
    let tls = deployment.fresh_agent_tls()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let closed_after = rt.block_on(async {
        let stream = common::agent_tls_connect(deployment.agent_port, Arc::clone(&tls)).await?;
        let (_send, conn) = h2::client::handshake(stream).await?;
        let started = Instant::now();
        // The connection future resolves when the server says GOAWAY and closes; 10 s
        // only stops a hung test.
        let _ = tokio::time::timeout(Duration::from_secs(10), conn).await?;
        Ok::<_, anyhow::Error>(started.elapsed())
    })?;
    // A lower bound only: the configured 500 ms was honoured (less timer granularity).
    assert!(
        closed_after >= Duration::from_millis(400),
        "not closed before the idle timeout: {closed_after:?}"
    );
    assert_eq!(
        deployment.metric("packhunt_connection_refusals_total{reason=\"idle_timeout\"}")?,
        1
    );
    // The real agent holds its task stream open, so it is still connected after more
    // than another idle timeout: that time passing is what is tested, so it is a sleep.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        deployment.wait_connected(1, Duration::from_secs(1))?.len(),
        1
    );
    assert_eq!(
        deployment.metric("packhunt_connection_refusals_total{reason=\"idle_timeout\"}")?,
        1
    );
    Ok(())
}

/// With one handshake permit per shard, a silent TCP peer holds the only permit: the
/// next peer's TLS handshake gets no answer until the first one leaves, then completes.
#[test]
fn handshakes_beyond_the_permits_wait_in_the_accept_queue() -> anyhow::Result<()> {
    let deployment = Deployment::start_with(|text| {
        set_keys(
            text,
            &[("shards", "1"), ("handshakes_in_flight_per_shard", "1")],
        )
    })?;
    let tls = deployment.fresh_agent_tls()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let port = deployment.agent_port;
    let silent = std::net::TcpStream::connect(("127.0.0.1", port))?;
    // The shard accepts the silent peer (and so spends its only permit) first.
    wait_until(
        "the silent peer accepted",
        Duration::from_secs(10),
        || deployment.metric("packhunt_connections_accepted_total"),
        |accepted| *accepted >= 1,
    )?;
    rt.block_on(async {
        let connect_tls = |tls| common::agent_tls_connect(port, tls);
        // The window under test: no handshake may complete in it while the permit is held.
        let waiting =
            tokio::time::timeout(Duration::from_millis(1500), connect_tls(tls.clone())).await;
        anyhow::ensure!(
            waiting.is_err(),
            "a handshake completed while the only permit was held"
        );
        drop(silent);
        let done = tokio::time::timeout(Duration::from_secs(10), connect_tls(tls.clone())).await;
        anyhow::ensure!(
            matches!(done, Ok(Ok(_))),
            "handshake after the permit came back: {:?}",
            done.map(|r| r.map(|_| ()))
        );
        Ok(())
    })?;
    // The client is through once it has the server's Finished; the server counts the
    // handshake once it has read the client's, a moment later.
    wait_until(
        "the handshake counted",
        Duration::from_secs(10),
        || deployment.metric("packhunt_handshakes_completed_total"),
        |completed| *completed >= 1,
    )?;
    Ok(())
}

/// A peer that closes its connection before saying anything (an agent that gave up
/// waiting in the accept queue) is counted as gone, not as a failed handshake.
#[test]
fn a_peer_that_leaves_before_the_handshake_is_counted_as_gone() -> anyhow::Result<()> {
    let deployment = Deployment::start()?;
    for _ in 0..3 {
        let tcp = std::net::TcpStream::connect(("127.0.0.1", deployment.agent_port))?;
        drop(tcp);
    }
    wait_until(
        "three departures counted",
        Duration::from_secs(10),
        || deployment.metric("packhunt_connection_refusals_total{reason=\"peer_gone\"}"),
        |gone| *gone >= 3,
    )?;
    assert_eq!(
        deployment.metric("packhunt_connection_refusals_total{reason=\"handshake_failed\"}")?,
        0
    );
    Ok(())
}
