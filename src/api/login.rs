//! `/api/v1/session`: log in (POST), who am I (GET), log out (DELETE) — the GUI's
//! browser sessions (docs/gui/sessions.md). Reached without credentials: a login is how
//! a browser gets them.

use std::time::Instant;

use bytes::Bytes;
use http::{header, Method, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::api::auth::{self, PeerAddress};
use crate::api::request_checks;
use crate::api::routes::{json_response, read_body_capped, ApiError, ApiResult};
use crate::api::{ApiBody, ApiCtx};
use crate::limits::MAX_LOGIN_BODY_BYTES;
use crate::metrics::metrics;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    user: String,
    password: String,
}

/// Answers a request for `/api/v1/session`.
pub async fn route(ctx: &ApiCtx, req: hyper::Request<Incoming>) -> ApiResult {
    match *req.method() {
        Method::POST => log_in(ctx, req).await,
        Method::GET => current(ctx, &req),
        Method::DELETE => log_out(ctx, &req),
        ref other => Err(ApiError::NotFound(format!(
            "no route for {other} /api/v1/session (POST logs in, GET shows, DELETE logs out)"
        ))),
    }
}

async fn log_in(ctx: &ApiCtx, req: hyper::Request<Incoming>) -> ApiResult {
    // No session yet, so no CSRF token: the JSON body (no cross-site form can send one
    // without a preflight) and, when a browser sends it, the Origin keep other sites
    // from logging a browser into an account of theirs.
    let own = auth::own_origin(ctx, &req);
    request_checks::check_origin(req.headers(), &own, false).map_err(auth::refused)?;
    request_checks::check_json_body(req.headers(), true).map_err(auth::refused)?;
    let from = req.extensions().get::<PeerAddress>().map(|p| p.0);
    let replaced: Vec<String> = request_checks::session_cookies(req.headers())
        .map(str::to_string)
        .collect();
    let body = read_body_capped(req, MAX_LOGIN_BODY_BYTES).await?;
    let body: LoginBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("body: {e} (expected {{\"user\",\"password\"}})"))
    })?;
    let principal = match ctx.auth.verify(&body.user, &body.password, from).await {
        Ok(principal) => principal,
        Err(refusal) => {
            crate::api::audit::login_failed(ctx, &body.user, from, &refusal);
            return Err(refusal.into());
        }
    };
    crate::api::audit::session(ctx, crate::audit::action::LOGIN, &principal.user, from);
    // A browser logging in again gets a new token; the one it held ends.
    for token in &replaced {
        ctx.auth.sessions.close(token);
    }
    let (token, session) = ctx.auth.sessions.open(&principal, Instant::now());
    metrics()
        .gui_logins
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut response = json_response(StatusCode::OK, &session.to_json());
    response.headers_mut().insert(
        header::SET_COOKIE,
        request_checks::session_cookie(&token, &session),
    );
    Ok(response)
}

fn current(ctx: &ApiCtx, req: &hyper::Request<Incoming>) -> ApiResult {
    let (_, session) = auth::session_of(ctx, req.headers()).ok_or(ApiError::Unauthorized)?;
    Ok(json_response(StatusCode::OK, &session.to_json()))
}

/// Forgets the session and clears the cookie. Without a live session there is nothing
/// to forge, so the answer is the same 204; with one, the request must pass the checks
/// of any other change (a hostile page cannot log the analyst out).
fn log_out(ctx: &ApiCtx, req: &hyper::Request<Incoming>) -> ApiResult {
    if let Some((token, session)) = auth::session_of(ctx, req.headers()) {
        let own = auth::own_origin(ctx, req);
        let has_body = auth::has_body(req);
        request_checks::check_cookie_request(req.method(), req.headers(), has_body, &session, &own)
            .map_err(auth::refused)?;
        ctx.auth.sessions.close(token);
        let from = req.extensions().get::<PeerAddress>().map(|p| p.0);
        let user = session.principal().user;
        crate::api::audit::session(ctx, crate::audit::action::LOGOUT, &user, from);
    }
    Ok(hyper::Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(header::SET_COOKIE, request_checks::cleared_cookie())
        .header(header::CACHE_CONTROL, "no-store")
        .body(ApiBody::whole(Bytes::new()))
        .expect("static response parts are valid"))
}
