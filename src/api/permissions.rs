//! Which role may make which call: the permission table, as data. `check` reads it for
//! every authenticated call (HTTP/JSON and gRPC alike, through `routes::route`);
//! docs/security/roles.md shows it (a unit test fails when the doc is stale), and a test
//! reads the router's source to check that every route it serves has a row here.
//!
//! Readers read. Investigators also collect, cancel, hunt and label. Administrators may
//! do everything, and only they manage users, the client event table, sinks and the
//! audit trail. A call the table does not know is not refused here: the router answers
//! it (404), so an unknown route never looks like a forbidden one.

use http::Method;

use crate::api::routes::{ApiCall, ApiError};
use crate::config::Role;

/// An HTTP method the API routes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Put,
    Delete,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Put => "PUT",
            Verb::Delete => "DELETE",
        }
    }

    fn matches(self, method: &Method) -> bool {
        method.as_str() == self.as_str()
    }
}

/// One row of the table: calls of `verb` on paths matching `pattern` need `least`
/// (or a role above it).
#[derive(Debug, Clone, Copy)]
pub struct Permission {
    pub verb: Verb,
    /// `/api/v1/clients/{client}/labels`: `{...}` stands for any one path segment.
    pub pattern: &'static str,
    pub least: Role,
    /// What the call does, for the docs.
    pub what: &'static str,
}

use Role::{Administrator as A, Investigator as I, Reader as R};
use Verb::{Delete, Get, Post, Put};

const fn p(verb: Verb, pattern: &'static str, least: Role, what: &'static str) -> Permission {
    Permission {
        verb,
        pattern,
        least,
        what,
    }
}

/// Every route the API serves and the least role that may call it.
#[rustfmt::skip]
pub const TABLE: &[Permission] = &[
    p(Get, "/metrics", R, "Prometheus metrics"),
    p(Get, "/api/v1/artifacts", R, "the artifact catalogue"),
    p(Get, "/api/v1/frontends", R, "frontends and their figures"),
    p(Get, "/api/v1/clients", R, "list and search clients"),
    p(Get, "/api/v1/clients/{client}", R, "one client"),
    p(Post, "/api/v1/clients/{client}/labels", I, "add or remove labels"),
    p(Get, "/api/v1/clients/{client}/collections", R, "a client's collections"),
    p(Post, "/api/v1/clients/{client}/collections", I, "start a collection"),
    p(Get, "/api/v1/clients/{client}/collections/{flow}", R, "a collection's status"),
    p(Post, "/api/v1/clients/{client}/collections/{flow}/cancel", I, "cancel a collection"),
    p(Get, "/api/v1/clients/{client}/collections/{flow}/results", R, "a collection's rows or a download"),
    p(Get, "/api/v1/clients/{client}/collections/{flow}/export.zip", R, "a collection as a zip"),
    p(Get, "/api/v1/clients/{client}/collections/{flow}/uploads", R, "a collection's uploaded files"),
    p(Get, "/api/v1/clients/{client}/collections/{flow}/uploads/{n}", R, "download an uploaded file"),
    p(Get, "/api/v1/clients/{client}/monitoring", R, "a client's event artifacts"),
    p(Get, "/api/v1/clients/{client}/monitoring/{artifact}", R, "a client's event rows"),
    p(Get, "/api/v1/hunts", R, "list hunts"),
    p(Post, "/api/v1/hunts", I, "create a hunt"),
    p(Get, "/api/v1/hunts/{hunt}", R, "one hunt"),
    p(Post, "/api/v1/hunts/{hunt}/start", I, "start a hunt"),
    p(Post, "/api/v1/hunts/{hunt}/stop", I, "stop a hunt"),
    p(Get, "/api/v1/hunts/{hunt}/results", R, "a hunt's rows"),
    p(Get, "/api/v1/hunts/{hunt}/export.zip", R, "a hunt as a zip"),
    p(Get, "/api/v1/events/client_table", R, "the client event table"),
    p(Put, "/api/v1/events/client_table", A, "replace the client event table"),
    p(Get, "/api/v1/events/watch", R, "watch client events live"),
    p(Get, "/api/v1/live/dashboard", R, "the dashboard's live figures"),
    p(Get, "/api/v1/live/hunts", R, "hunts' live progress"),
    p(Get, "/api/v1/live/hunts/{hunt}", R, "one hunt's live progress"),
    p(Get, "/api/v1/live/clients/{client}/collections/{flow}", R, "a collection's live progress"),
    p(Get, "/api/v1/users", A, "list users and their roles"),
    p(Post, "/api/v1/users", A, "add a user"),
    p(Put, "/api/v1/users/{name}", A, "change a user's role or password"),
    p(Delete, "/api/v1/users/{name}", A, "remove a user"),
    p(Get, "/api/v1/audit", A, "read the audit trail"),
];

/// The row for `method` on `path`, if the table has one.
pub fn lookup(method: &Method, path: &str) -> Option<&'static Permission> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    TABLE
        .iter()
        .find(|row| row.verb.matches(method) && pattern_matches(row.pattern, &segments))
}

/// Refuses `call` with 403 when its user's role is below the table's for it.
pub fn check(call: &ApiCall) -> Result<(), ApiError> {
    let Some(row) = lookup(&call.method, &call.path) else {
        return Ok(());
    };
    let (user, role) = (&call.principal.user, call.principal.role);
    if role >= row.least {
        return Ok(());
    }
    crate::metrics::metrics()
        .users_permission_refusals
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Err(ApiError::Forbidden(match role {
        Role::Reader => format!("user `{user}` may only read"),
        _ => format!(
            "user `{user}` is {role}: {} {} needs the role {}",
            row.verb.as_str(),
            row.pattern,
            row.least
        ),
    }))
}

