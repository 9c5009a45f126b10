//! Which role may make which call. Readers read; every change needs an administrator.

use http::Method;

use crate::api::routes::{ApiCall, ApiError};
use crate::config::Role;

/// Refuses `call` with 403 when its user's role may not make it.
pub fn check(call: &ApiCall) -> Result<(), ApiError> {
    if call.method != Method::GET && call.principal.role != Role::Administrator {
        return Err(ApiError::Forbidden(format!(
            "user `{}` may only read",
            call.principal.user
        )));
    }
    Ok(())
}
