//! Whole result sets as CSV or JSONL, and zip exports of a collection or a hunt, all
//! streamed (`api::stream`): a thread of its own reads the datastore front to back and
//! writes the answer as it goes, so memory stays bounded whatever the size (the zip's
//! central directory, ~200 bytes per entry, is the only thing that grows; capped by
//! `MAX_EXPORT_ENTRIES_COUNT`). Layouts: docs/files/exports.md.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};

use http::{header, StatusCode};
use serde_json::json;
use zip::write::{SimpleFileOptions, StreamWriter};
use zip::{CompressionMethod, ZipWriter};

use crate::api::csv::Columns;
use crate::api::routes::{shown, ApiError, ApiResult};
use crate::api::stream::{streamed, BodyWriter};
use crate::api::{ApiBody, ApiCtx, ApiResponse};
use crate::datastore::rowstream::open_committed;
use crate::datastore::uploads::{read_index, UploadRecord};
use crate::datastore::{self, ArtifactName, Datastore, FlowDir, FlowRequest};
use crate::ids::{ClientId, FlowId, HuntId};
use crate::limits::{EXPORT_READ_BUFFER_BYTES, MAX_EXPORT_ENTRIES_COUNT};
use crate::metrics::metrics;
use crate::runtime::offload::offload;

/// `GET .../collections/{flow}/results?artifact=A&format=csv|jsonl`: the whole result
/// set. 400 for another format or an artifact the flow did not collect; 404 for an
/// unknown flow.
pub async fn results(
    ctx: &ApiCtx,
    client: ClientId,
    flow: FlowId,
    query: &BTreeMap<String, String>,
) -> ApiResult {
    let format = Format::parse(query.get("format").map(String::as_str))?;
    let wanted = query.get("artifact").cloned();
    let ds = ctx.datastore.clone();
    let (dir, artifact) = offload(move || {
        let client_dir = ds.client(&client);
        let request = datastore::flow::queued_request(&client_dir, &flow)?;
        let artifact = collected_artifact(&request, wanted.as_deref())?;
        Ok::<_, ApiError>((client_dir.flow(&flow), artifact))
    })
    .await?;
    let filename = format!("{}-{}.{}", dir.id(), artifact.as_str(), format.extension());
    let flows = vec![(dir.client_id().clone(), dir.id().clone())];
    let ds = ctx.datastore.clone();
    let body = counted("result set download", move |w| {
        let rows = RowSource {
            ds: &ds,
            flows: &flows,
            artifact: &artifact,
            tagged: false,
        };
        match format {
            Format::Jsonl => rows.write_jsonl(w),
            Format::Csv => rows.write_csv(w),
        }
    })?;
    Ok(attachment(format.content_type(), &filename, body))
}

/// `GET .../collections/{flow}/export.zip`: `request.json`, `status.json` (as
/// `GET .../collections/{flow}` shows it), `results/<artifact>.jsonl` and `.csv` for
/// every artifact requested, `uploads.jsonl` and `uploads/<stored path>` for every
/// complete upload.
pub async fn collection_zip(ctx: &ApiCtx, client: ClientId, flow: FlowId) -> ApiResult {
    let ds = ctx.datastore.clone();
    let (request, status) = offload(move || {
        let request = datastore::flow::queued_request(&ds.client(&client), &flow)?;
        let status = crate::api::routes::live_status(&ds, &client, &flow)?;
        Ok::<_, ApiError>((request, status))
    })
    .await?;
    let filename = format!("{}.zip", request.flow_id);
    let ds = ctx.datastore.clone();
    let body = counted("collection export", move |w| {
        let mut zip = Archive::new(w);
        zip.whole("request.json", &pretty(&request)?)?;
        zip.whole("status.json", &pretty(&status)?)?;
        let flows = vec![(request.client_id.clone(), request.flow_id.clone())];
        for a in &request.artifacts {
            let rows = RowSource {
                ds: &ds,
                flows: &flows,
                artifact: &a.name,
                tagged: false,
            };
            zip.results(&rows)?;
        }
        let dir = ds.client(&request.client_id).flow(&request.flow_id);
        zip.text("uploads.jsonl")?;
        write_upload_records(&dir, false, &mut zip.zip)?;
        zip.upload_files(&dir, "uploads")?;
        zip.finish()
    })?;
    Ok(attachment("application/zip", &filename, body))
}

