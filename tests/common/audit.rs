//! The audit trail as a test reads it: every entry in the datastore's `audit/` day files.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use super::Deployment;

/// Every entry of every day file, with the file's name (`YYYY-MM-DD.jsonl`), in file
/// order; a line that is not JSON is an error (the server never writes one).
pub fn entries(deployment: &Deployment) -> Result<Vec<(String, Value)>> {
    let dir = deployment.datastore().join("audit");
    let mut files: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(listing) => listing.collect::<std::io::Result<Vec<_>>>()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    files.sort_by_key(|f| f.file_name());
    let mut out = Vec::new();
    for file in files {
        let name = file.file_name().to_string_lossy().into_owned();
        for line in std::fs::read_to_string(file.path())?.lines() {
            let entry: Value =
                serde_json::from_str(line).with_context(|| format!("{name}: {line}"))?;
            out.push((name.clone(), entry));
        }
    }
    Ok(out)
}

/// The entries whose `action` is `action`, once at least `count` are on disk.
pub fn wait_for(deployment: &Deployment, action: &str, count: usize) -> Result<Vec<Value>> {
    super::wait_until(
        &format!("{count} `{action}` audit entries"),
        Duration::from_secs(20),
        || {
            Ok(entries(deployment)?
                .into_iter()
                .filter(|(_, e)| e["action"] == action)
                .map(|(_, e)| e)
                .collect::<Vec<_>>())
        },
        |found| found.len() >= count,
    )
}

/// The UTC day file name an entry's `time_ms` belongs in.
pub fn day_file_of(entry: &Value) -> String {
    let time_ms = entry["time_ms"].as_u64().unwrap_or(0);
    format!("{}.jsonl", packhunt::datastore::UtcDay::of_unix_ms(time_ms))
}
