//! Goal: whole result sets download as CSV and JSONL, a collection and a hunt export as
//! zips that standard readers open and that hold exactly what the API lists, a large
//! export streams without the frontend holding it, and hunt results pages stay what a
//! scan of every participant gives, while participants run, after they finish and after
//! a master restart. Method: a real frontend, `RawAgent`s sending result rows through the
//! agent protocol, complete uploads placed in the datastore layout, the zips read with the
//! zip crate and (when present) Python's `zipfile`.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::exports::{
    csv_cell, finish, flow_dir, get, get_to_file, next_task, parse_csv, place_upload,
    python_zip_names, python_zipfile, send_rows, zip_entries,
};
use common::{Deployment, RawAgent};
use serde_json::{json, Value};

const USERS: &str = "Linux.Sys.Users";
const INFO: &str = "Generic.Client.Info";

/// Rows that exercise CSV quoting: commas, quotes, newlines, unicode, nested values,
/// missing keys and keys in another order.
fn tricky_rows() -> Vec<String> {
    // Raw texts: the key order as sent is what the CSV header follows.
    [
        r#"{"user":"root","uid":0,"shell":"/bin/bash"}"#,
        r#"{"user":"a,b","note":"say \"hi\"","uid":1}"#,
        r#"{"uid":2,"user":"multi\nline\r\nname","groups":["wheel","adm"]}"#,
        r#"{"user":"ünïcødé ✓ 日本","meta":{"k":[1,{"x":"y,\"z\""}],"n":null}}"#,
        r#"{"shell":"","flag":true,"ratio":0.5}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Every row of an artifact of a flow, through the paged results API.
fn api_rows(
    deployment: &Deployment,
    client: &str,
    flow: &str,
    artifact: &str,
) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    loop {
        let (status, page) = deployment.api().get(&format!(
            "/api/v1/clients/{client}/collections/{flow}/results?artifact={artifact}&start_row={}&rows=2",
            rows.len()
        ))?;
        anyhow::ensure!(status == 200, "results page: {status} {page}");
        let got = page["rows"].as_array().context("rows")?.clone();
        if got.is_empty() {
            return Ok(rows);
        }
        rows.extend(got);
    }
}

/// The CSV rows sent as `texts` should give: a header of first-seen keys, cells per
/// `csv_cell`.
fn expected_csv(texts: &[String]) -> Result<Vec<Vec<String>>> {
    let mut keys: Vec<String> = Vec::new();
    for text in texts {
        for key in keys_in_text_order(text) {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    let mut out = vec![keys.clone()];
    for text in texts {
        let row: Value = serde_json::from_str(text)?;
        out.push(keys.iter().map(|k| csv_cell(row.get(k))).collect());
    }
    Ok(out)
}

/// Top-level keys of a JSON object text, in order (a tiny scanner for test rows).
fn keys_in_text_order(text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text);
    struct V<'a>(&'a mut Vec<String>);
    impl<'de> serde::de::Visitor<'de> for V<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            while let Some(k) = m.next_key::<String>()? {
                m.next_value::<serde::de::IgnoredAny>()?;
                self.0.push(k);
            }
            Ok(())
        }
    }
    serde::Deserializer::deserialize_map(&mut de, V(&mut keys)).unwrap();
    keys
}

