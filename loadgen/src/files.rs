//! The files scenario: every agent is tasked with `Generic.Collectors.File` and answers
//! with one synthetic file of `--file-bytes-per-agent` bytes (`FileSource::Synthetic`,
//! read on demand, never held), whose SHA-256 is computed once per (seed, size) and
//! shared by every agent. After the run the uploads are checked on the server: each
//! flow's uploads index, and the bytes of a sample downloaded and hashed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use packhunt::agent::collected::{ArtifactOutput, CollectedFile, FileSource};
use packhunt::agent::runner::push_row;

use crate::api::{ApiClient, ApiTarget};

/// The path every synthetic agent reports for its file, and the glob it is tasked with.
pub const SYNTHETIC_FILE_PATH: &str = "/var/log/loadgen-synthetic.bin";
/// Seed of the synthetic file's bytes: one file content for the whole fleet.
pub const SYNTHETIC_FILE_SEED: u64 = 0x6c6f_6164_6765_6e21;
/// Flows whose first upload is downloaded and hashed after the run: enough to catch a
/// store that mixes files up, few enough not to download the whole fleet's bytes.
const DOWNLOAD_SAMPLE_COUNT: usize = 5;
/// Bytes hashed per read while downloading a sample (the API streams the body anyway).
const HASH_CHUNK_BYTES: usize = 1024 * 1024;

/// SHA-256 of synthetic files, computed once per (seed, size).
#[derive(Default)]
pub struct SyntheticFiles {
    digests: Mutex<HashMap<(u64, u64), [u8; 32]>>,
}

impl SyntheticFiles {
    pub fn sha256(&self, seed: u64, size: u64) -> [u8; 32] {
        let mut digests = self.digests.lock().expect("no thread panics holding it");
        *digests
            .entry((seed, size))
            .or_insert_with(|| synthetic_sha256(seed, size))
    }

    /// The answer to a `Generic.Collectors.File` task: one file, one row (upload 0); with
    /// `tag_row` (`--record`) the row starts with its index like every recorded row.
    pub fn output(&self, artifact: &str, size: u64, tag_row: bool) -> ArtifactOutput {
        let sha256 = self.sha256(SYNTHETIC_FILE_SEED, size);
        let mut jsonl = Vec::new();
        let row = json!({
                "path": SYNTHETIC_FILE_PATH,
                "size": size,
                "file_size": size,
                "mtime": 1_704_067_200,
                "sha256": hex::encode(sha256),
                "truncated": false,
                "upload": 0,
        });
        if tag_row {
            let bytes = serde_json::to_vec(&row).expect("a JSON value always serialises");
            let id = format!("\"{}\":0", crate::record::ROW_ID_FIELD);
            crate::record::push_tagged(&mut jsonl, &id, &bytes);
            jsonl.push(b'\n');
        } else {
            push_row(&mut jsonl, &row);
        }
        ArtifactOutput {
            name: artifact.to_string(),
            jsonl: jsonl.into(),
            rows: 1,
            uploads: vec![CollectedFile {
                path: SYNTHETIC_FILE_PATH.to_string(),
                size,
                sha256,
                truncated: false,
                source: FileSource::Synthetic {
                    seed: SYNTHETIC_FILE_SEED,
                },
            }],
            ..Default::default()
        }
    }
}

/// SHA-256 of `size` bytes of the synthetic stream `seed`, read in slices.
pub fn synthetic_sha256(seed: u64, size: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    while offset < size {
        let len = (size - offset).min(HASH_CHUNK_BYTES as u64) as usize;
        hasher.update(packhunt::agent::collected::synthetic_bytes(
            seed, offset, len,
        ));
        offset += len as u64;
    }
    hasher.finalize().into()
}

