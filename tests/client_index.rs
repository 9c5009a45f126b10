//! Goal: the master's client index answers every client list and search: agents' facts
//! appear whether they connect to the master or to a minion, and follow a change of
//! facts; a label change shows at once; a restarted master rebuilds the index from the
//! datastore; the search grammar, presence filter, ordering and paging totals hold over a
//! few hundred clients; an unknown client is 404.
//! Method: real frontend processes on loopback ports; agents driven by the test through
//! the real comms client with chosen facts; synthetic client folders written through the
//! datastore code before the master starts.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::client_index::{
    item_ids, list, send_facts_as, synthetic_id, total, wait_complete, wait_one,
    write_synthetic_clients,
};
use common::{cluster, Deployment, RawAgent};
use serde_json::json;

/// Synthetic clients written before the master starts.
const SYNTHETIC_CLIENTS: u64 = 300;

#[test]
fn facts_of_agents_on_the_master_and_on_a_minion_are_listed_and_searchable() -> Result<()> {
    let (deployment, minions) = cluster(1)?;
    let api = deployment.api();
    let master = format!("127.0.0.1:{}", deployment.agent_port);
    let minion = &minions[0];

    let identity = packhunt::tls::agent_key::AgentIdentity::generate;
    let mut on_master = RawAgent::connect_without_facts(&deployment.client_config(), identity()?)?;
    send_facts_as(&mut on_master, "Alpha-Master", "linux")?;
    let via_minion = deployment.client_config_for("minion.toml", &[minion.agent_port], None)?;
    let mut on_minion = RawAgent::connect_without_facts(&via_minion, identity()?)?;
    send_facts_as(&mut on_minion, "beta-minion", "Windows")?;

    let item = wait_one(&api, "alpha", "the master's agent listed")?;
    assert_eq!(item["client_id"], on_master.client_id.as_str());
    assert_eq!(
        (&item["hostname"], &item["os"]),
        (&json!("Alpha-Master"), &json!("linux"))
    );
    assert_eq!(
        (&item["connected"], &item["frontend"]),
        (&json!(true), &json!(master))
    );
    let item = wait_one(&api, "host:BETA os:windows", "the minion's agent listed")?;
    assert_eq!(item["client_id"], on_minion.client_id.as_str());
    assert_eq!(item["frontend"], minion.name.as_str());
    assert_eq!(item["version"], "test");
    assert!(item["first_seen_ms"].as_u64().unwrap() > 0, "{item}");

    // New facts replace the old ones, wherever the agent is.
    send_facts_as(&mut on_minion, "gamma-renamed", "Windows")?;
    wait_one(&api, "gamma", "the minion's agent renamed")?;
    assert_eq!(total(&api, "search=beta")?, 0);

    // A label change shows at once: no waiting.
    let (status, body) = api.post(
        &format!("/api/v1/clients/{}/labels", on_minion.client_id),
        &json!({"add": ["web", "eu"], "remove": []}),
    )?;
    assert_eq!(status, 200, "{body}");
    let found = list(&api, "search=label%3Aweb+label%3Aeu")?;
    assert_eq!(item_ids(&found), [on_minion.client_id.clone()]);
    assert_eq!(found["items"][0]["labels"], json!(["eu", "web"]));
    let (status, one) = api.get(&format!("/api/v1/clients/{}", on_minion.client_id))?;
    assert_eq!(status, 200, "{one}");
    assert_eq!(
        (&one["hostname"], &one["labels"]),
        (&json!("gamma-renamed"), &json!(["eu", "web"]))
    );

    // Presence filters: both connected; the master's agent leaves and is listed as such.
    assert_eq!(total(&api, "connected=true")?, 2);
    assert_eq!(total(&api, "connected=false")?, 0);
    let left_at = packhunt::clock::now_ms();
    drop(on_master);
    let gone = common::wait_until(
        "the master's agent shown disconnected",
        Duration::from_secs(30),
        || list(&api, "connected=false"),
        |body| body["total"] == 1,
    )?;
    let item = &gone["items"][0];
    assert_eq!(
        (&item["hostname"], &item["frontend"]),
        (&json!("Alpha-Master"), &json!(null))
    );
    assert!(item["last_seen_ms"].as_u64().unwrap() >= left_at, "{item}");
    Ok(())
}

