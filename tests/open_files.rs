//! Goal: a frontend holds no result-set files between uploads, so open files grow with
//! connected agents only, not with the artifacts their flows collect (each result set
//! is three files; a 20,000-file process would otherwise run out long before 19,000
//! agents). Method: an agent mid-flow on four artifacts, one batch written to each; the
//! frontend's /proc/PID/fd must name no file under the datastore once the acks are back.

mod common;

use bytes::Bytes;
use packhunt::agent::comms;
use packhunt::agent::url::ServerUrl;
use packhunt::protocol::pb;

const ARTIFACTS: [&str; 4] = ["Linux.Sys.Users", "Linux.Sys.Pslist", "Linux.Network.Netstat", "Generic.Client.Info"];

#[test]
fn no_result_files_stay_open_between_uploads() -> anyhow::Result<()> {
    let deployment = common::Deployment::start()?;
    let config = packhunt::config::ClientConfig::load(&deployment.client_config())?;
    let identity = packhunt::tls::agent_key::AgentIdentity::generate()?;
    let client_id = identity.client_id().to_string();
    let tls = packhunt::tls::client::agent_client_config(&config.client.ca_certificate, identity.rustls_cert_chain(), identity.rustls_private_key())?;
    let url = ServerUrl::parse(&config.client.server_urls[0])?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut conn, mut tasks) = rt.block_on(comms::connect(&url, tls, None))?;
    let info = pb::Upload { kind: Some(pb::upload::Kind::Info(pb::ClientInfo { hostname: "h".into(), os: "linux".into(), version: "t".into() })) };
    assert_eq!(rt.block_on(conn.upload(&info))?.status, 200);
    let flow = deployment.api().collect(&client_id, &ARTIFACTS)?;
    rt.block_on(async {
        while !matches!(tasks.next().await?.and_then(|m| m.kind), Some(pb::server_message::Kind::Task(_))) {}
        anyhow::Ok(())
    })?;
    for artifact in ARTIFACTS {
        let batch = pb::ResultBatch { flow_id: flow.clone(), artifact: artifact.into(), seq: 0, jsonl: Bytes::from_static(b"{\"a\":1}\n"), row_count: 1 };
        let reply = rt.block_on(conn.upload(&pb::Upload { kind: Some(pb::upload::Kind::Result(batch)) }))?;
        assert_eq!(reply.ack.map(|a| a.status), Some(pb::upload_ack::Status::Ok as i32));
    }
    let results = deployment.datastore().join("clients").join(&client_id).join("collections").join(&flow).join("results");
    assert_eq!(std::fs::read_dir(&results)?.count(), ARTIFACTS.len() * 3, "every artifact's three files exist");
    let pid = deployment.frontend_pid().unwrap();
    let open: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(deployment.datastore()))
        .collect();
    assert!(open.is_empty(), "files held open between uploads: {open:?}");
    Ok(())
}
