//! Whole result sets as CSV or JSONL, and zip exports of a collection or a hunt, all
//! streamed (`api::stream`).

use std::collections::BTreeMap;

use crate::api::routes::{ApiError, ApiResult};
use crate::api::ApiCtx;
use crate::ids::{ClientId, FlowId};

/// `GET .../collections/{flow}/results?artifact=A&format=csv|jsonl`.
pub async fn results(
    _ctx: &ApiCtx,
    _client: ClientId,
    _flow: FlowId,
    _query: &BTreeMap<String, String>,
) -> ApiResult {
    Err(ApiError::NotFound(
        "result streaming is not served yet".into(),
    ))
}

/// `GET .../collections/{flow}/export.zip`.
pub async fn collection_zip(_ctx: &ApiCtx, _client: ClientId, _flow: FlowId) -> ApiResult {
    Err(ApiError::NotFound("exports are not served yet".into()))
}

/// `GET /api/v1/hunts/{id}/export.zip`.
pub async fn hunt_zip(_ctx: &ApiCtx, _id: &str) -> ApiResult {
    Err(ApiError::NotFound("exports are not served yet".into()))
}
