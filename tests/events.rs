//! Goal: the master stores and serves the client event table: an empty version 0 before
//! any change, each valid PUT one version up and served back exactly as stored, each kind
//! of bad table refused with its reason and no version change, only administrators may
//! replace it, and a restarted master serves the same table and version; a corrupt stored
//! table is a clear error, not a crash. Every agent, on the master or on a minion, gets
//! its own merged table (`all` plus its labels' lists) after Hello and again when the
//! table or its labels change, and none when its digest header shows it holds it. Method: a real
//! master (and minion) on loopback driven through its HTTPS API, stopped and started
//! between requests; the document read from disk; agents are `RawAgent`s reading their
//! task streams frame by frame.

mod common;

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use common::{Api, Deployment, RawAgent};
use packhunt::config::Role;
use packhunt::protocol::event_table::TableDigest;
use packhunt::protocol::pb;
use serde_json::{json, Value};

const TABLE: &str = "/api/v1/events/client_table";

fn table(api: &Api) -> Result<Value> {
    let (status, body) = api.get(TABLE)?;
    ensure!(status == 200, "GET {TABLE}: {status} {body}");
    Ok(body)
}

fn stats(period: Value) -> Value {
    json!({"name": "Generic.Client.Stats", "parameters": {"period_s": period}})
}

/// Each kind of bad table, with a part of the reason the answer must give.
fn bad_tables() -> Vec<(&'static str, Value, &'static str)> {
    let many_labels: serde_json::Map<String, Value> =
        (0..=1024).map(|i| (format!("l{i}"), json!([]))).collect();
    let process_start = json!({"name": "Linux.Events.ProcessStart"});
    vec![
        (
            "unknown artifact",
            json!({"all": [{"name": "Linux.Nope"}], "by_label": {}}),
            "unknown artifact `Linux.Nope`",
        ),
        (
            "collection artifact",
            json!({"all": [], "by_label": {"web": [{"name": "Linux.Sys.Pslist"}]}}),
            "`Linux.Sys.Pslist` is a collection artifact",
        ),
        (
            "unknown parameter",
            json!({"all": [{"name": "Generic.Client.Stats", "parameters": {"colour": 1}}],
                   "by_label": {}}),
            "has no parameter `colour`",
        ),
        (
            "ill-typed parameter",
            json!({"all": [stats(json!("ten"))], "by_label": {}}),
            "parameter `period_s`: must be a non-negative integer",
        ),
        (
            "bad label",
            json!({"all": [], "by_label": {"a b": []}}),
            "bad label `a b`",
        ),
        (
            "duplicate artifact",
            json!({"all": [], "by_label": {"web": [stats(json!(1)), stats(json!(2))]}}),
            "by_label.web: artifact `Generic.Client.Stats` is listed more than once",
        ),
        (
            "too many entries",
            json!({"all": vec![process_start; 33], "by_label": {}}),
            "all: 33 entries, at most 32 allowed",
        ),
        (
            "too many labels",
            json!({"all": [], "by_label": many_labels}),
            "1025 labels, at most 1024 allowed",
        ),
        (
            "missing key",
            json!({"all": []}),
            "missing field `by_label`",
        ),
    ]
}

