//! The users API (administrators only, by the permission table): list, add, change and
//! remove the users of the master's config file, with the checks and the in-place edit
//! of `packhunt user` (`config::users`). Hashing and the file's edit run on the blocking
//! pool; once the file is written the master's Authenticator re-reads it before the
//! answer, so the change holds from the answer on (sessions of a removed user, or of one
//! whose password or role changed, have ended by then).

use std::sync::atomic::Ordering;

use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::api::routes::{json_response, shown, ApiCall, ApiError, ApiResult};
use crate::api::ApiCtx;
use crate::config::users::{self, UserChange, UserError};
use crate::metrics::metrics;
use crate::runtime::offload::offload;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    role: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserUpdate {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// `GET /api/v1/users`: `{"items":[{"name","role"}]}`, as the file holds them now.
pub async fn list(ctx: &ApiCtx) -> ApiResult {
    let path = ctx.config.path.clone();
    let users = offload(move || users::load_users(&path))
        .await
        .map_err(refused)?;
    let items: Vec<_> = users
        .iter()
        .map(|u| json!({ "name": u.name, "role": u.role }))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "items": items })))
}

/// `POST /api/v1/users` `{"name","role","password"}`.
pub async fn add(ctx: &ApiCtx, call: &ApiCall) -> ApiResult {
    let body: NewUser = parse_body(&call.body)?;
    let checked = users::check_name(&body.name)
        .and_then(|_| users::check_password(&body.password))
        .and_then(|_| users::parse_role(&body.role));
    let role = checked.map_err(refused)?;
    let password_hash = hash(body.password).await;
    let change = UserChange::Add {
        name: body.name,
        role,
        password_hash,
    };
    apply(ctx, call, change).await
}

/// `PUT /api/v1/users/{name}` `{"role"?, "password"?}`.
pub async fn update(ctx: &ApiCtx, call: &ApiCall, name: &str) -> ApiResult {
    let body: UserUpdate = parse_body(&call.body)?;
    let role = match &body.role {
        Some(role) => Some(users::parse_role(role).map_err(refused)?),
        None => None,
    };
    let password_hash = match body.password {
        Some(password) => {
            users::check_password(&password).map_err(refused)?;
            Some(hash(password).await)
        }
        None => None,
    };
    let change = UserChange::Update {
        name: name.to_string(),
        role,
        password_hash,
    };
    apply(ctx, call, change).await
}

/// `DELETE /api/v1/users/{name}`.
pub async fn remove(ctx: &ApiCtx, call: &ApiCall, name: &str) -> ApiResult {
    let change = UserChange::Remove {
        name: name.to_string(),
    };
    apply(ctx, call, change).await
}

/// Writes `change` to the config file, then has the Authenticator take it.
async fn apply(ctx: &ApiCtx, call: &ApiCall, change: UserChange) -> ApiResult {
    let path = ctx.config.path.clone();
    let written = offload({
        let change = change.clone();
        move || users::apply(&path, &change)
    })
    .await;
    written.map_err(refused)?;
    ctx.auth.reload_users_now().await;
    metrics().users_changes.fetch_add(1, Ordering::Relaxed);
    // The route's audit hook records the change (api/audit.rs); this is the log's line.
    tracing::info!(
        "user `{}` changed user `{}` through the API",
        call.principal.user,
        change.name()
    );
    let answer = match change {
        UserChange::Remove { name } => json!({ "name": name, "removed": true }),
        UserChange::Add { name, role, .. } => json!({ "name": name, "role": role }),
        UserChange::Update { name, .. } => json!({ "name": name }),
    };
    Ok(json_response(StatusCode::OK, &answer))
}

/// An argon2 hash of `password`, made on the blocking pool.
async fn hash(password: String) -> String {
    offload(move || crate::config::generate::hash_password(&password)).await
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        metrics()
            .users_changes_refused
            .fetch_add(1, Ordering::Relaxed);
        ApiError::BadRequest(format!("body: {}", shown(&e.to_string())))
    })
}

/// The status that says whose fault a refused or failed change was.
fn refused(e: UserError) -> ApiError {
    metrics()
        .users_changes_refused
        .fetch_add(1, Ordering::Relaxed);
    match e {
        UserError::Duplicate(_) | UserError::LastAdministrator(_) | UserError::TooManyUsers => {
            ApiError::Conflict(e.to_string())
        }
        UserError::UnknownUser(_) => ApiError::NotFound(e.to_string()),
        UserError::BadName { .. }
        | UserError::UnknownRole(_)
        | UserError::PasswordTooShort
        | UserError::PasswordTooLong
        | UserError::PasswordNotText
        | UserError::NothingToChange => ApiError::BadRequest(e.to_string()),
        UserError::Config(e) => {
            tracing::error!("users: {e}");
            ApiError::Internal(format!("the users cannot be read or changed: {e}"))
        }
    }
}
