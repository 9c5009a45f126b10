//! `GET .../collections/{flow}/uploads` (the index) and `GET .../uploads/{n}` (one file,
//! with Range). Only files listed in the flow's `uploads.jsonl` are served: a file still
//! arriving is in `uploading/`, which nothing here reads.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::Ordering;

use http::{header, HeaderValue, StatusCode};
use serde_json::json;

use crate::api::routes::{json_response, parse_number, ApiError, ApiResult};
use crate::api::stream::{streamed, BodyWriter};
use crate::api::ApiCtx;
use crate::datastore::uploads::{self, UploadRecord};
use crate::datastore::{self, sanitise_upload_path, Datastore};
use crate::ids::{ClientId, FlowId};
use crate::limits::{DEFAULT_RESULT_PAGE_ROWS, DOWNLOAD_READ_BUFFER_BYTES, MAX_RESULT_PAGE_ROWS};
use crate::metrics::metrics;
use crate::runtime::offload::offload;

/// `{"total":N,"start_row":S,"items":[<UploadRecord>…]}`; 404 for an unknown flow.
pub async fn list(
    ctx: &ApiCtx,
    client: ClientId,
    flow: FlowId,
    query: &BTreeMap<String, String>,
) -> ApiResult {
    let start_row = parse_number(query, "start_row", 0)?;
    let rows = parse_number(query, "rows", DEFAULT_RESULT_PAGE_ROWS)?.min(MAX_RESULT_PAGE_ROWS);
    let ds = ctx.datastore.clone();
    let (total, items) = offload(move || {
        let dir = known_flow(&ds, &client, &flow)?;
        Ok::<_, ApiError>(uploads::read_index(&dir, start_row, rows)?)
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "total": total, "start_row": start_row, "items": items }),
    ))
}

/// The bytes of upload `n` (the agent's number), whole or one range of them.
pub async fn download(
    ctx: &ApiCtx,
    client: ClientId,
    flow: FlowId,
    n: &str,
    headers: &http::HeaderMap,
) -> ApiResult {
    let upload: u32 = n
        .parse()
        .map_err(|_| ApiError::BadRequest("the upload number must be an integer".into()))?;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let ds = ctx.datastore.clone();
    let (record, file, size) = offload(move || open_upload(&ds, &client, &flow, upload)).await?;
    let filename = download_name(&record);
    let span = match range.as_deref().map(|r| parse_range(r, size)) {
        None | Some(RangeAnswer::Whole) => None,
        Some(RangeAnswer::Unsatisfiable) => {
            let mut response = json_response(
                StatusCode::RANGE_NOT_SATISFIABLE,
                &json!({ "error": format!("the range is outside the file's {size} bytes") }),
            );
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{size}"))?,
            );
            return Ok(response);
        }
        Some(RangeAnswer::Part { first, last }) => Some((first, last)),
    };
    let (start, len) = span.map_or((0, size), |(first, last)| (first, last - first + 1));
    let body = streamed("download", move |w| copy_span(file, start, len, w))?;
    let mut builder = hyper::Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::ETAG,
            header_value(&format!("\"{}\"", record.sha256))?,
        )
        .header(
            header::CONTENT_DISPOSITION,
            header_value(&format!("attachment; filename=\"{filename}\""))?,
        );
    builder = match span {
        Some((first, last)) => builder.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            header_value(&format!("bytes {first}-{last}/{size}"))?,
        ),
        None => builder.status(StatusCode::OK),
    };
    let response = builder
        .body(body)
        .map_err(|e| ApiError::BadRequest(format!("building the answer: {e}")))?;
    metrics().files_downloads.fetch_add(1, Ordering::Relaxed);
    Ok(response)
}

