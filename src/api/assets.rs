//! `GET /` and `GET /assets/<path>`: the browser app's embedded files, served without
//! authentication (they hold no data; every API call they make is authenticated), with
//! an ETag so a browser revalidates with a 304 instead of downloading them again.
//!
//! Must not: serve anything outside `gui::assets`' table.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::json;

use crate::api::routes::{json_response, shown};
use crate::api::{ApiBody, ApiResponse};
use crate::gui::assets::{self, Asset};

/// The answer for an asset request, or None when `path` is not one (the API's routes
/// take it). A path under `/assets/` that names no asset is 404.
pub fn serve(method: &Method, path: &str, headers: &HeaderMap) -> Option<ApiResponse> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let asset = match path {
        "/" => assets::find(assets::INDEX_PATH),
        _ => match path.strip_prefix("/assets/") {
            Some(rest) => assets::find(rest),
            None => return None,
        },
    };
    Some(match asset {
        Some(asset) => respond(method, asset, headers),
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": format!("no asset {}", shown(path)) }),
        ),
    })
}

fn respond(method: &Method, asset: &'static Asset, headers: &HeaderMap) -> ApiResponse {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == asset.etag));
    let (status, body) = if fresh {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else if method == Method::HEAD {
        (StatusCode::OK, Bytes::new())
    } else {
        (StatusCode::OK, Bytes::from_static(asset.bytes))
    };
    let mut response = hyper::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, asset.content_type)
        // Revalidate every time: a new binary may carry new assets under the same name,
        // and a 304 costs one round trip on loopback or LAN.
        .header(header::CACHE_CONTROL, "no-cache")
        .body(ApiBody::whole(body))
        .expect("static response parts are valid");
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}