#[test]
fn table_is_served_replaced_checked_and_survives_restart() -> Result<()> {
    let mut deployment = Deployment::generate_with(|_| {})?;
    deployment.add_user("analyst", "analyst-pw", Role::Reader)?;
    deployment.start_frontend()?;
    let api = deployment.api();

    let empty = json!({"version": 0, "all": [], "by_label": {}});
    assert_eq!(table(&api)?, empty);

    // No credentials: 401 for reading and writing; a reader reads but may not write.
    let anonymous = api.without_auth();
    assert_eq!(anonymous.get(TABLE)?.0, 401);
    assert_eq!(
        anonymous.put(TABLE, &json!({"all": [], "by_label": {}}))?.0,
        401
    );
    let reader = api.with_auth("analyst", "analyst-pw");
    assert_eq!(table(&reader)?, empty);
    let (status, body) = reader.put(TABLE, &json!({"all": [], "by_label": {}}))?;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("may only read")),
        "{body}"
    );

    // Numbers and strings are both accepted and stored in the catalogue's string form.
    let put = json!({
        "all": [stats(json!(10))],
        "by_label": {"web": [{"name": "Linux.Events.ProcessStart"}, stats(json!("30"))]},
    });
    let (status, body) = api.put(TABLE, &put)?;
    assert_eq!((status, body), (200, json!({"version": 1})));
    let first = json!({
        "version": 1,
        "all": [{"name": "Generic.Client.Stats", "parameters": {"period_s": "10"}}],
        "by_label": {"web": [
            {"name": "Linux.Events.ProcessStart", "parameters": {}},
            {"name": "Generic.Client.Stats", "parameters": {"period_s": "30"}},
        ]},
    });
    assert_eq!(table(&api)?, first);
    assert_eq!(table(&reader)?, first);

    for (kind, body, reason) in bad_tables() {
        let (status, answer) = api.put(TABLE, &body)?;
        let error = answer["error"].as_str().unwrap_or_default();
        ensure!(
            status == 400 && error.contains(reason),
            "{kind}: expected 400 naming `{reason}`, got {status} {answer}"
        );
        ensure!(table(&api)? == first, "{kind} changed the table");
    }
    let (status, answer) = api.put_bytes(TABLE, b"{\"all\": [".to_vec())?;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]
        .as_str()
        .is_some_and(|e| e.contains("not a client event table")));
    // Above the body cap (limits.rs, MAX_EVENT_TABLE_BODY_BYTES): 413, as every API body.
    let padded = format!("{{\"all\":[],\"by_label\":{{}}}}{}", " ".repeat(256 * 1024));
    let (status, answer) = api.put_bytes(TABLE, padded.into_bytes())?;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("262144 bytes")),
        "{answer}"
    );
    assert_eq!(table(&api)?, first);

    let (status, body) = api.put(
        TABLE,
        &json!({"all": [], "by_label": {"db": [stats(json!(60))]}}),
    )?;
    assert_eq!((status, body), (200, json!({"version": 2})));
    let second = json!({
        "version": 2,
        "all": [],
        "by_label": {"db": [{"name": "Generic.Client.Stats", "parameters": {"period_s": "60"}}]},
    });
    assert_eq!(table(&api)?, second);

    // On disk as one document, no temp file left beside it.
    let server_dir = deployment.datastore().join("server");
    let names: Vec<String> = std::fs::read_dir(&server_dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    assert_eq!(names, ["client_event_table.json"]);

    let exit = deployment.stop_frontend()?;
    ensure!(exit.success(), "master exited with {exit}");
    deployment.start_frontend()?;
    assert_eq!(table(&deployment.api())?, second);
    let (status, body) = deployment
        .api()
        .put(TABLE, &json!({"all": [], "by_label": {}}))?;
    assert_eq!((status, body), (200, json!({"version": 3})));
    Ok(())
}

#[test]
fn a_corrupt_stored_table_is_a_clear_error() -> Result<()> {
    let mut deployment = Deployment::generate_with(|_| {})?;
    let path = deployment
        .datastore()
        .join("server/client_event_table.json");
    std::fs::create_dir_all(path.parent().expect("a file has a folder"))?;
    std::fs::write(&path, b"{\"version\": 4, \"all\": [")?;
    deployment.start_frontend()?;
    let api = deployment.api();
    for (status, body) in [
        api.get(TABLE)?,
        api.put(TABLE, &json!({"all": [], "by_label": {}}))?,
    ] {
        let error = body["error"].as_str().unwrap_or_default();
        ensure!(
            status == 503 && error.contains("client_event_table.json"),
            "expected 503 naming the file, got {status} {body}"
        );
    }
    // The rest of the API still works, and the file was left for the operator.
    assert_eq!(api.get("/api/v1/artifacts")?.0, 200);
    assert_eq!(std::fs::read(&path)?, b"{\"version\": 4, \"all\": [");
    Ok(())
}

/// (name, period_s) of each query, in order: what an agent's table says, compactly.
fn queries(table: &pb::EventTable) -> Vec<(String, Option<String>)> {
    table
        .queries
        .iter()
        .map(|q| (q.name.clone(), q.parameters.get("period_s").cloned()))
        .collect()
}

