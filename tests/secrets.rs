//! Goal: each machine holds only the secrets it runs with, and what the frontend writes
//! is not readable by other users. A master and minions run with the CA key taken away
//! (it is in its own 0600 file, which no frontend reads); each minion's config holds its
//! own key and no other; the datastore after a collection with uploaded files and
//! monitoring events has no file or folder with bits for others. Method: real
//! processes from `config generate` / `config frontend`, the real agent, a walk of the
//! datastore.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use common::{wait_frontends, wait_until, Deployment};
use serde_json::json;

fn mode(path: &Path) -> Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

fn private_keys_in(text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN PRIVATE KEY-----") {
        let end = rest[start..]
            .find("-----END PRIVATE KEY-----")
            .map(|e| start + e)
            .unwrap_or(rest.len());
        keys.push(rest[start..end].to_string());
        rest = &rest[end..];
    }
    keys
}

#[test]
fn master_and_minions_run_without_the_ca_key_and_minions_hold_only_their_own() -> Result<()> {
    let mut deployment = Deployment::generate_with(|_| {})?;
    let mut minions = vec![deployment.add_minion()?, deployment.add_minion()?];
    let dir = deployment.path().to_path_buf();
    let ca_key = dir.join("ca.key.pem");
    assert_eq!(mode(&ca_key)?, 0o600, "the CA key file is the owner's only");
    let ca_key_text = std::fs::read_to_string(&ca_key)?;
    let ca_pem = private_keys_in(&ca_key_text);
    assert_eq!(ca_pem.len(), 1);
    // Offline: nothing the frontends run with may need it.
    let offline = tempfile::tempdir()?;
    std::fs::rename(&ca_key, offline.path().join("ca.key.pem"))?;

    let master_text = std::fs::read_to_string(dir.join("server.config.toml"))?;
    assert!(!master_text.contains("ca_private_key"));
    assert!(!master_text.contains(&ca_pem[0]));
    // The master's own key only.
    assert_eq!(private_keys_in(&master_text).len(), 1);
    let mut own_keys = Vec::new();
    for minion in &minions {
        let path = common::secrets::minion_config(&dir, &minion.name);
        assert_ne!(path, dir.join("server.config.toml"), "a config of its own");
        assert_eq!(mode(&path)?, 0o600);
        let entry = common::secrets::minion_entry(&dir, &minion.name)?;
        own_keys.push(
            entry["private_key"]
                .as_str()
                .context("its key")?
                .to_string(),
        );
        let text = std::fs::read_to_string(&path)?;
        assert!(
            !text.contains(&ca_pem[0]),
            "no CA key in {}",
            path.display()
        );
    }
    for (i, minion) in minions.iter().enumerate() {
        let text = std::fs::read_to_string(common::secrets::minion_config(&dir, &minion.name))?;
        assert!(text.contains(own_keys[i].trim()));
        assert!(
            !text.contains(own_keys[1 - i].trim()),
            "{}'s config holds another minion's key",
            minion.name
        );
        assert!(
            !master_text.contains(own_keys[i].trim()),
            "the master holds a minion key"
        );
        let master_key = &private_keys_in(&master_text)[0];
        assert!(
            !text.contains(master_key.trim()),
            "{}'s config holds the master's key",
            minion.name
        );
        assert_eq!(private_keys_in(&text).len(), 1, "its own key only");
    }

    deployment.start_frontend()?;
    for minion in &mut minions {
        deployment.start_minion(minion)?;
    }
    wait_frontends(
        &deployment,
        |items| items.len() == 3 && items.iter().all(|f| f["up"] == true),
        "both minions linked to the master",
    )?;
    // An agent served by a minion that holds no CA key.
    let to_minion = deployment.client_config_for(
        "minion.client.config.toml",
        &[minions[0].agent_port],
        None,
    )?;
    let agent = common::RawAgent::connect_with(&to_minion)?;
    common::wait_frontend_of(&deployment, &agent.client_id, &minions[0].name)?;
    Ok(())
}

#[test]
fn the_datastore_is_closed_to_other_users() -> Result<()> {
    let deployment = Deployment::start()?;
    let _agent = common::start_agent(&deployment)?;
    let client = deployment.wait_connected(1, Duration::from_secs(20))?[0].clone();
    let api = deployment.api();
    // Monitoring events, every second.
    let table = json!({
        "all": [{"name": "Generic.Client.Stats", "parameters": {"period_s": 1}}],
        "by_label": {},
    });
    let (status, body) = api.put("/api/v1/events/client_table", &table)?;
    anyhow::ensure!(status == 200, "event table: {status} {body}");
    // A collection that uploads a file.
    let file = deployment.path().join("collected.bin");
    std::fs::write(&file, vec![7u8; 100_000])?;
    let (status, body) = api.post(
        &format!("/api/v1/clients/{client}/collections"),
        &json!({"artifacts": ["Generic.Collectors.File"],
                "parameters": {"Generic.Collectors.File": {"globs": [file.to_str().unwrap()]}}}),
    )?;
    anyhow::ensure!(status == 200, "collection: {status} {body}");
    let flow = body["flow_id"].as_str().context("flow_id")?.to_string();
    let statuses = deployment.wait_flows(&[(client.clone(), flow)], Duration::from_secs(60))?;
    assert_eq!(statuses[0]["state"], "finished", "{statuses:?}");
    assert!(
        statuses[0]["uploaded_files"].as_u64() >= Some(1),
        "{statuses:?}"
    );
    let datastore = deployment.datastore();
    wait_until(
        "monitoring events on disk",
        Duration::from_secs(30),
        || {
            Ok(walk(&datastore)?
                .iter()
                .any(|(p, _)| p.contains("monitoring")))
        },
        |found| *found,
    )?;

    let entries = walk(&datastore)?;
    assert!(entries.len() > 10, "{entries:?}");
    let open: Vec<_> = entries.iter().filter(|(_, m)| m & 0o007 != 0).collect();
    assert!(open.is_empty(), "readable by others: {open:?}");
    assert_eq!(mode(&datastore)? & 0o007, 0, "the root too");
    Ok(())
}

/// Every file and folder under `root`, with its mode.
fn walk(root: &Path) -> Result<Vec<(String, u32)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(_) => continue, // removed while we looked (a temp file renamed)
            };
            if meta.is_dir() {
                stack.push(entry.path());
            }
            out.push((
                entry.path().display().to_string(),
                meta.permissions().mode() & 0o777,
            ));
        }
    }
    Ok(out)
}
