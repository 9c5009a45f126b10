//! `POST .../collections/{flow}/cancel`.

use crate::api::routes::{ApiError, ApiResult};
use crate::api::ApiCtx;
use crate::ids::{ClientId, FlowId};

pub async fn collection(_ctx: &ApiCtx, _client: ClientId, _flow: FlowId) -> ApiResult {
    Err(ApiError::NotFound("cancel is not served yet".into()))
}