/// The collection request each agent gets: its file, at most `file_bytes` of it.
pub fn request(file_bytes: u64) -> Value {
    json!({
        "artifacts": [packhunt::artifacts::COLLECTORS_FILE],
        "parameters": { packhunt::artifacts::COLLECTORS_FILE: {
            "globs": [SYNTHETIC_FILE_PATH],
            "max_file_bytes": file_bytes.max(1),
            "max_total_bytes": file_bytes.max(1),
        }},
        "max_upload_bytes": file_bytes.max(1),
    })
}

/// What the server holds after a files run.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct FilesCheck {
    /// Flows whose uploads index lists the file complete, with the expected size and
    /// SHA-256 and no error.
    pub files_completed: u64,
    /// Bytes of those files.
    pub bytes_completed: u64,
    /// Flows whose index lists the file with another size or hash, or an error.
    pub files_wrong: u64,
    /// Sampled files downloaded in full whose bytes hash to the expected SHA-256, and
    /// those that did not (or could not be downloaded).
    pub downloads_verified: u64,
    pub downloads_failed: u64,
    /// The first problems seen, for the operator.
    pub problems: Vec<String>,
}

impl FilesCheck {
    fn problem(&mut self, what: String) {
        if self.problems.len() < 5 {
            self.problems.push(what);
        }
    }
}

/// Checks every scheduled flow's uploads index, and downloads a sample.
pub async fn check(
    target: &ApiTarget,
    flows: &[(String, String)],
    file_bytes: u64,
) -> Result<FilesCheck> {
    let expected = hex::encode(synthetic_sha256(SYNTHETIC_FILE_SEED, file_bytes));
    let mut api = ApiClient::connect(target).await?;
    let mut out = FilesCheck::default();
    for (client, flow) in flows {
        let path =
            format!("/api/v1/clients/{client}/collections/{flow}/uploads?start_row=0&rows=10");
        let (status, body, _) = api.request("GET", &path, None).await?;
        let listed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let records = listed["items"].as_array().or(listed["rows"].as_array());
        let record = records.and_then(|items| items.iter().find(|r| r["upload"] == 0));
        match record {
            Some(r)
                if r["size"] == file_bytes
                    && r["sha256"] == expected.as_str()
                    && r["error"].is_null() =>
            {
                out.files_completed += 1;
                out.bytes_completed += file_bytes;
            }
            Some(r) => {
                out.files_wrong += 1;
                out.problem(format!("{flow}: index record {r}"));
            }
            None if status != 200 => out.problem(format!("{flow}: uploads index {status}")),
            None => {}
        }
    }
    for (client, flow) in flows.iter().take(DOWNLOAD_SAMPLE_COUNT) {
        match download_sha256(&mut api, client, flow).await {
            Ok(hash) if hash == expected => out.downloads_verified += 1,
            Ok(hash) => {
                out.downloads_failed += 1;
                out.problem(format!("{flow}: downloaded bytes hash to {hash}"));
            }
            Err(e) => {
                out.downloads_failed += 1;
                out.problem(format!("{flow}: download: {e:#}"));
            }
        }
    }
    Ok(out)
}

async fn download_sha256(api: &mut ApiClient, client: &str, flow: &str) -> Result<String> {
    let path = format!("/api/v1/clients/{client}/collections/{flow}/uploads/0");
    let (status, body, _) =
        tokio::time::timeout(Duration::from_secs(600), api.request("GET", &path, None))
            .await
            .context("download timed out")??;
    anyhow::ensure!(status == 200, "answered {status}");
    Ok(hex::encode(Sha256::digest(&body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_digest_is_that_of_the_bytes_sent() {
        let files = SyntheticFiles::default();
        let size = 3 * HASH_CHUNK_BYTES as u64 + 17;
        let output = files.output("A", size, false);
        let file = &output.uploads[0];
        let bytes = file.source.read_at(0, size as usize).unwrap();
        assert_eq!(bytes.len() as u64, size);
        assert_eq!(Sha256::digest(&bytes).as_slice(), file.sha256);
        assert_eq!(files.sha256(SYNTHETIC_FILE_SEED, size), file.sha256);
    }
}