/// The flow's folder, if the flow exists (its request.json; 404 otherwise).
fn known_flow(
    ds: &Datastore,
    client: &ClientId,
    flow: &FlowId,
) -> Result<datastore::FlowDir, ApiError> {
    let dir = ds.client(client);
    match datastore::flow::queued_request(&dir, flow) {
        Ok(_) => Ok(dir.flow(flow)),
        Err(e) if e.is_not_found() => Err(ApiError::NotFound(format!(
            "client {client} has no collection {flow}"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The listed record of upload `n`, its file opened, and its size on disk.
fn open_upload(
    ds: &Datastore,
    client: &ClientId,
    flow: &FlowId,
    upload: u32,
) -> Result<(UploadRecord, File, u64), ApiError> {
    let dir = known_flow(ds, client, flow)?;
    let record = uploads::find_record(&dir, upload)?.ok_or_else(|| {
        ApiError::NotFound(format!("flow {flow} has no complete upload {upload}"))
    })?;
    let path = dir.stored_upload_path(&record.stored)?;
    let file = File::open(&path).map_err(|e| {
        ApiError::Datastore(datastore::DatastoreError::Io {
            op: "open upload",
            path: path.clone(),
            source: e,
        })
    })?;
    let size = file
        .metadata()
        .map_err(|e| {
            ApiError::Datastore(datastore::DatastoreError::Io {
                op: "stat upload",
                path,
                source: e,
            })
        })?
        .len();
    Ok((record, file, size))
}

/// The file name a browser saves the download as: the agent path's last component,
/// sanitised (letters, digits, `._-` only, so it needs no escaping in the header).
fn download_name(record: &UploadRecord) -> String {
    sanitise_upload_path(&record.path)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| format!("upload-{}", record.upload))
}

fn header_value(text: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(text).map_err(|_| ApiError::BadRequest("unencodable header".into()))
}

/// Copies `len` bytes from `start` of `file` to the response.
fn copy_span(mut file: File, start: u64, len: u64, w: &mut BodyWriter) -> io::Result<()> {
    file.seek(SeekFrom::Start(start))?;
    let mut buf = vec![0u8; DOWNLOAD_READ_BUFFER_BYTES];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            // The file is write-once: shorter than it was a moment ago means damage.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the stored file ended early",
            ));
        }
        io::Write::write_all(w, &buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// How to answer a `Range` header (RFC 9110 14.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeAnswer {
    /// Not one byte range we serve (several ranges, another unit, bad syntax): the
    /// whole file with 200, as RFC 9110 allows.
    Whole,
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
    /// 206; `first..=last` within the file.
    Part { first: u64, last: u64 },
}

fn parse_range(header: &str, size: u64) -> RangeAnswer {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Whole;
    };
    let spec = spec.trim();
    if spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeAnswer::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // `bytes=-n`: the last n bytes.
        (true, _, Some(suffix)) => {
            if suffix == 0 || size == 0 {
                return RangeAnswer::Unsatisfiable;
            }
            RangeAnswer::Part {
                first: size.saturating_sub(suffix),
                last: size - 1,
            }
        }
        (false, Some(first), None) if last.trim().is_empty() => match first < size {
            true => RangeAnswer::Part {
                first,
                last: size - 1,
            },
            false => RangeAnswer::Unsatisfiable,
        },
        (false, Some(first), Some(last)) if first <= last => match first < size {
            true => RangeAnswer::Part {
                first,
                last: last.min(size - 1),
            },
            false => RangeAnswer::Unsatisfiable,
        },
        _ => RangeAnswer::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeAnswer::*;
        let part = |first, last| Part { first, last };
        for (header, size, want) in [
            ("bytes=0-9", 100, part(0, 9)),
            ("bytes=90-", 100, part(90, 99)),
            ("bytes=-10", 100, part(90, 99)),
            ("bytes=-1000", 100, part(0, 99)),
            ("bytes=50-1000", 100, part(50, 99)),
            ("bytes=99-99", 100, part(99, 99)),
            ("bytes=100-", 100, Unsatisfiable),
            ("bytes=100-200", 100, Unsatisfiable),
            ("bytes=-0", 100, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=-5", 0, Unsatisfiable),
            ("bytes=0-1,5-6", 100, Whole),
            ("bytes=9-1", 100, Whole),
            ("items=0-1", 100, Whole),
            ("bytes=a-b", 100, Whole),
            ("bytes=-", 100, Whole),
            ("bytes=+1-2", 100, Whole),
        ] {
            assert_eq!(parse_range(header, size), want, "{header} of {size}");
        }
    }

    #[test]
    fn download_names_are_safe_basenames() {
        let record = |path: &str| UploadRecord {
            upload: 7,
            artifact: "Generic.Collectors.File".into(),
            path: path.into(),
            stored: "x".into(),
            size: 0,
            sha256: String::new(),
            error: None,
            time_ms: 0,
            expected_size: None,
            expected_sha256: None,
        };
        assert_eq!(download_name(&record("/var/log/a b\"c.log")), "a_b_c.log");
        assert_eq!(download_name(&record(r"C:\x\evil\r\n.exe")), "n.exe");
        assert_eq!(download_name(&record("..")), "upload-7");
    }
}
