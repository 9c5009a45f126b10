//! Goal: a frontend holds no result-set files between uploads, so open files grow with
//! connected agents only, not with the artifacts their flows collect (each result set
//! is three files; a 20,000-file process would otherwise run out long before 19,000
//! agents). Method: an agent mid-flow on four artifacts, one batch written to each; the
//! frontend's /proc/PID/fd must name no file under the datastore once the acks are back.

mod common;

use bytes::Bytes;
use packhunt::protocol::pb;

const ARTIFACTS: [&str; 4] = [
    "Linux.Sys.Users",
    "Linux.Sys.Pslist",
    "Linux.Network.Netstat",
    "Generic.Client.Info",
];

#[test]
fn no_result_files_stay_open_between_uploads() -> anyhow::Result<()> {
    let deployment = common::Deployment::start()?;
    let mut agent = common::RawAgent::connect(&deployment)?;
    let flow = agent.tasked(&deployment, &ARTIFACTS)?;
    let client_id = agent.client_id.clone();
    for artifact in ARTIFACTS {
        let batch = pb::ResultBatch {
            flow_id: flow.clone(),
            artifact: artifact.into(),
            seq: 0,
            jsonl: Bytes::from_static(b"{\"a\":1}\n"),
            row_count: 1,
        };
        let reply = agent.upload(&pb::Upload {
            kind: Some(pb::upload::Kind::Result(batch)),
        })?;
        assert_eq!(
            reply.ack.map(|a| a.status),
            Some(pb::upload_ack::Status::Ok as i32)
        );
    }
    let results = deployment
        .datastore()
        .join("clients")
        .join(&client_id)
        .join("collections")
        .join(&flow)
        .join("results");
    assert_eq!(
        std::fs::read_dir(&results)?.count(),
        ARTIFACTS.len() * 3,
        "every artifact's three files exist"
    );
    let pid = deployment.frontend_pid().unwrap();
    let targets: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect();
    // Its sockets and epoll/io_uring fds at least: an empty list would mean the links
    // could not be read, and the check below would pass without looking.
    assert!(!targets.is_empty(), "no fd of the frontend could be read");
    let open: Vec<_> = targets
        .into_iter()
        .filter(|target| target.starts_with(deployment.datastore()))
        .collect();
    assert!(open.is_empty(), "files held open between uploads: {open:?}");
    Ok(())
}
