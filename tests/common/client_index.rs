//! Helpers for the client index tests: synthetic client folders written through the
//! datastore code, agents with chosen facts, and list requests.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{wait_until, Api, RawAgent};
use packhunt::datastore::{self, ClientInfoDoc, Datastore};
use packhunt::ids::ClientId;

/// The synthetic client number `n` as an id.
pub fn synthetic_id(n: u64) -> String {
    format!("C.{n:016x}")
}

/// Writes `count` client folders with info.json (and labels.json for some) under
/// `datastore`: client n has hostname `host-NNN` (`HOST-NNN` when n % 7 == 0), OS
/// `windows` when n % 3 == 0 else `linux`, and label `even` when n is even (as
/// labels.json for n % 4 == 0, inside info.json otherwise, as older stores hold them).
pub fn write_synthetic_clients(datastore: &Path, count: u64) -> Result<()> {
    let ds = Datastore::open(datastore.to_path_buf(), false)?;
    for n in 0..count {
        let id = ClientId::parse(&synthetic_id(n))?;
        let client = ds.client(&id);
        let hostname = if n % 7 == 0 {
            format!("HOST-{n:03}")
        } else {
            format!("host-{n:03}")
        };
        let even = n % 2 == 0;
        let doc = ClientInfoDoc {
            client_id: id.clone(),
            hostname,
            os: if n % 3 == 0 { "windows" } else { "linux" }.into(),
            labels: if even && n % 4 != 0 {
                vec!["even".into()]
            } else {
                Vec::new()
            },
            first_seen_ms: 1_000 + n,
            last_seen_ms: 2_000 + n,
            version: "0.1.0".into(),
        };
        datastore::write_client_info(&client, &doc)?;
        if even && n % 4 == 0 {
            datastore::client_info::change_labels(&client, &["even".into()], &[])?;
        }
    }
    Ok(())
}

/// `GET /api/v1/clients?<query>`, which must answer 200.
pub fn list(api: &Api, query: &str) -> Result<Value> {
    let (status, body) = api.get(&format!("/api/v1/clients?{query}"))?;
    anyhow::ensure!(status == 200, "clients?{query} answered {status}: {body}");
    Ok(body)
}

/// The `total` of a list request.
pub fn total(api: &Api, query: &str) -> Result<u64> {
    list(api, query)?["total"]
        .as_u64()
        .context("a list answer has a total")
}

/// The client ids of a list answer's items, in order.
pub fn item_ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|c| Some(c["client_id"].as_str()?.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the index says it has read the whole datastore.
pub fn wait_complete(api: &Api) -> Result<()> {
    wait_until(
        "the client index loaded",
        Duration::from_secs(60),
        || Ok(list(api, "limit=1")?["complete"].clone()),
        |complete| *complete == true,
    )?;
    Ok(())
}

/// Uploads a ClientInfo with these facts for `agent`.
pub fn send_facts_as(agent: &mut RawAgent, hostname: &str, os: &str) -> Result<()> {
    use packhunt::protocol::pb;
    let facts = pb::ClientInfo {
        hostname: hostname.into(),
        os: os.into(),
        version: "test".into(),
    };
    let reply = agent.upload(&pb::Upload {
        kind: Some(pb::upload::Kind::Info(facts)),
    })?;
    anyhow::ensure!(reply.status == 200, "ClientInfo answered {}", reply.status);
    Ok(())
}

/// Waits until a search for `search` lists exactly one client, and returns it.
pub fn wait_one(api: &Api, search: &str, what: &str) -> Result<Value> {
    let query = format!("search={}", search.replace(':', "%3A").replace(' ', "+"));
    let body = wait_until(
        what,
        Duration::from_secs(30),
        || list(api, &query),
        |body| body["total"] == 1,
    )?;
    Ok(body["items"][0].clone())
}