#[test]
fn a_collection_downloads_as_csv_and_jsonl_and_exports_a_zip_holding_what_the_api_lists(
) -> Result<()> {
    let deployment = Deployment::start()?;
    let mut agent = RawAgent::connect(&deployment)?;
    let client = agent.client_id.clone();
    let flow = agent.tasked(&deployment, &[USERS, INFO])?;
    let rows = tricky_rows();
    send_rows(&mut agent, &flow, USERS, 0, &rows[..2])?;
    send_rows(&mut agent, &flow, USERS, 1, &rows[2..])?;
    send_rows(
        &mut agent,
        &flow,
        INFO,
        0,
        &[json!({"hostname": "h"}).to_string()],
    )?;
    finish(&mut agent, &flow, &[(USERS, 5, 2), (INFO, 1, 1)])?;
    deployment.wait_flows(&[(client.clone(), flow.clone())], Duration::from_secs(20))?;

    // Uploads as the server stores them: a small file, an empty one, a binary one.
    let mut uploads = Vec::new();
    uploads.push(place_upload(
        &deployment,
        &client,
        &flow,
        0,
        "etc/passwd",
        |w| Ok(w.write_all(b"root:x:0:0:root:/root:/bin/bash\n")?),
    )?);
    uploads.push(place_upload(
        &deployment,
        &client,
        &flow,
        1,
        "tmp/empty",
        |_| Ok(()),
    )?);
    uploads.push(place_upload(
        &deployment,
        &client,
        &flow,
        2,
        "var/log/bin.dat~2",
        |w| {
            let data: Vec<u8> = (0..300_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            Ok(w.write_all(&data)?)
        },
    )?);
    let base = format!("/api/v1/clients/{client}/collections/{flow}");

    // JSONL: the stored rows as they are.
    let jsonl = get(
        &deployment,
        &format!("{base}/results?artifact={USERS}&format=jsonl"),
    )?;
    assert_eq!(jsonl.status, 200);
    assert_eq!(jsonl.content_type, "application/x-ndjson");
    assert!(
        jsonl.disposition.contains(&format!("{flow}-{USERS}.jsonl")),
        "{}",
        jsonl.disposition
    );
    let on_disk = std::fs::read(
        flow_dir(&deployment, &client, &flow).join(format!("results/{USERS}.jsonl")),
    )?;
    assert_eq!(jsonl.body, on_disk);
    let paged = api_rows(&deployment, &client, &flow, USERS)?;
    let streamed: Vec<Value> = jsonl
        .body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(serde_json::from_slice)
        .collect::<Result<_, _>>()?;
    assert_eq!(streamed, paged);

    // CSV: header of first-seen keys, RFC 4180 quoting, nested values as JSON text.
    let csv = get(
        &deployment,
        &format!("{base}/results?artifact={USERS}&format=csv"),
    )?;
    assert_eq!(csv.status, 200);
    assert!(
        csv.content_type.starts_with("text/csv"),
        "{}",
        csv.content_type
    );
    assert!(csv.disposition.contains(&format!("{flow}-{USERS}.csv")));
    let text = String::from_utf8(csv.body.clone())?;
    let parsed = parse_csv(&text)?;
    assert_eq!(parsed, expected_csv(&rows)?, "{text}");
    assert_eq!(
        parsed[0],
        ["user", "uid", "shell", "note", "groups", "meta", "flag", "ratio"]
    );
    // Nested values read back as the JSON they were.
    let meta: Value = serde_json::from_str(&parsed[4][5])?;
    assert_eq!(meta, json!({"k": [1, {"x": "y,\"z\""}], "n": null}));
    assert_eq!(parsed[3][0], "multi\nline\r\nname");

    // Refusals: a format we do not write, an artifact the flow did not collect, no flow.
    assert_eq!(
        get(
            &deployment,
            &format!("{base}/results?artifact={USERS}&format=xml")
        )?
        .status,
        400
    );
    assert_eq!(
        get(
            &deployment,
            &format!("{base}/results?artifact=Linux.Sys.Pslist&format=csv")
        )?
        .status,
        400
    );
    let unknown =
        format!("/api/v1/clients/{client}/collections/F.0123456789ABCDEF/results?format=csv");
    assert_eq!(get(&deployment, &unknown)?.status, 404);
    assert_eq!(
        get(
            &deployment,
            &format!("/api/v1/clients/{client}/collections/F.0123456789ABCDEF/export.zip")
        )?
        .status,
        404
    );

    // The zip: exactly these entries, each what the API or the datastore holds.
    let zip = get(&deployment, &format!("{base}/export.zip"))?;
    assert_eq!(zip.status, 200);
    assert_eq!(zip.content_type, "application/zip");
    assert!(zip.disposition.contains(&format!("{flow}.zip")));
    let entries = zip_entries(&zip.body)?;
    let names: Vec<&str> = entries.keys().map(String::as_str).collect();
    let mut want_names = vec![
        "request.json".to_string(),
        "status.json".to_string(),
        format!("results/{USERS}.jsonl"),
        format!("results/{USERS}.csv"),
        format!("results/{INFO}.jsonl"),
        format!("results/{INFO}.csv"),
        "uploads.jsonl".to_string(),
    ];
    want_names.extend(uploads.iter().map(|u| format!("uploads/{}", u.stored)));
    want_names.sort();
    assert_eq!(names, want_names);
    let request: Value = serde_json::from_slice(&entries["request.json"])?;
    let on_disk: Value = serde_json::from_slice(&std::fs::read(
        flow_dir(&deployment, &client, &flow).join("request.json"),
    )?)?;
    assert_eq!(request, on_disk);
    let (_, status) = deployment.api().get(&base)?;
    assert_eq!(
        serde_json::from_slice::<Value>(&entries["status.json"])?,
        status
    );
    assert_eq!(entries[&format!("results/{USERS}.jsonl")], jsonl.body);
    assert_eq!(entries[&format!("results/{USERS}.csv")], csv.body);
    let info_rows: Vec<Value> =
        String::from_utf8(entries[&format!("results/{INFO}.jsonl")].clone())?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
    assert_eq!(info_rows, api_rows(&deployment, &client, &flow, INFO)?);
    let index: Vec<packhunt::datastore::uploads::UploadRecord> =
        String::from_utf8(entries["uploads.jsonl"].clone())?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
    assert_eq!(index, uploads);
    for u in &uploads {
        let stored = std::fs::read(
            flow_dir(&deployment, &client, &flow)
                .join("uploads")
                .join(&u.stored),
        )?;
        assert_eq!(
            entries[&format!("uploads/{}", u.stored)],
            stored,
            "{} byte-equal",
            u.stored
        );
    }

    // A standard reader opens it too.
    if python_zipfile() {
        let path = deployment.path().join("collection.zip");
        std::fs::write(&path, &zip.body)?;
        let mut names = python_zip_names(&path)?;
        names.sort();
        assert_eq!(names, want_names);
    } else {
        common::skip("python zipfile check", "python3");
    }
    Ok(())
}

/// A hunt's rows as a scan of every participant's result set on disk gives them, with
/// the client and flow: what the results pages showed before the index.
fn scanned(deployment: &Deployment, hunt: &str, artifact: &str) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(
        deployment
            .datastore()
            .join("hunts")
            .join(format!("{hunt}.participants")),
    )?;
    let mut out = Vec::new();
    for line in text.lines() {
        let (client, flow) = line.split_once(' ').context("participant line")?;
        let path = flow_dir(deployment, client, flow).join(format!("results/{artifact}.jsonl"));
        for row in std::fs::read_to_string(path).unwrap_or_default().lines() {
            out.push(json!({"client_id": client, "flow_id": flow, "row": serde_json::from_str::<Value>(row)?}));
        }
    }
    Ok(out)
}