fn query(name: &str, period: Option<&str>) -> (String, Option<String>) {
    (name.to_string(), period.map(str::to_string))
}

/// Reads the stream until an EventTable of `version` arrives (each read waits 10 s at
/// most: the push must come within a second, the bound only stops a hung test); fails on
/// any other frame but an older table.
fn await_table(agent: &mut RawAgent, version: u64) -> Result<pb::EventTable> {
    loop {
        match agent.next_message()? {
            pb::server_message::Kind::EventTable(t) if t.version == version => return Ok(t),
            pb::server_message::Kind::EventTable(t) if t.version < version => continue,
            other => bail!("waiting for table version {version}, got {other:?}"),
        }
    }
}

const STATS: &str = "Generic.Client.Stats";
const PROCESS_START: &str = "Linux.Events.ProcessStart";

#[test]
fn agents_get_their_own_table_after_hello_on_changes_and_after_a_restart() -> Result<()> {
    let mut deployment = Deployment::start_with(|_| {})?;
    let api = deployment.api();
    let config = deployment.client_config();

    // Before any PUT: the empty table, so an agent knows to run nothing.
    let mut plain = RawAgent::connect(&deployment)?;
    let empty = plain.expect_event_table()?;
    assert_eq!((empty.version, empty.queries.len()), (0, 0));

    let put = json!({
        "all": [stats(json!(10))],
        "by_label": {"web": [{"name": PROCESS_START}, stats(json!(30))]},
    });
    assert_eq!(api.put(TABLE, &put)?, (200, json!({"version": 1})));
    let pushed = await_table(&mut plain, 1)?;
    assert_eq!(queries(&pushed), [query(STATS, Some("10"))]);

    // A `web` agent: labelled once known, it gets `all` plus `web` at once, the artifact
    // in both once with the label's parameters; reconnecting, the same.
    let mut first = RawAgent::connect(&deployment)?;
    assert_eq!(
        queries(&first.expect_event_table()?),
        [query(STATS, Some("10"))]
    );
    let web_id = first.client_id.clone();
    let (status, body) = api.post(
        &format!("/api/v1/clients/{web_id}/labels"),
        &json!({"add": ["web"]}),
    )?;
    ensure!(status == 200, "labels: {status} {body}");
    let relabelled = first.expect_event_table()?;
    assert_eq!(
        queries(&relabelled),
        [query(STATS, Some("30")), query(PROCESS_START, None)]
    );
    let identity = first.identity.clone();
    drop(first);
    let mut web = RawAgent::connect_as(&config, identity.clone())?;
    let own = web.expect_event_table()?;
    assert_eq!(own.version, 1);
    assert_eq!(
        queries(&own),
        [query(STATS, Some("30")), query(PROCESS_START, None)]
    );

    // Reconnecting with that table's digest: no table frame; the next is a task.
    let skipped = deployment.metric("packhunt_event_table_frames_skipped_total")?;
    drop(web);
    let mut web = RawAgent::connect_holding(&config, identity, Some(TableDigest::of(&own)))?;
    web.send_facts()?;
    let flow = deployment
        .api()
        .collect(&web.client_id, &["Generic.Client.Info"])?;
    match web.next_message()? {
        pb::server_message::Kind::Task(task) => assert_eq!(task.flow_id, flow),
        other => bail!("expected the task right after Hello, got {other:?}"),
    }
    assert_eq!(
        deployment.metric("packhunt_event_table_frames_skipped_total")?,
        skipped + 1
    );

    // A change only to a label neither agent carries sends them nothing: the next frame
    // each gets is the one after it (frames on a stream keep their order).
    let db_only = json!({
        "all": [stats(json!(10))],
        "by_label": {"web": [{"name": PROCESS_START}, stats(json!(30))], "db": [stats(json!(60))]},
    });
    assert_eq!(api.put(TABLE, &db_only)?, (200, json!({"version": 2})));
    let all_changed = json!({"all": [stats(json!(20))], "by_label": {}});
    assert_eq!(api.put(TABLE, &all_changed)?, (200, json!({"version": 3})));
    for agent in [&mut plain, &mut web] {
        let t = agent.expect_event_table()?;
        assert_eq!(t.version, 3, "version 2 changed nothing for this agent");
        assert_eq!(queries(&t), [query(STATS, Some("20"))]);
    }
    assert_eq!(deployment.metric("packhunt_event_table_version")?, 3);

    // A restarted master still delivers the stored table.
    drop((plain, web));
    let exit = deployment.stop_frontend()?;
    ensure!(exit.success(), "master exited with {exit}");
    deployment.start_frontend()?;
    let mut again = RawAgent::connect(&deployment)?;
    let t = await_table(&mut again, 3)?;
    assert_eq!(queries(&t), [query(STATS, Some("20"))]);
    Ok(())
}

