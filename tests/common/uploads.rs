//! File uploads in tests: flows that may upload (written through `packhunt::datastore`,
//! as the API writes them), FileChunk frames, a sender that follows the server's
//! `next_seq`, and downloads that keep the answer's headers.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use packhunt::datastore::{ArtifactName, ArtifactRequestDoc, Datastore, FlowRequest};
use packhunt::ids::{ClientId, FlowId};
use packhunt::limits::FlowLimits;
use packhunt::protocol::pb::{self, upload::Kind};
use serde_json::Value;
use sha2::Digest;

use super::{Api, Deployment, RawAgent};

pub const GLOB: &str = "Generic.Files.Glob";

/// Schedules a `Generic.Files.Glob` collection with `upload: true` for `client`, written
/// the way the API writes one (request.json, status.json, the task queue entry).
pub fn upload_flow(d: &Deployment, client: &str, limits: FlowLimits) -> Result<String> {
    upload_flow_at(&d.datastore(), client, limits)
}

/// [`upload_flow`] on the datastore at `datastore` (one moved by the test's config).
pub fn upload_flow_at(datastore: &Path, client: &str, limits: FlowLimits) -> Result<String> {
    let mut parameters = BTreeMap::new();
    parameters.insert("pattern".to_string(), "/tmp/*".to_string());
    parameters.insert("upload".to_string(), "true".to_string());
    parameters.insert("hash".to_string(), "false".to_string());
    scheduled_flow(datastore, client, parameters, limits)
}

/// Schedules a `Generic.Files.Glob` collection with `parameters` for `client`.
pub fn scheduled_flow(
    datastore: &Path,
    client: &str,
    parameters: BTreeMap<String, String>,
    limits: FlowLimits,
) -> Result<String> {
    let ds = Datastore::open(datastore.to_path_buf(), true)?;
    let client = ds.client(&ClientId::parse(client)?);
    let now_us = packhunt::clock::now_us();
    let request = FlowRequest {
        flow_id: FlowId::random(),
        client_id: client.id().clone(),
        artifacts: vec![ArtifactRequestDoc {
            name: ArtifactName::parse(GLOB)?,
            parameters,
        }],
        create_time_ms: now_us / 1000,
        create_time_us: now_us,
        hunt_id: None,
        limits,
    };
    packhunt::datastore::write_scheduled(&client, &request)?;
    packhunt::datastore::sync_scheduled(&client, &request.flow_id)?;
    Ok(request.flow_id.to_string())
}

/// One chunk of `whole` (the file as the agent has it): `data[offset..offset+len]`,
/// announcing `whole`'s size and SHA-256.
pub fn chunk(
    flow: &str,
    upload: u32,
    path: &str,
    whole: &[u8],
    offset: usize,
    len: usize,
) -> pb::Upload {
    announced_chunk(flow, upload, path, whole, offset, len, &sha256(whole))
}

/// A chunk announcing the SHA-256 `announced` (which may be wrong on purpose).
pub fn announced_chunk(
    flow: &str,
    upload: u32,
    path: &str,
    whole: &[u8],
    offset: usize,
    len: usize,
    announced: &[u8],
) -> pb::Upload {
    let end = (offset + len).min(whole.len());
    pb::Upload {
        kind: Some(Kind::File(pb::FileChunk {
            flow_id: flow.into(),
            path: path.into(),
            offset: offset as u64,
            data: Bytes::copy_from_slice(&whole[offset..end]),
            eof: end == whole.len(),
            upload,
            artifact: GLOB.into(),
            size: whole.len() as u64,
            sha256: Bytes::copy_from_slice(announced),
        })),
    }
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    sha2::Sha256::digest(data).to_vec()
}

/// The ack's status and next_seq of a 200 answer; fails on anything else.
pub fn acked(reply: &packhunt::agent::comms::UploadReply) -> Result<(pb::upload_ack::Status, u64)> {
    if reply.status != 200 {
        bail!("upload answered {}: {reply:?}", reply.status);
    }
    let ack = reply.ack.as_ref().context("an ack")?;
    let status = pb::upload_ack::Status::try_from(ack.status).context("ack status")?;
    Ok((status, ack.next_seq))
}

/// Sends `whole` as upload `n` from `from`, in chunks of `chunk_bytes`, each from where
/// the server said it stands; returns the chunks sent.
pub fn send_file(
    agent: &mut RawAgent,
    flow: &str,
    upload: u32,
    path: &str,
    whole: &[u8],
    from: usize,
    chunk_bytes: usize,
) -> Result<usize> {
    let mut offset = from;
    let mut sent = 0;
    loop {
        let reply = agent.upload(&chunk(flow, upload, path, whole, offset, chunk_bytes))?;
        let (status, next) = acked(&reply)?;
        sent += 1;
        anyhow::ensure!(sent < 100_000, "no end to the upload");
        if next as usize >= whole.len() && status != pb::upload_ack::Status::OutOfOrder {
            return Ok(sent);
        }
        offset = next as usize;
    }
}

/// A GET with optional `Range`, returning status, headers and body.
pub fn download(
    api: &Api,
    path: &str,
    range: Option<&str>,
) -> Result<(u16, http::HeaderMap, Vec<u8>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let target = api.target()?;
    rt.block_on(async {
        let exchange = async {
            let mut send = super::api_client::connect_http1::<Full<Bytes>>(&target).await?;
            let mut req = hyper::Request::builder()
                .method("GET")
                .uri(path)
                .header("host", &target.host);
            if let Some(auth) = target.authorization() {
                req = req.header("authorization", auth);
            }
            if let Some(range) = range {
                req = req.header("range", range);
            }
            send.ready().await?;
            let resp = send
                .send_request(req.body(Full::new(Bytes::new()))?)
                .await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await?.to_bytes().to_vec();
            anyhow::Ok((status, headers, body))
        };
        tokio::time::timeout(Duration::from_secs(60), exchange)
            .await
            .context("download: no answer within 60 s")?
    })
}

/// `GET .../uploads` of a flow: the index page.
pub fn list_uploads(api: &Api, client: &str, flow: &str) -> Result<Value> {
    let (status, body) = api.get(&format!(
        "/api/v1/clients/{client}/collections/{flow}/uploads"
    ))?;
    anyhow::ensure!(status == 200, "uploads list answered {status}: {body}");
    Ok(body)
}

/// Tells the server the flow is done (`FlowStatus`), with `limit_hit`.
pub fn finish(agent: &mut RawAgent, flow: &str, limit_hit: &str) -> Result<u16> {
    let done = pb::FlowStatus {
        flow_id: flow.into(),
        limit_hit: limit_hit.into(),
        ..Default::default()
    };
    Ok(agent
        .upload(&pb::Upload {
            kind: Some(Kind::Status(done)),
        })?
        .status)
}

/// Random-looking but reproducible bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