/// Every page of the hunt's results for a few page sizes equals the scan.
fn assert_pages_match_scan(deployment: &Deployment, hunt: &str) -> Result<()> {
    let want = scanned(deployment, hunt, USERS)?;
    for size in [1usize, 2, 3, 100] {
        for start in 0..=want.len() + 1 {
            let (status, page) = deployment.api().get(&format!(
                "/api/v1/hunts/{hunt}/results?artifact={USERS}&start_row={start}&rows={size}"
            ))?;
            anyhow::ensure!(status == 200, "hunt results: {status} {page}");
            assert_eq!(page["total_rows"].as_u64(), Some(want.len() as u64));
            assert_eq!(page["start_row"].as_u64(), Some(start as u64));
            let end = (start + size).min(want.len());
            let slice = if start < want.len() {
                &want[start..end]
            } else {
                &[][..]
            };
            assert_eq!(
                page["rows"].as_array().unwrap().as_slice(),
                slice,
                "start {start} size {size}"
            );
        }
    }
    Ok(())
}

fn rows_for(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| json!({"user": format!("{prefix}-{i}"), "uid": i, "home": format!("/home/{prefix},{i}")}).to_string()).collect()
}

#[test]
fn hunt_pages_match_a_scan_while_running_after_finishing_and_after_a_restart_and_the_hunt_exports(
) -> Result<()> {
    let mut deployment = Deployment::start()?;
    let mut agents: Vec<RawAgent> = (0..3)
        .map(|_| RawAgent::connect(&deployment))
        .collect::<Result<_>>()?;
    deployment.wait_connected(3, Duration::from_secs(20))?;
    let (status, created) = deployment
        .api()
        .post("/api/v1/hunts", &json!({"artifacts": [USERS]}))?;
    assert_eq!(status, 200, "{created}");
    let hunt = created["hunt_id"].as_str().context("hunt_id")?.to_string();
    let (status, _) = deployment
        .api()
        .post(&format!("/api/v1/hunts/{hunt}/start"), &json!({}))?;
    assert_eq!(status, 200);
    let flows: Vec<String> = agents
        .iter_mut()
        .map(|a| Ok(next_task(a)?.flow_id))
        .collect::<Result<_>>()?;

    // One finishes, one is mid-flow, one has sent nothing yet.
    send_rows(&mut agents[0], &flows[0], USERS, 0, &rows_for("a", 3))?;
    finish(&mut agents[0], &flows[0], &[(USERS, 3, 1)])?;
    send_rows(&mut agents[1], &flows[1], USERS, 0, &rows_for("b", 2))?;
    common::wait_until(
        "the first participant counted",
        Duration::from_secs(20),
        || Ok(deployment.api().get(&format!("/api/v1/hunts/{hunt}"))?.1),
        |h| h["completed"] == 1,
    )?;
    assert_pages_match_scan(&deployment, &hunt)?;

    // All finish, the mid-flow one with more rows.
    send_rows(&mut agents[1], &flows[1], USERS, 1, &rows_for("b2", 4))?;
    finish(&mut agents[1], &flows[1], &[(USERS, 6, 2)])?;
    send_rows(&mut agents[2], &flows[2], USERS, 0, &rows_for("c", 5))?;
    finish(&mut agents[2], &flows[2], &[(USERS, 5, 1)])?;
    common::wait_until(
        "every participant counted",
        Duration::from_secs(20),
        || Ok(deployment.api().get(&format!("/api/v1/hunts/{hunt}"))?.1),
        |h| h["completed"] == 3,
    )?;
    assert_pages_match_scan(&deployment, &hunt)?;

    // Uploads for two participants.
    let clients: Vec<String> = agents.iter().map(|a| a.client_id.clone()).collect();
    let mut uploads = Vec::new();
    for i in [0usize, 2] {
        let record = place_upload(&deployment, &clients[i], &flows[i], 0, "etc/hosts", |w| {
            Ok(w.write_all(format!("127.0.0.1 host-{i}\n").as_bytes())?)
        })?;
        uploads.push((i, record));
    }

    // The index is rebuilt from disk at start: the same pages after a restart.
    drop(agents);
    deployment.stop_frontend()?;
    deployment.start_frontend()?;
    assert_pages_match_scan(&deployment, &hunt)?;

    // The hunt export: hunt.json, participants, the rows of all, the uploads per client.
    let zip = get(&deployment, &format!("/api/v1/hunts/{hunt}/export.zip"))?;
    assert_eq!(zip.status, 200);
    assert_eq!(zip.content_type, "application/zip");
    let entries = zip_entries(&zip.body)?;
    let mut want_names = vec![
        "hunt.json".to_string(),
        "participants.jsonl".to_string(),
        format!("results/{USERS}.jsonl"),
        format!("results/{USERS}.csv"),
        "uploads.jsonl".to_string(),
    ];
    want_names.extend(
        uploads
            .iter()
            .map(|(i, u)| format!("uploads/{}/{}", clients[*i], u.stored)),
    );
    want_names.sort();
    assert_eq!(entries.keys().cloned().collect::<Vec<_>>(), want_names);
    let (_, shown) = deployment.api().get(&format!("/api/v1/hunts/{hunt}"))?;
    assert_eq!(
        serde_json::from_slice::<Value>(&entries["hunt.json"])?,
        shown
    );
    let participants: Vec<Value> = String::from_utf8(entries["participants.jsonl"].clone())?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(participants.len(), 3);
    for p in &participants {
        assert_eq!(p["status"]["state"], "finished", "{p}");
    }
    let want = scanned(&deployment, &hunt, USERS)?;
    let exported: Vec<Value> =
        String::from_utf8(entries[&format!("results/{USERS}.jsonl")].clone())?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
    assert_eq!(exported, want);
    let csv = parse_csv(std::str::from_utf8(
        &entries[&format!("results/{USERS}.csv")],
    )?)?;
    // The rows' keys as sent (json! sorts them): home, uid, user.
    assert_eq!(csv[0], ["client_id", "flow_id", "home", "uid", "user"]);
    assert_eq!(csv.len(), want.len() + 1);
    for (line, row) in csv[1..].iter().zip(&want) {
        assert_eq!(line[0], row["client_id"].as_str().unwrap());
        assert_eq!(line[1], row["flow_id"].as_str().unwrap());
        assert_eq!(line[2], row["row"]["home"].as_str().unwrap());
        assert_eq!(line[3], row["row"]["uid"].to_string());
        assert_eq!(line[4], row["row"]["user"].as_str().unwrap());
    }
    let index: Vec<Value> = String::from_utf8(entries["uploads.jsonl"].clone())?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(index.len(), uploads.len());
    for line in &index {
        // Participants in recruitment order, which need not be the agents' order.
        let (i, u) = uploads
            .iter()
            .find(|(i, _)| line["client_id"] == clients[*i].as_str())
            .context("an uploads.jsonl line of a client with uploads")?;
        assert_eq!(line["flow_id"], flows[*i].as_str());
        assert_eq!(line["sha256"], u.sha256.as_str());
        let stored = std::fs::read(
            flow_dir(&deployment, &clients[*i], &flows[*i])
                .join("uploads")
                .join(&u.stored),
        )?;
        assert_eq!(
            entries[&format!("uploads/{}/{}", clients[*i], u.stored)],
            stored
        );
    }
    if python_zipfile() {
        let path = deployment.path().join("hunt.zip");
        std::fs::write(&path, &zip.body)?;
        let mut names = python_zip_names(&path)?;
        names.sort();
        assert_eq!(names, want_names);
    } else {
        common::skip("python zipfile check", "python3");
    }
    Ok(())
}

