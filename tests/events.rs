//! Goal: the master stores and serves the client event table: an empty version 0 before
//! any change, each valid PUT one version up and served back exactly as stored, each kind
//! of bad table refused with its reason and no version change, only administrators may
//! replace it, and a restarted master serves the same table and version; a corrupt stored
//! table is a clear error, not a crash. Method: a real master on loopback driven through
//! its HTTPS API, stopped and started between requests; the document read from disk.

mod common;

use anyhow::{ensure, Result};
use common::{Api, Deployment};
use packhunt::config::Role;
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
