//! `GET .../collections/{flow}/uploads` (the index) and `GET .../uploads/{n}` (one file,
//! with Range).

use std::collections::BTreeMap;

use crate::api::routes::{ApiError, ApiResult};
use crate::api::ApiCtx;
use crate::ids::{ClientId, FlowId};

pub async fn list(
    _ctx: &ApiCtx,
    _client: ClientId,
    _flow: FlowId,
    _query: &BTreeMap<String, String>,
) -> ApiResult {
    Err(ApiError::NotFound("uploads are not served yet".into()))
}

pub async fn download(
    _ctx: &ApiCtx,
    _client: ClientId,
    _flow: FlowId,
    _n: &str,
    _headers: &http::HeaderMap,
) -> ApiResult {
    Err(ApiError::NotFound("uploads are not served yet".into()))
}
