//! Helpers for the export tests: a streamed GET read to memory or to a file (with the
//! frontend's peak resident memory sampled while it arrives), an RFC 4180 CSV reader,
//! result rows sent through a `RawAgent`, and complete uploads placed in the datastore
//! layout (`uploads/<stored>` + an `uploads.jsonl` line).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use sha2::{Digest, Sha256};

use super::{Deployment, RawAgent};

/// How long one body frame may take to arrive (a hang, not a timing).
pub const FRAME_LIMIT: Duration = Duration::from_secs(60);

/// A streamed answer: its status, headers of interest and body (in memory or its size
/// when written to a file).
pub struct Download {
    pub status: u16,
    pub content_type: String,
    pub disposition: String,
    pub body: Vec<u8>,
    pub bytes: u64,
    /// Highest VmRSS of `watch_pid` seen while the body arrived, in KiB.
    pub peak_rss_kib: u64,
}

/// GETs `path` from the deployment's API; the body into memory.
pub fn get(deployment: &Deployment, path: &str) -> Result<Download> {
    fetch(deployment, path, None, None)
}

/// GETs `path` writing the body to `file`, sampling `watch_pid`'s VmRSS as it arrives.
pub fn get_to_file(
    deployment: &Deployment,
    path: &str,
    file: &Path,
    watch_pid: Option<u32>,
) -> Result<Download> {
    fetch(deployment, path, Some(file), watch_pid)
}

fn fetch(
    deployment: &Deployment,
    path: &str,
    file: Option<&Path>,
    watch_pid: Option<u32>,
) -> Result<Download> {
    let target = deployment.api().target()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut send = super::api_client::connect_http1::<Empty<Bytes>>(&target).await?;
        let request = hyper::Request::get(path)
            .header("host", format!("{}:{}", target.host, target.port))
            .header("authorization", target.authorization().context("auth")?)
            .body(Empty::<Bytes>::new())?;
        let response = tokio::time::timeout(FRAME_LIMIT, send.send_request(request)).await??;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let mut out = Download {
            status: response.status().as_u16(),
            content_type: header("content-type"),
            disposition: header("content-disposition"),
            body: Vec::new(),
            bytes: 0,
            peak_rss_kib: 0,
        };
        let mut sink = match file {
            Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
            None => None,
        };
        let mut body = response.into_body();
        let mut frames = 0u64;
        while let Some(frame) = tokio::time::timeout(FRAME_LIMIT, body.frame())
            .await
            .context("no body frame within the limit")?
        {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            out.bytes += data.len() as u64;
            match sink.as_mut() {
                Some(f) => f.write_all(&data)?,
                None => out.body.extend_from_slice(&data),
            }
            frames += 1;
            if frames % 64 == 1 {
                if let Some(pid) = watch_pid {
                    out.peak_rss_kib = out.peak_rss_kib.max(rss_kib(pid)?);
                }
            }
        }
        if let Some(mut f) = sink {
            f.flush()?;
        }
        anyhow::Ok(out)
    })
}

/// The VmRSS of process `pid`, KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS line")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

/// Parses RFC 4180 CSV (quoted fields, doubled quotes, CRLF or LF line ends).
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    ensure!(!quoted, "CSV ends inside a quoted field");
    if !field.is_empty() || !row.is_empty() {
        bail!("CSV does not end with a line end");
    }
    Ok(rows)
}

