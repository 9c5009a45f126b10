//! Goal: an analyst scripts the gRPC API with a client certificate from `packhunt config
//! api-client`, using stubs grpc_tools generates from proto/api.proto, as
//! docs/security/grpc-api.md shows: lists clients, collects from a real agent and streams
//! the results, sets the event table and watches the agent's events, creates, starts and
//! stops a hunt and streams its results. What the JSON API refuses, the gRPC API refuses
//! with the matching code (a reader's collection: PermissionDenied; a missing collection:
//! NotFound); a connection without a client certificate, with one from another CA or an
//! expired one is refused in the TLS handshake, and a certificate naming an unknown role
//! is refused on its first call. Connections beyond the cap are closed at once.
//! Method: a real master and `packhunt client` agent on loopback; the real Python client
//! (tests/python/grpc_client.py) prints JSON this test asserts on; refusals are also
//! read from the master's /metrics. Skipped (counted) where python3 has no grpc modules.

mod common;

use std::time::{Duration, SystemTime};

use anyhow::{ensure, Context, Result};
use common::grpc::{api_client, api_port, PythonGrpc};
use common::{start_agent, wait_until, Deployment};
use packhunt::config::api_client::{load_api_client_file, sign_api_client_certificate};
use packhunt::limits::MAX_GRPC_CONNECTIONS_COUNT;
use serde_json::Value;

const STATS: &str = "Generic.Client.Stats";

#[test]
fn python_client_runs_an_analysts_scenario() -> Result<()> {
    let Some(python) = PythonGrpc::get("grpc_api::python_client_runs_an_analysts_scenario")? else {
        return Ok(());
    };
    let deployment = Deployment::start()?;
    let _agent = start_agent(&deployment)?;
    let admin = api_client(&deployment, "analyst", "administrator")?;
    let file = load_api_client_file(&admin)?;
    assert_eq!(
        file.api_url,
        format!("127.0.0.1:{}", api_port(&deployment)?)
    );

    let out = python.run(&admin, "scenario")?;
    let client_id = out["client"]["client_id"].as_str().context("client id")?;
    assert!(client_id.starts_with("C."), "{out}");
    assert_eq!(out["client"]["connected"], true, "{out}");
    assert_eq!(
        out["get_client_hostname"], out["client"]["hostname"],
        "{out}"
    );
    let artifacts: Vec<&str> = out["artifacts"]
        .as_array()
        .context("artifacts")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(artifacts.contains(&"Generic.Client.Info"), "{out}");
    assert!(out["event_table_version"].as_u64() >= Some(1), "{out}");
    assert_eq!(
        out["event_table_read"],
        serde_json::json!([[STATS, {"period_s": "1"}]]),
        "{out}"
    );

    // The collection ran on the agent and its rows streamed back, in order.
    assert_eq!(out["collection"]["state"], "finished", "{out}");
    let rows = out["result_rows"].as_array().context("rows")?;
    ensure!(!rows.is_empty(), "no result rows: {out}");
    assert_eq!(
        out["collection"]["total_rows"].as_u64(),
        Some(rows.len() as u64),
        "{out}"
    );
    assert!(rows.iter().all(Value::is_object), "{out}");
    let indexes: Vec<u64> = (0..rows.len() as u64).collect();
    assert_eq!(out["result_indexes"], serde_json::json!(indexes), "{out}");
    assert!(
        out["collections_listed"]
            .as_array()
            .is_some_and(|l| l.contains(&out["flow_id"])),
        "{out}"
    );

    // The agent's events, as it sends them with the table the script set.
    let events = out["events"].as_array().context("events")?;
    ensure!(events.len() >= 2, "events: {out}");
    for event in events {
        assert_eq!(event["client_id"], client_id, "{out}");
        assert_eq!(event["artifact"], STATS, "{out}");
        assert!(event["row"].is_object(), "{out}");
    }

    // The hunt: created paused, started, run on the agent, its rows streamed, stopped.
    assert_eq!(out["hunt_state_created"], "paused", "{out}");
    assert_eq!(out["hunt_started"], "running", "{out}");
    let hunt_rows = out["hunt_rows"].as_array().context("hunt rows")?;
    ensure!(!hunt_rows.is_empty(), "no hunt rows: {out}");
    assert!(
        hunt_rows.iter().all(|r| r["client_id"] == client_id),
        "{out}"
    );
    assert!(
        out["hunts_listed"]
            .as_array()
            .is_some_and(|l| l.contains(&out["hunt_id"])),
        "{out}"
    );
    assert_eq!(out["hunt_stopped"], "stopped", "{out}");
    assert_eq!(out["missing_collection"], "NOT_FOUND", "{out}");
    assert_eq!(out["bad_id"], "INVALID_ARGUMENT", "{out}");

    // The calls went through the JSON API's routes: the collection is there too.
    let flow_id = out["flow_id"].as_str().context("flow id")?;
    let (status, doc) = deployment.api().get(&format!(
        "/api/v1/clients/{client_id}/collections/{flow_id}"
    ))?;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["state"], "finished");
    // The script cancelled its watch: the watcher on the master ends with it (not at its
    // next event), and every call let go of its in-flight slot.
    wait_until(
        "the watch and every call ended on the master",
        Duration::from_secs(30),
        || {
            Ok((
                deployment.metric("packhunt_events_watchers")?,
                deployment.metric("packhunt_grpc_calls_in_flight")?,
            ))
        },
        |(watchers, in_flight)| *watchers == 0 && *in_flight == 0,
    )?;
    assert!(deployment.metric("packhunt_grpc_calls_total{code=\"ok\"}")? >= 10);
    assert!(deployment.metric("packhunt_grpc_calls_total{code=\"not_found\"}")? >= 1);
    // The changes are in the audit trail as the API client's, via gRPC.
    let created = common::audit::wait_for(&deployment, "collection.create", 1)?;
    let ours = created
        .iter()
        .find(|e| e["target"].as_str().is_some_and(|t| t.contains(flow_id)))
        .with_context(|| format!("no collection.create naming {flow_id}: {created:?}"))?;
    assert_eq!(ours["via"], "grpc", "{ours}");
    assert_eq!(ours["outcome"], "ok", "{ours}");
    assert_eq!(ours["user"], "analyst", "the certificate's name: {ours}");
    let hunt_starts = common::audit::wait_for(&deployment, "hunt.start", 1)?;
    assert!(
        hunt_starts.iter().all(|e| e["via"] == "grpc"),
        "{hunt_starts:?}"
    );
    Ok(())
}

