//! Roles against a real master: every route of the permission table
//! (`packhunt::api::permissions::TABLE`) called as an administrator, an investigator and a
//! reader with HTTP Basic credentials. Where the table refuses the role the answer is 403;
//! where it allows it the answer is neither 403 nor 401 (made-up ids may well get 400 or
//! 404: permission comes before the handler). The router knows every row (no "no route"
//! 404 for an administrator), and a route the table does not know is the router's 404,
//! never a 403.

mod common;

use anyhow::Result;
use common::users::{call_as, Outcome};
use common::{Deployment, ADMIN_PASSWORD};
use packhunt::api::permissions::{Permission, TABLE};
use packhunt::config::Role;
use serde_json::{json, Value};

const INVESTIGATOR: (&str, &str) = ("ivan", "investigator-pw-1");
const READER: (&str, &str) = ("rita", "reader-pw-12345");
const ADMIN: (&str, &str) = ("admin", ADMIN_PASSWORD);

/// A user the table's user routes may add, change and remove.
const SAMPLE_USER: &str = "roles-sample";

fn deployment() -> Result<Deployment> {
    let mut deployment = Deployment::generate_with(|_| {})?;
    deployment.add_user(INVESTIGATOR.0, INVESTIGATOR.1, Role::Investigator)?;
    deployment.add_user(READER.0, READER.1, Role::Reader)?;
    deployment.start_frontend()?;
    Ok(deployment)
}

/// A path for `pattern` with made-up ids of the right shapes, and a body for the call.
fn sample(row: &Permission) -> (String, Option<Value>) {
    let path: Vec<&str> = row
        .pattern
        .split('/')
        .map(|part| match part {
            "{client}" => "C.0123456789abcdef",
            "{flow}" => "F.0123456789ABCDEF",
            "{hunt}" => "H.0123456789ABCDEF",
            "{n}" => "0",
            "{artifact}" => "Generic.Client.Stats",
            "{name}" => SAMPLE_USER,
            other => other,
        })
        .collect();
    let path = path.join("/");
    let body = match (row.verb.as_str(), row.pattern) {
        ("GET", _) | ("DELETE", _) => None,
        ("POST", "/api/v1/users") => Some(json!({
            "name": SAMPLE_USER, "role": "reader", "password": "sample-password-1"
        })),
        ("PUT", "/api/v1/users/{name}") => Some(json!({ "role": "investigator" })),
        _ => Some(json!({})),
    };
    (path, body)
}

/// Goal: each role gets exactly what the table gives it, on every route. Method: every
/// row called as each role, lower roles first (so an administrator's call that changes
/// something, e.g. adding the sample user, comes after the refusals).
#[test]
fn every_route_as_every_role() -> Result<()> {
    let deployment = deployment()?;
    let mut failures = Vec::new();
    for row in TABLE {
        let (path, body) = sample(row);
        for (role, who) in [
            (Role::Reader, READER),
            (Role::Investigator, INVESTIGATOR),
            (Role::Administrator, ADMIN),
        ] {
            let method = row.verb.as_str();
            let Outcome { status, error } =
                call_as(&deployment, who, method, &path, body.as_ref())?;
            let allowed = role >= row.least;
            let right = if allowed {
                status != 403 && status != 401
            } else {
                status == 403
            };
            if !right {
                failures.push(format!(
                    "{method} {path} as {role}: {status} {error} (expected {})",
                    if allowed { "allowed" } else { "403" }
                ));
            }
            if !allowed && role == Role::Reader {
                assert!(error.contains("may only read"), "{method} {path}: {error}");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Goal: the table names no route the router does not serve, and an unknown route is a
/// 404 for everyone, not a 403. Method: each row as an administrator, whose answer must
/// not be the router's "no route"; unknown routes as a reader.
#[test]
fn the_router_serves_every_row_and_unknown_routes_are_404() -> Result<()> {
    let deployment = deployment()?;
    for row in TABLE {
        let (path, body) = sample(row);
        let method = row.verb.as_str();
        let outcome = call_as(&deployment, ADMIN, method, &path, body.as_ref())?;
        assert!(
            !(outcome.status == 404 && outcome.error.starts_with("no route")),
            "{method} {path}: the router does not know it: {outcome:?}"
        );
    }
    for (method, path) in [
        ("POST", "/api/v1/nothing/here"),
        ("DELETE", "/api/v1/clients"),
        ("PUT", "/api/v1/hunts"),
        ("GET", "/api/v1/users/admin/more"),
    ] {
        let outcome = call_as(&deployment, READER, method, path, Some(&json!({})))?;
        assert_eq!(outcome.status, 404, "{method} {path}: {outcome:?}");
    }
    Ok(())
}