#[test]
fn grammar_paging_and_a_restart_over_synthetic_clients() -> Result<()> {
    let mut deployment = Deployment::generate_with(|_| {})?;
    write_synthetic_clients(&deployment.datastore(), SYNTHETIC_CLIENTS)?;
    // A folder without info.json is not listed; an unreadable info.json is, without facts.
    let clients = deployment.datastore().join("clients");
    std::fs::create_dir_all(clients.join("C.ffffffffffff0001"))?;
    std::fs::create_dir_all(clients.join("C.ffffffffffff0002"))?;
    std::fs::write(clients.join("C.ffffffffffff0002/info.json"), b"{not json")?;
    deployment.start_frontend()?;
    let api = deployment.api();
    wait_complete(&api)?;
    check_grammar(&deployment)?;
    check_paging(&deployment)?;

    // A label change is on disk too: a restarted master lists it, and everything else.
    let (status, _) = api.post(
        &format!("/api/v1/clients/{}/labels", synthetic_id(1)),
        &json!({"add": ["odd-one"], "remove": []}),
    )?;
    assert_eq!(status, 200);
    assert_eq!(total(&api, "search=label%3Aodd-one")?, 1);
    deployment.stop_frontend()?;
    deployment.start_frontend()?;
    wait_complete(&api)?;
    assert_eq!(total(&api, "")?, SYNTHETIC_CLIENTS + 1);
    assert_eq!(total(&api, "search=label%3Aodd-one")?, 1);
    check_grammar(&deployment)?;
    assert!(deployment.metric("packhunt_client_index_entries")? == SYNTHETIC_CLIENTS + 1);
    assert!(deployment.metric("packhunt_client_index_searches_total")? > 0);
    Ok(())
}

/// Every term kind, combined, against the counts the synthetic fleet was written with.
fn check_grammar(deployment: &Deployment) -> Result<()> {
    let api = deployment.api();
    let n = SYNTHETIC_CLIENTS;
    let count = |pred: &dyn Fn(u64) -> bool| (0..n).filter(|i| pred(*i)).count() as u64;
    assert_eq!(
        total(&api, "")?,
        n + 1,
        "every readable or unreadable info.json"
    );
    assert_eq!(total(&api, "search=label%3Aeven")?, count(&|i| i % 2 == 0));
    assert_eq!(total(&api, "search=os%3AWINDOWS")?, count(&|i| i % 3 == 0));
    assert_eq!(
        total(&api, "search=label%3Aeven+os%3Alinux")?,
        count(&|i| i % 2 == 0 && i % 3 != 0)
    );
    // Hostname substrings ignore case (HOST-NNN and host-NNN alike).
    assert_eq!(total(&api, "search=host-1")?, 100);
    assert_eq!(total(&api, "search=host%3AST-2")?, 100);
    assert_eq!(
        total(&api, "search=HOST-0+host%3A7")?,
        19,
        "host-007..097 and 070..079"
    );
    // A plain word starting with C. is an id prefix (any case).
    assert_eq!(total(&api, &format!("search={}", synthetic_id(42)))?, 1);
    assert_eq!(total(&api, "search=c.00000000000000F")?, 16);
    assert_eq!(total(&api, "search=label%3Anobody")?, 0);
    assert_eq!(total(&api, "connected=true")?, 0);
    assert_eq!(total(&api, "connected=false")?, n + 1);
    for bad in [
        "search=owner%3Abob",
        "search=label%3A",
        "connected=maybe",
        "limit=x",
    ] {
        let (status, body) = api.get(&format!("/api/v1/clients?{bad}"))?;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let (status, _) = api.get(&format!("/api/v1/clients/{}", synthetic_id(0xdead_0000)))?;
    assert_eq!(status, 404, "an unknown client");
    let (status, _) = api.get("/api/v1/clients/C.0000000000000001")?;
    assert_eq!(status, 200);
    let (status, _) = api.get("/api/v1/clients/C.ffffffffffff0001")?;
    assert_eq!(
        status, 404,
        "a folder without info.json is not a listed client"
    );
    let (status, _) = api.get("/api/v1/clients/not-an-id")?;
    assert_eq!(status, 400);
    Ok(())
}

/// Pages (with `start`, and `offset` as its alias) cover every match once, in hostname
/// order ignoring case, then id.
fn check_paging(deployment: &Deployment) -> Result<()> {
    let api = deployment.api();
    let mut seen = Vec::new();
    let mut hostnames = Vec::new();
    for start in (0..SYNTHETIC_CLIENTS + 60).step_by(60) {
        let key = if start % 120 == 0 { "start" } else { "offset" };
        let page = list(&api, &format!("{key}={start}&limit=60"))?;
        assert_eq!(page["total"], SYNTHETIC_CLIENTS + 1);
        assert_eq!(page["start"], start);
        seen.extend(item_ids(&page));
        for item in page["items"].as_array().unwrap() {
            hostnames.push(item["hostname"].as_str().unwrap().to_lowercase());
        }
    }
    assert_eq!(seen.len() as u64, SYNTHETIC_CLIENTS + 1);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no client on two pages");
    let mut sorted = hostnames.clone();
    sorted.sort();
    assert_eq!(hostnames, sorted, "ordered by hostname ignoring case");
    assert_eq!(hostnames[0], "", "the unreadable one (no hostname) first");
    // The label pages of a search add up to its total.
    let even = total(&api, "search=label%3Aeven")?;
    let mut paged = 0;
    for start in (0..even).step_by(50) {
        let page = list(&api, &format!("search=label%3Aeven&start={start}&limit=50"))?;
        paged += item_ids(&page).len() as u64;
    }
    assert_eq!(paged, even);
    Ok(())
}