/// Writes a client file like `config api-client`'s, with a certificate signed by the CA
/// of `ca_config` for `role`, valid over `validity`.
fn crafted_client(
    deployment: &Deployment,
    ca_config: &std::path::Path,
    file_name: &str,
    role: &str,
    validity: (SystemTime, SystemTime),
) -> Result<std::path::PathBuf> {
    let ca = packhunt::config::secrets::load_ca_signing_key(ca_config)?;
    let (cert, key) =
        sign_api_client_certificate(&ca.certificate_pem, &ca.key_pem, "mallory", role, validity)?;
    let ours = packhunt::config::ServerFile::load(&deployment.path().join("server.config.toml"))?;
    let file = packhunt::config::api_client::ApiClientFile {
        api_url: format!("127.0.0.1:{}", api_port(deployment)?),
        // The client trusts our server; what it presents is the crafted certificate.
        ca_certificate: ours.tls.ca_certificate,
        client_certificate: cert,
        client_private_key: key,
    };
    let path = deployment.path().join(file_name);
    std::fs::write(&path, toml::to_string(&file)?)?;
    Ok(path)
}

#[test]
fn refusals_by_role_and_certificate() -> Result<()> {
    let Some(python) = PythonGrpc::get("grpc_api::refusals_by_role_and_certificate")? else {
        return Ok(());
    };
    let deployment = Deployment::start()?;
    let _agent = start_agent(&deployment)?;
    let reader = api_client(&deployment, "auditor", "reader")?;
    let out = python.run(&reader, "list-clients")?;
    assert_eq!(out["code"], "OK", "a reader reads: {out}");
    let out = python.run(&reader, "create-collection")?;
    assert_eq!(out["code"], "PERMISSION_DENIED", "{out}");
    assert!(
        out["details"]
            .as_str()
            .is_some_and(|d| d.contains("auditor")),
        "{out}"
    );

    let handshakes_refused = "packhunt_grpc_handshakes_refused_total";
    let before = deployment.metric(handshakes_refused)?;
    // No client certificate at all.
    let out = python.run(&reader, "no-certificate")?;
    assert_eq!(out["code"], "UNAVAILABLE", "{out}");
    // A certificate from another deployment's CA.
    let other = tempfile::tempdir()?;
    let generated = packhunt::config::generate::generate(&{
        let mut opts = packhunt::config::generate::GenerateOptions::new(other.path());
        opts.admin_password = Some("x".into());
        opts
    })?;
    let now = SystemTime::now();
    let year = Duration::from_secs(365 * 24 * 3600);
    let foreign = crafted_client(
        &deployment,
        &generated.server_config_path,
        "foreign.toml",
        "administrator",
        (now - Duration::from_secs(60), now + year),
    )?;
    let out = python.run(&foreign, "list-clients")?;
    assert_eq!(out["code"], "UNAVAILABLE", "{out}");
    // Our CA's, but expired yesterday.
    let ours = deployment.path().join("server.config.toml");
    let day = Duration::from_secs(24 * 3600);
    let expired = crafted_client(
        &deployment,
        &ours,
        "expired.toml",
        "administrator",
        (now - 2 * day, now - day),
    )?;
    let out = python.run(&expired, "list-clients")?;
    assert_eq!(out["code"], "UNAVAILABLE", "{out}");
    let refused = deployment.metric(handshakes_refused)? - before;
    assert!(refused >= 3, "{refused} handshakes refused");

    // Our CA's and valid, but naming a role this server does not have.
    let unknown = crafted_client(
        &deployment,
        &ours,
        "unknown.toml",
        "superuser",
        (now, now + year),
    )?;
    let out = python.run(&unknown, "list-clients")?;
    assert_eq!(out["code"], "UNAUTHENTICATED", "{out}");
    assert!(
        out["details"]
            .as_str()
            .is_some_and(|d| d.contains("superuser")),
        "{out}"
    );
    assert!(deployment.metric("packhunt_grpc_identities_refused_total")? >= 1);
    assert!(deployment.metric("packhunt_grpc_calls_total{code=\"permission_denied\"}")? >= 1);
    Ok(())
}