#[test]
fn an_agent_on_a_minion_gets_the_table_and_its_changes() -> Result<()> {
    let (deployment, minions) = common::cluster(1)?;
    let api = deployment.api();
    let to_minion = deployment.client_config_for(
        "minion.client.config.toml",
        &[minions[0].agent_port],
        None,
    )?;
    let mut agent = RawAgent::connect_with(&to_minion)?;
    // The minion loads the table at start; its agents get it after Hello.
    let t = await_table(&mut agent, 0)?;
    assert!(t.queries.is_empty());

    let put = json!({"all": [stats(json!(15))], "by_label": {"web": [{"name": PROCESS_START}]}});
    assert_eq!(api.put(TABLE, &put)?, (200, json!({"version": 1})));
    let t = await_table(&mut agent, 1)?;
    assert_eq!(queries(&t), [query(STATS, Some("15"))]);
    common::wait_until(
        "the minion serves version 1",
        Duration::from_secs(10),
        || minions[0].metric(&deployment, "packhunt_event_table_version"),
        |v| *v == 1,
    )?;

    // A label change on the master reaches it over the link; at its next connect its
    // labels come from the shared datastore.
    let (status, body) = api.post(
        &format!("/api/v1/clients/{}/labels", agent.client_id),
        &json!({"add": ["web"]}),
    )?;
    ensure!(status == 200, "labels: {status} {body}");
    let t = agent.expect_event_table()?;
    assert_eq!(
        queries(&t),
        [query(STATS, Some("15")), query(PROCESS_START, None)]
    );
    let identity = agent.identity.clone();
    drop(agent);
    let mut web = RawAgent::connect_as(&to_minion, identity)?;
    let t = web.expect_event_table()?;
    assert_eq!(
        queries(&t),
        [query(STATS, Some("15")), query(PROCESS_START, None)]
    );
    Ok(())
}

#[test]
fn the_real_agent_keeps_its_table_and_is_not_sent_it_again() -> Result<()> {
    // Method: a real `packhunt client`; the master's counters show the frame was sent
    // once, and after a master restart (the agent reconnects by itself, holding the
    // table) skipped instead: the agent computes the server's digest and sends it.
    let mut deployment = Deployment::start_with(|_| {})?;
    let put = json!({"all": [stats(json!(10))], "by_label": {}});
    assert_eq!(
        deployment.api().put(TABLE, &put)?,
        (200, json!({"version": 1}))
    );
    let _agent = common::start_agent(&deployment)?;
    deployment.wait_connected(1, Duration::from_secs(30))?;
    common::wait_until(
        "the table sent to the agent",
        Duration::from_secs(10),
        || deployment.metric("packhunt_event_table_frames_sent_total"),
        |sent| *sent >= 1,
    )?;

    let exit = deployment.stop_frontend()?;
    ensure!(exit.success(), "master exited with {exit}");
    deployment.start_frontend()?;
    deployment.wait_connected(1, Duration::from_secs(60))?;
    common::wait_until(
        "the reconnected agent's table skipped",
        Duration::from_secs(10),
        || deployment.metric("packhunt_event_table_frames_skipped_total"),
        |skipped| *skipped == 1,
    )?;
    assert_eq!(
        deployment.metric("packhunt_event_table_frames_sent_total")?,
        0,
        "the restarted master sent the agent no table"
    );
    Ok(())
}