#[test]
fn a_large_upload_streams_through_an_export_without_the_frontend_holding_it() -> Result<()> {
    const FILE_MIB: usize = 320;
    let deployment = Deployment::start()?;
    let mut agent = RawAgent::connect(&deployment)?;
    let client = agent.client_id.clone();
    let flow = agent.tasked(&deployment, &[USERS])?;
    send_rows(&mut agent, &flow, USERS, 0, &rows_for("big", 10))?;
    finish(&mut agent, &flow, &[(USERS, 10, 1)])?;
    deployment.wait_flows(&[(client.clone(), flow.clone())], Duration::from_secs(20))?;
    let block: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let record = place_upload(&deployment, &client, &flow, 0, "var/big.img", |w| {
        for i in 0..FILE_MIB {
            w.write_all(&block)?;
            w.write_all(&(i as u64).to_le_bytes())?;
        }
        Ok(())
    })?;
    let pid = deployment.frontend_pid().context("frontend pid")?;
    let before_kib = common::exports::rss_kib(pid)?;
    let path = deployment.path().join("big.zip");
    let zip = get_to_file(
        &deployment,
        &format!("/api/v1/clients/{client}/collections/{flow}/export.zip"),
        &path,
        Some(pid),
    )?;
    assert_eq!(zip.status, 200);
    assert!(zip.bytes > record.size, "{} bytes", zip.bytes);
    // Generous: the file is 320 MiB; a frontend that held it would pass this bound.
    let grown_mib = zip.peak_rss_kib.saturating_sub(before_kib) / 1024;
    eprintln!(
        "frontend RSS {} MiB before, peak {} MiB during a {} MiB export",
        before_kib / 1024,
        zip.peak_rss_kib / 1024,
        zip.bytes >> 20
    );
    assert!(
        grown_mib < 128,
        "frontend RSS grew by {grown_mib} MiB while exporting"
    );

    // The entry reads back whole, with the SHA-256 of the stored file.
    let file = std::fs::File::open(&path)?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))?;
    let mut entry = archive.by_name("uploads/var/big.img")?;
    assert_eq!(entry.size(), record.size);
    let mut sha = <sha2::Sha256 as sha2::Digest>::new();
    std::io::copy(&mut entry, &mut sha)?;
    assert_eq!(hex::encode(sha2::Digest::finalize(sha)), record.sha256);
    drop(entry);
    if python_zipfile() {
        let names = python_zip_names(&path)?;
        assert!(
            names.contains(&"uploads/var/big.img".to_string()),
            "{names:?}"
        );
    } else {
        common::skip("python zipfile check", "python3");
    }
    Ok(())
}