/// `GET /api/v1/hunts/{id}/export.zip`: `hunt.json` (as `GET /api/v1/hunts/{id}` shows
/// it), `participants.jsonl` (each participant's client, flow and status.json), per
/// artifact `results/<artifact>.jsonl` (lines as the hunt's results pages show them:
/// `{"client_id","flow_id","row"}`) and `.csv` (columns `client_id`, `flow_id`, then the
/// rows' keys), `uploads.jsonl` (each record with its `client_id` and `flow_id`) and
/// `uploads/<client_id>/<stored path>`. Participants in recruitment order.
pub async fn hunt_zip(ctx: &ApiCtx, id: &str) -> ApiResult {
    let id = HuntId::parse(id)?;
    let hunts = ctx.hunts.as_deref().ok_or_else(|| {
        ApiError::Unavailable("hunts are not available on this frontend (see its log)".into())
    })?;
    let (doc, stats) = hunts
        .get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no hunt {id}")))?;
    let flows = hunts.participants(&id).unwrap_or_default();
    let hunt = crate::api::hunts::hunt_json(&doc, &stats);
    let filename = format!("{id}.zip");
    let ds = ctx.datastore.clone();
    let body = counted("hunt export", move |w| {
        let mut zip = Archive::new(w);
        zip.whole("hunt.json", &pretty(&hunt)?)?;
        zip.text("participants.jsonl")?;
        write_participants(&ds, &flows, &mut zip.zip)?;
        for a in &doc.artifacts {
            let rows = RowSource {
                ds: &ds,
                flows: &flows,
                artifact: &a.name,
                tagged: true,
            };
            zip.results(&rows)?;
        }
        zip.text("uploads.jsonl")?;
        for (client, flow) in &flows {
            write_upload_records(&ds.client(client).flow(flow), true, &mut zip.zip)?;
        }
        for (client, flow) in &flows {
            let dir = ds.client(client).flow(flow);
            zip.upload_files(&dir, &format!("uploads/{client}"))?;
        }
        zip.finish()
    })?;
    Ok(attachment("application/zip", &filename, body))
}

/// `streamed`, counted in the export metrics.
fn counted<F>(what: &'static str, work: F) -> Result<ApiBody, ApiError>
where
    F: FnOnce(&mut BodyWriter) -> io::Result<()> + Send + 'static,
{
    let body = streamed(what, move |w| {
        let result = work(w);
        if matches!(&result, Err(e) if e.kind() != io::ErrorKind::BrokenPipe) {
            metrics()
                .exports_failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        result
    })?;
    metrics()
        .exports_started
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(body)
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Csv,
    Jsonl,
}

impl Format {
    fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        match raw {
            Some("csv") => Ok(Self::Csv),
            Some("jsonl") => Ok(Self::Jsonl),
            other => Err(ApiError::BadRequest(format!(
                "format `{}` is not one of csv, jsonl",
                shown(other.unwrap_or(""))
            ))),
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8",
            Self::Jsonl => "application/x-ndjson",
        }
    }
}

/// The artifact asked for (the first requested one when none is), if the flow asked for it.
fn collected_artifact(
    request: &FlowRequest,
    wanted: Option<&str>,
) -> Result<ArtifactName, ApiError> {
    let found = match wanted {
        Some(name) => request.artifacts.iter().find(|a| a.name.as_str() == name),
        None => request.artifacts.first(),
    };
    found.map(|a| a.name.clone()).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "flow {} did not collect `{}`",
            request.flow_id,
            shown(wanted.unwrap_or(""))
        ))
    })
}