fn pattern_matches(pattern: &str, segments: &[&str]) -> bool {
    let parts: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    parts.len() == segments.len()
        && parts
            .iter()
            .zip(segments)
            .all(|(part, segment)| is_placeholder(part) || part == segment)
}

fn is_placeholder(part: &str) -> bool {
    part.starts_with('{') && part.ends_with('}')
}

/// The table as a Markdown table (docs/security/roles.md holds this text).
pub fn markdown_table() -> String {
    let mark = |row: &Permission, role: Role| if role >= row.least { "yes" } else { "—" };
    let mut out = String::from(
        "| method | route | what | administrator | investigator | reader |\n\
         |---|---|---|---|---|---|\n",
    );
    for row in TABLE {
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} | {} |\n",
            row.verb.as_str(),
            row.pattern,
            row.what,
            mark(row, Role::Administrator),
            mark(row, Role::Investigator),
            mark(row, Role::Reader),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    //! Goal: the table covers every route the router serves and nothing else, the rules
    //! of the contract hold row by row, and the doc shows the table as it is.
    //! Method: the router's match arms read from its source; the doc read from disk.
    use super::*;

    /// `(METHOD, pattern)` of every arm of `route_to_handler`, placeholders as `{}`.
    fn router_routes() -> Vec<(String, String)> {
        let source = include_str!("routes.rs");
        let start = source
            .find("async fn route_to_handler")
            .expect("routes.rs has route_to_handler");
        let body = &source[start..];
        let body = &body[..body.find("\n}\n").expect("the function ends")];
        let mut routes = Vec::new();
        for arm in body.split("(&Method::").skip(1) {
            let method = &arm[..arm.find(',').expect("a method then a comma")];
            let list = &arm[arm.find('[').expect("a slice pattern") + 1..];
            let list = &list[..list.find(']').expect("the pattern ends")];
            let path: Vec<String> = list
                .split(',')
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(|s| match s.strip_prefix('"') {
                    Some(literal) => literal.trim_end_matches('"').to_string(),
                    None => "{}".to_string(),
                })
                .collect();
            routes.push((method.to_string(), format!("/{}", path.join("/"))));
        }
        routes.sort();
        routes.dedup();
        routes
    }

    fn table_routes() -> Vec<(String, String)> {
        let mut routes: Vec<(String, String)> = TABLE
            .iter()
            .map(|row| {
                let path: Vec<&str> = row
                    .pattern
                    .trim_matches('/')
                    .split('/')
                    .map(|part| if is_placeholder(part) { "{}" } else { part })
                    .collect();
                (
                    row.verb.as_str().to_string(),
                    format!("/{}", path.join("/")),
                )
            })
            .collect();
        routes.sort();
        routes
    }

    #[test]
    fn the_table_has_a_row_for_every_route_the_router_serves() {
        let router = router_routes();
        assert!(router.len() > 20, "the parse found the routes: {router:?}");
        let table = table_routes();
        let missing: Vec<_> = router.iter().filter(|r| !table.contains(r)).collect();
        assert!(
            missing.is_empty(),
            "routes without a permission row: {missing:?}"
        );
        let mut unique = table.clone();
        unique.dedup();
        assert_eq!(unique.len(), table.len(), "a route has two rows");
        let extra: Vec<_> = table.iter().filter(|r| !router.contains(r)).collect();
        assert!(extra.is_empty(), "rows for routes nobody serves: {extra:?}");
    }

    #[test]
    fn readers_only_read_and_changes_need_more() {
        for row in TABLE {
            match row.verb {
                Verb::Get => {}
                _ => assert!(row.least > Role::Reader, "{row:?}"),
            }
            let admin_only = ["/api/v1/users", "/api/v1/audit", "/api/v1/sinks"]
                .iter()
                .any(|prefix| row.pattern.starts_with(prefix))
                || row.pattern == "/api/v1/events/client_table" && row.verb == Verb::Put;
            assert_eq!(admin_only, row.least == Role::Administrator, "{row:?}");
        }
    }

    #[test]
    fn lookup_matches_segments_and_leaves_unknown_routes_alone() {
        let row = lookup(&Method::POST, "/api/v1/clients/C.1/collections/F.2/cancel");
        assert_eq!(row.map(|r| r.least), Some(Role::Investigator));
        let row = lookup(&Method::DELETE, "/api/v1/users/ana");
        assert_eq!(row.map(|r| r.least), Some(Role::Administrator));
        assert!(lookup(&Method::DELETE, "/api/v1/clients").is_none());
        assert!(lookup(&Method::POST, "/api/v1/nothing/here").is_none());
        assert!(lookup(&Method::GET, "/api/v1/clients/C.1/extra/x/y/z").is_none());
    }

    #[test]
    fn the_doc_shows_the_table() {
        let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/security/roles.md");
        let doc = std::fs::read_to_string(doc_path).expect("docs/security/roles.md");
        let table = markdown_table();
        assert!(
            doc.contains(&table),
            "docs/security/roles.md does not show the permission table as the code has \
             it; paste this in:\n\n{table}"
        );
    }
}
