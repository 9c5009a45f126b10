//! `/api/v1/events/client_table`: read and replace the client event table (shapes in
//! docs/architecture.md, "API shapes"). The table's meaning and storage are `events/`;
//! this file only maps HTTP onto it.

use http::StatusCode;
use serde_json::json;

use super::routes::{json_response, ApiError, ApiResult};
use super::ApiCtx;
use crate::events::{EventTable, EventTableError, TableStore};

/// Where the API gets the table from.
pub enum EventTableSource {
    /// The master, with the table loaded.
    Ready(TableStore),
    /// The master, whose stored table could not be loaded: requests answer 503 with the
    /// reason until an operator fixes or removes the file and restarts.
    Unusable(EventTableError),
    /// A minion: it serves no API.
    NotServed,
}

impl From<EventTableError> for ApiError {
    fn from(e: EventTableError) -> Self {
        match e {
            EventTableError::Datastore(e) => ApiError::Datastore(e),
            e if e.is_caller_fault() => ApiError::BadRequest(e.to_string()),
            e => ApiError::Unavailable(e.to_string()),
        }
    }
}

fn store(ctx: &ApiCtx) -> Result<&TableStore, ApiError> {
    match &ctx.event_table {
        EventTableSource::Ready(store) => Ok(store),
        EventTableSource::Unusable(e) => Err(ApiError::Unavailable(e.to_string())),
        EventTableSource::NotServed => Err(ApiError::NotFound(
            "the client event table is served by the master".into(),
        )),
    }
}

/// `GET`: `{"version":N,"all":[…],"by_label":{…}}`.
pub fn get(ctx: &ApiCtx) -> ApiResult {
    let current = store(ctx)?.current();
    let body = serde_json::to_value(&*current).expect("event tables serialise");
    Ok(json_response(StatusCode::OK, &body))
}

/// `PUT`: replaces the table, then hands it to this frontend's agents and tells the
/// minions; `{"version":N}`. Parsed in full before anything is written,
/// so a refused table leaves the version unchanged.
pub async fn put(ctx: &ApiCtx, body: &[u8]) -> ApiResult {
    let store = store(ctx)?;
    let table = EventTable::parse(body)?;
    let current = store.replace(table).await?;
    // Durable before anyone hears of it; the hand-off to agents runs on its own.
    ctx.fleet
        .event_table_changed(std::sync::Arc::new(current.to_wire()));
    Ok(json_response(
        StatusCode::OK,
        &json!({ "version": current.version.get() }),
    ))
}