/// A streamed download: the type, a file name to save it under, the body.
fn attachment(content_type: &str, filename: &str, body: ApiBody) -> ApiResponse {
    hyper::Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        )
        .body(body)
        .expect("ids and artifact names are valid header text")
}

fn pretty(value: &impl serde::Serialize) -> io::Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    out.push(b'\n');
    Ok(out)
}

/// One artifact's rows over some flows, in order. `tagged`: a hunt's, each row with its
/// client and flow.
struct RowSource<'a> {
    ds: &'a Datastore,
    flows: &'a [(ClientId, FlowId)],
    artifact: &'a ArtifactName,
    tagged: bool,
}

impl RowSource<'_> {
    fn open(&self, i: usize) -> io::Result<datastore::rowstream::CommittedRows> {
        let (client, flow) = &self.flows[i];
        let paths = self
            .ds
            .client(client)
            .flow(flow)
            .result_paths(self.artifact);
        open_committed(&paths).map_err(io::Error::other)
    }

    /// JSONL: the stored rows as they are; tagged, each as `{"client_id","flow_id","row"}`.
    fn write_jsonl(&self, w: &mut impl Write) -> io::Result<()> {
        for (i, (client, flow)) in self.flows.iter().enumerate() {
            let mut rows = self.open(i)?;
            if !self.tagged {
                rows.copy_to(w)?;
                continue;
            }
            let prefix = format!("{{\"client_id\":\"{client}\",\"flow_id\":\"{flow}\",\"row\":");
            while let Some(row) = rows.next_row()? {
                w.write_all(prefix.as_bytes())?;
                w.write_all(row)?;
                w.write_all(b"}\n")?;
            }
        }
        Ok(())
    }

    /// CSV: a first pass collects the columns, the second writes the lines of the rows
    /// the first pass saw (a flow still in progress may have more by then).
    fn write_csv(&self, w: &mut impl Write) -> io::Result<()> {
        let leading: &[&str] = if self.tagged {
            &["client_id", "flow_id"]
        } else {
            &[]
        };
        let mut columns = Columns::new(leading);
        let mut seen = Vec::with_capacity(self.flows.len());
        for i in 0..self.flows.len() {
            let mut rows = self.open(i)?;
            let mut count = 0u64;
            while let Some(row) = rows.next_row()? {
                columns.observe(row);
                count += 1;
            }
            seen.push(count);
        }
        if columns.dropped_count() > 0 {
            tracing::info!(
                artifact = self.artifact.as_str(),
                "CSV export leaves out {} keys past its column cap",
                columns.dropped_count()
            );
        }
        let mut line = Vec::new();
        columns.header(&mut line);
        w.write_all(&line)?;
        for (i, (client, flow)) in self.flows.iter().enumerate() {
            let mut rows = self.open(i)?;
            let (client, flow) = (client.to_string(), flow.to_string());
            let leading: Vec<&str> = if self.tagged {
                vec![&client, &flow]
            } else {
                Vec::new()
            };
            for _ in 0..seen[i] {
                let Some(row) = rows.next_row()? else { break };
                line.clear();
                columns.line(&leading, row, &mut line);
                w.write_all(&line)?;
            }
        }
        Ok(())
    }
}

type ZipOut<'w> = ZipWriter<StreamWriter<&'w mut BodyWriter>>;

/// A zip written straight into the response: entries one after another, each file's
/// sizes and CRC in a data descriptor after its bytes (no seeking back), zip64 where a
/// size or offset needs it.
struct Archive<'w> {
    zip: ZipOut<'w>,
    entries_count: usize,
}

impl<'w> Archive<'w> {
    fn new(w: &'w mut BodyWriter) -> Self {
        Self {
            zip: ZipWriter::new_stream(w),
            entries_count: 0,
        }
    }