/// Goal: the API port holds at most `MAX_GRPC_CONNECTIONS_COUNT` connections, handshakes
/// included; one more is closed at once (and counted), and slots come back when peers go.
/// Method: raw TCP connections that never start TLS; no Python needed.
#[test]
fn connections_beyond_the_cap_are_closed_at_once() -> Result<()> {
    use std::io::Read as _;
    use std::net::TcpStream;
    let deployment = Deployment::start()?;
    let port = api_port(&deployment)?;
    let open = "packhunt_grpc_connections_open";
    let held = (0..MAX_GRPC_CONNECTIONS_COUNT)
        .map(|_| TcpStream::connect(("127.0.0.1", port)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let cap = MAX_GRPC_CONNECTIONS_COUNT as u64;
    wait_until(
        "every connection took a slot",
        Duration::from_secs(30),
        || deployment.metric(open),
        |n| *n == cap,
    )?;
    let mut extra = TcpStream::connect(("127.0.0.1", port))?;
    extra.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut byte = [0u8; 1];
    match extra.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the connection beyond the cap was not closed: {other:?}"),
    }
    assert!(deployment.metric("packhunt_grpc_connections_refused_total")? >= 1);
    drop(held);
    wait_until(
        "the slots came back",
        Duration::from_secs(30),
        || deployment.metric(open),
        |n| *n == 0,
    )?;
    Ok(())
}