/// What a CSV cell holds for a JSON value (strings as they are, null empty, the rest
/// as compact JSON).
pub fn csv_cell(value: Option<&serde_json::Value>) -> String {
    match value {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Sends `rows` (JSON object texts) of `artifact` as batch `seq` of `flow`.
pub fn send_rows(
    agent: &mut RawAgent,
    flow: &str,
    artifact: &str,
    seq: u64,
    rows: &[String],
) -> Result<()> {
    use packhunt::protocol::pb::{self, upload::Kind};
    let jsonl: String = rows.iter().map(|r| format!("{r}\n")).collect();
    let batch = pb::ResultBatch {
        flow_id: flow.into(),
        artifact: artifact.into(),
        seq,
        jsonl: jsonl.into_bytes().into(),
        row_count: rows.len() as u32,
    };
    let reply = agent.upload(&pb::Upload {
        kind: Some(Kind::Result(batch)),
    })?;
    ensure!(reply.status == 200, "batch answered {}", reply.status);
    Ok(())
}

/// Ends `flow` as finished with these (artifact, rows, batches).
pub fn finish(agent: &mut RawAgent, flow: &str, artifacts: &[(&str, u64, u64)]) -> Result<()> {
    use packhunt::protocol::pb::{self, upload::Kind};
    let done = pb::FlowStatus {
        flow_id: flow.into(),
        artifacts: artifacts
            .iter()
            .map(|(name, rows, batches)| pb::ArtifactRows {
                name: name.to_string(),
                rows: *rows,
                batches: *batches,
            })
            .collect(),
        ..Default::default()
    };
    let reply = agent.upload(&pb::Upload {
        kind: Some(Kind::Status(done)),
    })?;
    ensure!(reply.status == 200, "flow status answered {}", reply.status);
    Ok(())
}

/// Reads the task stream until a task arrives (a hunt's, whose flow id the test does
/// not know yet).
pub fn next_task(agent: &mut RawAgent) -> Result<packhunt::protocol::pb::Task> {
    for _ in 0..16 {
        if let packhunt::protocol::pb::server_message::Kind::Task(task) = agent.next_message()? {
            return Ok(task);
        }
    }
    bail!("no task among the next 16 messages")
}

pub fn flow_dir(deployment: &Deployment, client: &str, flow: &str) -> PathBuf {
    deployment
        .datastore()
        .join("clients")
        .join(client)
        .join("collections")
        .join(flow)
}

/// Places a complete upload as the server stores one: `uploads/<stored>` and its
/// `uploads.jsonl` record. `write` fills the file; returns the record.
pub fn place_upload(
    deployment: &Deployment,
    client: &str,
    flow: &str,
    upload: u32,
    stored: &str,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<packhunt::datastore::uploads::UploadRecord> {
    let dir = flow_dir(deployment, client, flow);
    let path = dir.join("uploads").join(stored);
    std::fs::create_dir_all(path.parent().context("a parent")?)?;
    let mut hashing = Hashing {
        file: std::io::BufWriter::new(std::fs::File::create(&path)?),
        sha: Sha256::new(),
        size: 0,
    };
    write(&mut hashing)?;
    hashing.flush()?;
    let record = packhunt::datastore::uploads::UploadRecord {
        upload,
        artifact: "Generic.Collectors.File".into(),
        path: format!("/{stored}"),
        stored: stored.into(),
        size: hashing.size,
        sha256: hex::encode(hashing.sha.finalize()),
        error: None,
        expected_size: None,
        expected_sha256: None,
        time_ms: 1_700_000_000_000 + u64::from(upload),
    };
    let mut index = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("uploads.jsonl"))?;
    index.write_all(format!("{}\n", serde_json::to_string(&record)?).as_bytes())?;
    Ok(record)
}

struct Hashing {
    file: std::io::BufWriter<std::fs::File>,
    sha: Sha256,
    size: u64,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.sha.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Whether `python3` with its standard `zipfile` module is here.
pub fn python_zipfile() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import zipfile"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The entry names of the zip at `path` as Python's `zipfile` reads them, after it
/// checked every entry's CRC (`testzip`).
pub fn python_zip_names(path: &Path) -> Result<Vec<String>> {
    let script = "import sys, zipfile\n\
                  z = zipfile.ZipFile(sys.argv[1])\n\
                  bad = z.testzip()\n\
                  assert bad is None, 'bad CRC in ' + str(bad)\n\
                  print('\\n'.join(z.namelist()))";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()?;
    ensure!(
        out.status.success(),
        "python zipfile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .map(str::to_string)
        .collect())
}

/// Every entry of a zip (read with the zip crate) as name → bytes.
pub fn zip_entries(bytes: &[u8]) -> Result<std::collections::BTreeMap<String, Vec<u8>>> {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))?;
    let mut out = std::collections::BTreeMap::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i)?;
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        ensure!(
            out.insert(entry.name().to_string(), data).is_none(),
            "entry {} twice",
            entry.name()
        );
    }
    Ok(out)
}