    fn start(&mut self, name: &str, options: SimpleFileOptions) -> io::Result<()> {
        if self.entries_count >= MAX_EXPORT_ENTRIES_COUNT {
            return Err(io::Error::other(format!(
                "the export would hold more than {MAX_EXPORT_ENTRIES_COUNT} entries"
            )));
        }
        self.entries_count += 1;
        self.zip.start_file(name, options).map_err(io::Error::other)
    }

    /// Starts a compressed text entry of a size not known yet (zip64 sizes, so it may
    /// pass 4 GiB).
    fn text(&mut self, name: &str) -> io::Result<()> {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .large_file(true);
        self.start(name, options)
    }

    fn whole(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.text(name)?;
        self.zip.write_all(bytes)
    }

    /// `results/<artifact>.jsonl` and `.csv`.
    fn results(&mut self, rows: &RowSource) -> io::Result<()> {
        let name = rows.artifact.as_str();
        self.text(&format!("results/{name}.jsonl"))?;
        rows.write_jsonl(&mut self.zip)?;
        self.text(&format!("results/{name}.csv"))?;
        rows.write_csv(&mut self.zip)
    }

    /// Every complete upload of `dir` as `<folder>/<stored path>`, stored as is.
    fn upload_files(&mut self, dir: &FlowDir, folder: &str) -> io::Result<()> {
        let (_, records) = read_index(dir, 0, u64::MAX).map_err(io::Error::other)?;
        for record in records {
            let path = dir
                .stored_upload_path(&record.stored)
                .map_err(io::Error::other)?;
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    tracing::warn!(path = %path.display(), "listed upload missing; not exported");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let size = file.metadata()?.len();
            let options = SimpleFileOptions::default()
                .compression_method(CompressionMethod::Stored)
                .large_file(size >= u64::from(u32::MAX));
            self.start(&format!("{folder}/{}", record.stored), options)?;
            let mut reader = BufReader::with_capacity(EXPORT_READ_BUFFER_BYTES, file.take(size));
            let copied = io::copy(&mut reader, &mut self.zip)?;
            if copied != size {
                return Err(io::Error::other(format!(
                    "{} shrank while exported",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    fn finish(self) -> io::Result<()> {
        self.zip.finish().map_err(io::Error::other)?;
        Ok(())
    }
}

/// The flow's `uploads.jsonl` records, one JSON line each; tagged with the client and
/// flow for a hunt.
fn write_upload_records(dir: &FlowDir, tagged: bool, w: &mut impl Write) -> io::Result<()> {
    let (_, records) = read_index(dir, 0, u64::MAX).map_err(io::Error::other)?;
    for record in records {
        let mut line = if tagged {
            let mut value = serde_json::to_value(&record).map_err(io::Error::other)?;
            value["client_id"] = json!(dir.client_id().as_str());
            value["flow_id"] = json!(dir.id().as_str());
            serde_json::to_vec(&value)
        } else {
            serde_json::to_vec::<UploadRecord>(&record)
        }
        .map_err(io::Error::other)?;
        line.push(b'\n');
        w.write_all(&line)?;
    }
    Ok(())
}

/// `{"client_id","flow_id","status"}` per participant (a recruit its agent has not
/// answered yet is scheduled); status null when unreadable.
fn write_participants(
    ds: &Datastore,
    flows: &[(ClientId, FlowId)],
    w: &mut impl Write,
) -> io::Result<()> {
    for (client, flow) in flows {
        let dir = ds.client(client);
        let status = datastore::read_status(&dir, flow).ok().or_else(|| {
            let request = datastore::flow::queued_request(&dir, flow).ok()?;
            Some(datastore::FlowStatusDoc::scheduled(&request))
        });
        let mut line = serde_json::to_vec(&json!({
            "client_id": client.as_str(),
            "flow_id": flow.as_str(),
            "status": status,
        }))
        .map_err(io::Error::other)?;
        line.push(b'\n');
        w.write_all(&line)?;
    }
    Ok(())
}
