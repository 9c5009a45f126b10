//! Goal: the real agent's durable outbox makes a restart harmless: a flow interrupted
//! while it was being delivered finishes with every row once, an interrupted collection
//! runs again and its flow has every row once, and a finished flow's task is never run
//! again, even when the server pushes it again. Method: a real frontend and a real
//! `packhunt client` killed with SIGKILL at the moment under test and started again with
//! the same writeback and outbox; what lands on the datastore is read back.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::agent_outbox::{collect_glob, kill9, make_tree, stored_rows, OutboxAgent};
use common::{count_lines, flow_results, wait_until, wait_until_every, Deployment};

const LIMIT: Duration = Duration::from_secs(120);

fn paths(rows: &[serde_json::Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["path"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Many small batches (2 KiB uploads): kill -9 while they are being delivered; after the
/// restart the same rows are delivered from the outbox, not collected again (files added
/// to the tree meanwhile would show in a second run), each exactly once.
#[test]
fn a_flow_killed_mid_delivery_resumes_with_every_row_once() -> anyhow::Result<()> {
    const FILES: usize = 5_000;
    let deployment = Deployment::start()?;
    let tree = make_tree(deployment.path(), "first", FILES)?;
    let agent = OutboxAgent::new(&deployment, 2048)?;
    let running = agent.start()?;
    let client = deployment.wait_connected(1, LIMIT)?.remove(0);
    let flow = collect_glob(
        &deployment,
        &client,
        &format!("{}/*", tree.display()),
        false,
    )?;
    let results = flow_results(
        &deployment.datastore(),
        &client,
        &flow,
        "Generic.Files.Glob",
    );
    let landed = wait_until_every(
        "the first batches landed",
        LIMIT,
        Duration::from_millis(5),
        || Ok(count_lines(&results)),
        |rows| *rows > 0,
    )?;
    kill9(running)?;
    let before_restart = count_lines(&results);
    assert!(
        before_restart < FILES,
        "killed mid-delivery ({landed} then {before_restart} rows of {FILES})"
    );
    let dir = agent.flow_dir(&flow).expect("the outbox holds the flow");
    assert!(
        dir.join("collected.json").exists(),
        "its outputs were persisted"
    );
    make_tree(deployment.path(), "late", 100)?;

    let _running = agent.start()?;
    let status = deployment.wait_flows(&[(client.clone(), flow.clone())], LIMIT)?;
    assert_eq!(status[0]["state"], "finished", "{}", status[0]);
    assert_eq!(status[0]["total_rows"], FILES as u64, "{}", status[0]);
    let rows = stored_rows(&deployment, &client, &flow, "Generic.Files.Glob")?;
    let paths = paths(&rows);
    assert_eq!(paths.len(), FILES);
    assert_eq!(
        paths.iter().collect::<HashSet<_>>().len(),
        FILES,
        "no row twice"
    );
    assert!(
        paths.iter().all(|p| p.contains("/first-")),
        "one run, not two"
    );
    wait_until(
        "the flow's folder removed from the outbox",
        LIMIT,
        || Ok(agent.flow_dir(&flow)),
        Option::is_none,
    )?;
    assert!(agent
        .log()
        .contains("flows from the previous run to finish"));
    Ok(())
}

/// A slow collection (hashing large sparse files) killed before its outputs were
/// persisted: nothing of it was sent, and after the restart it runs again and the flow
/// has every row once.
#[test]
fn a_collection_killed_midway_runs_again_after_the_restart() -> anyhow::Result<()> {
    const SPARSE: usize = 6;
    const SPARSE_BYTES: u64 = 1 << 30;
    let deployment = Deployment::start()?;
    let tree = make_tree(deployment.path(), "small", 50)?;
    for i in 0..SPARSE {
        let file = std::fs::File::create(tree.join(format!("sparse-{i}")))?;
        file.set_len(SPARSE_BYTES)?;
    }
    let agent = OutboxAgent::new(&deployment, 64 * 1024)?;
    let running = agent.start()?;
    let client = deployment.wait_connected(1, LIMIT)?.remove(0);
    let flow = collect_glob(&deployment, &client, &format!("{}/*", tree.display()), true)?;
    wait_until_every(
        "the task persisted in the outbox",
        LIMIT,
        Duration::from_millis(5),
        || Ok(agent.flow_dir(&flow).map(|d| d.join("task.pb").exists())),
        |held| *held == Some(true),
    )?;
    let dir = agent.flow_dir(&flow).expect("held");
    kill9(running)?;
    assert!(
        !dir.join("collected.json").exists(),
        "killed before the collection's outputs were persisted"
    );
    let results = flow_results(
        &deployment.datastore(),
        &client,
        &flow,
        "Generic.Files.Glob",
    );
    assert_eq!(
        count_lines(&results),
        0,
        "nothing sent before the outputs were persisted"
    );

    let _running = agent.start()?;
    let status = deployment.wait_flows(&[(client.clone(), flow.clone())], LIMIT)?;
    assert_eq!(status[0]["state"], "finished", "{}", status[0]);
    let rows = stored_rows(&deployment, &client, &flow, "Generic.Files.Glob")?;
    assert_eq!(rows.len(), 50 + SPARSE);
    assert_eq!(
        paths(&rows).iter().collect::<HashSet<_>>().len(),
        rows.len()
    );
    let zero_gib = rows
        .iter()
        .filter(|r| r["path"].as_str().unwrap().contains("sparse-"))
        .map(|r| r["sha256"].as_str().unwrap_or_default().to_string())
        .collect::<HashSet<_>>();
    assert_eq!(
        zero_gib.len(),
        1,
        "every sparse file hashed, to the same digest"
    );
    Ok(())
}

/// A flow the agent finished is journalled: when the server pushes its task again after
/// a restart (here: its queue entry put back), the agent does not run it; a new task
/// pushed after it runs as usual.
#[test]
fn a_finished_flow_is_not_run_again_after_a_restart() -> anyhow::Result<()> {
    let deployment = Deployment::start()?;
    let agent = OutboxAgent::new(&deployment, 64 * 1024)?;
    let running = agent.start()?;
    let client = deployment.wait_connected(1, LIMIT)?.remove(0);
    kill9(running)?;
    // Offline: the task waits in the queue, where the test takes a copy of it.
    let api = deployment.api();
    let flow = api.collect(&client, &["Generic.Client.Info", "Linux.Sys.Users"])?;
    let queued = deployment
        .datastore()
        .join("clients")
        .join(&client)
        .join("tasks")
        .join(&flow);
    let entry = std::fs::read(&queued)?;
    let running = agent.start()?;
    let first = deployment.wait_flows(&[(client.clone(), flow.clone())], LIMIT)?;
    assert_eq!(first[0]["state"], "finished", "{}", first[0]);
    wait_until(
        "the flow's folder removed from the outbox",
        LIMIT,
        || Ok(agent.flow_dir(&flow)),
        Option::is_none,
    )?;
    kill9(running)?;

    std::fs::write(&queued, entry)?;
    let pushed = deployment.metric("packhunt_tasks_pushed_total")?;
    let duplicates = deployment.metric("packhunt_uploads_duplicate_total")?;
    let _running = agent.start()?;
    deployment.wait_connected(1, LIMIT)?;
    let second = api.collect(&client, &["Generic.Client.Info"])?;
    deployment.wait_flows(&[(client.clone(), second.clone())], LIMIT)?;
    assert!(
        deployment.metric("packhunt_tasks_pushed_total")? >= pushed + 2,
        "the finished flow's task was pushed again, then the new one"
    );
    assert_eq!(
        deployment.metric("packhunt_uploads_duplicate_total")?,
        duplicates,
        "nothing of the finished flow was sent again"
    );
    let (_, again) = api.get(&format!("/api/v1/clients/{client}/collections/{flow}"))?;
    assert_eq!(again["finish_time_ms"], first[0]["finish_time_ms"]);
    assert_eq!(again["total_rows"], first[0]["total_rows"]);
    Ok(())
}

/// The task's limits reach the agent: `max_rows` cuts the rows it sends (the flow is
/// finished with exactly that many), and a collection still running past `timeout_s`
/// (hashing large sparse files) ends the flow as an error.
#[test]
fn the_task_limits_bound_what_the_agent_sends() -> anyhow::Result<()> {
    let deployment = Deployment::start()?;
    let tree = make_tree(deployment.path(), "small", 50)?;
    let slow = deployment.path().join("slow");
    std::fs::create_dir_all(&slow)?;
    for i in 0..8 {
        std::fs::File::create(slow.join(format!("sparse-{i}")))?.set_len(1 << 30)?;
    }
    let agent = OutboxAgent::new(&deployment, 64 * 1024)?;
    let _running = agent.start()?;
    let client = deployment.wait_connected(1, LIMIT)?.remove(0);
    let api = deployment.api();
    let glob = |pattern: String, hash: bool, limits: serde_json::Value| -> anyhow::Result<String> {
        let mut body = serde_json::json!({
            "artifacts": ["Generic.Files.Glob"],
            "parameters": {"Generic.Files.Glob": {"pattern": pattern, "hash": hash}},
        });
        body.as_object_mut()
            .unwrap()
            .extend(limits.as_object().unwrap().clone());
        let (code, answer) = api.post(&format!("/api/v1/clients/{client}/collections"), &body)?;
        anyhow::ensure!(code == 200, "{code} {answer}");
        Ok(answer["flow_id"].as_str().unwrap().to_string())
    };
    let capped = glob(
        format!("{}/*", tree.display()),
        false,
        serde_json::json!({"max_rows": 10}),
    )?;
    let timed = glob(
        format!("{}/*", slow.display()),
        true,
        serde_json::json!({"timeout_s": 1}),
    )?;
    let done =
        deployment.wait_flows(&[(client.clone(), capped), (client.clone(), timed)], LIMIT)?;
    assert_eq!(done[0]["state"], "finished", "{}", done[0]);
    assert_eq!(done[0]["total_rows"], 10, "{}", done[0]);
    assert_eq!(done[1]["state"], "error", "{}", done[1]);
    Ok(())
}
