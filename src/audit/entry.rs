//! One audit entry and its line on disk: JSON, newline-terminated, at most
//! `MAX_AUDIT_LINE_BYTES` (a longer entry has its `detail`, then its longest other field,
//! cut and marked with [`TRUNCATION_MARKER`]).

use serde::{Deserialize, Serialize};

use crate::limits::MAX_AUDIT_LINE_BYTES;

/// One change, or one refused attempt at one. The field names are the contract of the
/// day files and of `GET /api/v1/audit` (docs/security/audit.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When it happened, ms since the Unix epoch; names the entry's day file.
    pub time_ms: u64,
    /// Who: the authenticated user, or the name tried by a failed login.
    pub user: String,
    /// The remote address of the connection, when known.
    #[serde(default)]
    pub remote: Option<String>,
    /// What carried it: one of [`via`].
    pub via: String,
    /// What was done: one of [`action`] (or `api.call` for a route without a name).
    pub action: String,
    /// What it was done to: a client id, `C.x/F.y`, a hunt id, a user name, ...
    pub target: String,
    /// How it ended: one of [`outcome`].
    pub outcome: String,
    /// Why it was refused or failed (the error's message), when it was.
    #[serde(default)]
    pub detail: Option<String>,
}

/// `AuditEntry::via` values.
pub mod via {
    pub const HTTP: &str = "http";
    pub const GRPC: &str = "grpc";
    pub const CLI: &str = "cli";
    pub const AGENT_PORT: &str = "agent-port";
    pub const REPLICATION: &str = "replication";
}

/// `AuditEntry::outcome` values.
pub mod outcome {
    /// Done (a 2xx answer).
    pub const OK: &str = "ok";
    /// Not done through the caller's fault or lack of rights (a 4xx answer).
    pub const REFUSED: &str = "refused";
    /// Not done through the server's fault (a 5xx answer).
    pub const FAILED: &str = "failed";
}

/// `AuditEntry::action` values.
pub mod action {
    pub const COLLECTION_CREATE: &str = "collection.create";
    pub const COLLECTION_CANCEL: &str = "collection.cancel";
    pub const HUNT_CREATE: &str = "hunt.create";
    pub const HUNT_START: &str = "hunt.start";
    pub const HUNT_STOP: &str = "hunt.stop";
    pub const LABELS_CHANGE: &str = "labels.change";
    pub const EVENT_TABLE_PUT: &str = "event_table.put";
    pub const USER_ADD: &str = "user.add";
    pub const USER_PASSWD: &str = "user.passwd";
    pub const USER_CHANGE: &str = "user.change";
    pub const USER_REMOVE: &str = "user.remove";
    pub const LOGIN: &str = "login";
    pub const LOGOUT: &str = "logout";
    pub const LOGIN_FAILED: &str = "login.failed";
    pub const CLIENT_CLONE: &str = "client.clone";
    /// A change through a route that has no name of its own (an unknown route included).
    pub const API_CALL: &str = "api.call";
}

impl AuditEntry {
    /// An entry stamped now, without remote address or detail.
    pub fn now(user: &str, via: &str, action: &str, target: &str, outcome: &str) -> Self {
        Self {
            time_ms: crate::clock::now_ms(),
            user: user.to_string(),
            remote: None,
            via: via.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            outcome: outcome.to_string(),
            detail: None,
        }
    }

    pub fn with_remote(mut self, remote: Option<impl ToString>) -> Self {
        self.remote = remote.map(|r| r.to_string());
        self
    }

    pub fn with_detail(mut self, detail: Option<impl ToString>) -> Self {
        self.detail = detail.map(|d| d.to_string());
        self
    }
}

/// Ends a field that was cut to fit the line.
pub const TRUNCATION_MARKER: &str = "…";

/// An entry's line: JSON + `\n`, at most `MAX_AUDIT_LINE_BYTES`.
#[derive(Debug)]
pub struct EncodedLine {
    pub bytes: Vec<u8>,
    /// Whether a field was cut to fit.
    pub truncated: bool,
}

/// Cutting rounds before giving up on keeping any field's text; each round shortens a
/// field by at least one byte past the excess, so real entries need one or two.
const MAX_CUT_ROUNDS_COUNT: usize = 64;

/// The line `entry` is written as: whole if it fits, else with `detail` cut first, then
/// the longest other text field, each ending in [`TRUNCATION_MARKER`].
pub fn encode_line(entry: &AuditEntry) -> EncodedLine {
    let line = to_line(entry);
    if line.len() <= MAX_AUDIT_LINE_BYTES {
        return EncodedLine {
            bytes: line,
            truncated: false,
        };
    }
    let mut cut = entry.clone();
    let mut excess = line.len() - MAX_AUDIT_LINE_BYTES;
    for _ in 0..MAX_CUT_ROUNDS_COUNT {
        let Some(field) = field_to_cut(&mut cut) else {
            break;
        };
        shorten(field, excess);
        let line = to_line(&cut);
        if line.len() <= MAX_AUDIT_LINE_BYTES {
            return EncodedLine {
                bytes: line,
                truncated: true,
            };
        }
        excess = line.len() - MAX_AUDIT_LINE_BYTES;
    }
    // Unreachable with the fields' markers far below the cap (limits.rs checks the cap
    // leaves room), but an entry must never be written over it.
    for field in text_fields(&mut cut) {
        *field = TRUNCATION_MARKER.to_string();
    }
    cut.detail = Some(TRUNCATION_MARKER.to_string());
    let line = to_line(&cut);
    assert!(
        line.len() <= MAX_AUDIT_LINE_BYTES,
        "a cut entry fits its line"
    );
    EncodedLine {
        bytes: line,
        truncated: true,
    }
}

fn to_line(entry: &AuditEntry) -> Vec<u8> {
    let mut line = serde_json::to_vec(entry).expect("audit entries serialise");
    line.push(b'\n');
    line
}

/// `detail` while it can still be cut, else the longest other field that can.
fn field_to_cut(entry: &mut AuditEntry) -> Option<&mut String> {
    if entry
        .detail
        .as_ref()
        .is_some_and(|d| d.len() > TRUNCATION_MARKER.len())
    {
        return entry.detail.as_mut();
    }
    text_fields(entry)
        .into_iter()
        .filter(|f| f.len() > TRUNCATION_MARKER.len())
        .max_by_key(|f| f.len())
}

fn text_fields(entry: &mut AuditEntry) -> Vec<&mut String> {
    let mut fields = vec![
        &mut entry.user,
        &mut entry.via,
        &mut entry.action,
        &mut entry.target,
        &mut entry.outcome,
    ];
    if let Some(remote) = entry.remote.as_mut() {
        fields.push(remote);
    }
    fields
}

/// Cuts `field` so that its JSON form shrinks by about `excess` bytes (escaped characters
/// count as what they cost in the line), at a character boundary, and marks it.
fn shorten(field: &mut String, excess: usize) {
    let escaped_bytes = serde_json::to_string(field.as_str())
        .map_or(field.len(), |quoted| quoted.len() - 2)
        .max(1);
    let drop_bytes = (excess + TRUNCATION_MARKER.len()) * field.len() / escaped_bytes + 1;
    let mut keep = field.len().saturating_sub(drop_bytes);
    while !field.is_char_boundary(keep) {
        keep -= 1;
    }
    field.truncate(keep);
    field.push_str(TRUNCATION_MARKER);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> AuditEntry {
        AuditEntry::now("admin", via::HTTP, action::HUNT_CREATE, "H.1", outcome::OK)
            .with_remote(Some("127.0.0.1"))
    }

    // Goal: a small entry is written as is, one line, and reads back equal.
    #[test]
    fn small_entry_is_one_whole_line() {
        let e = entry().with_detail(Some("why"));
        let line = encode_line(&e);
        assert!(!line.truncated);
        assert_eq!(line.bytes.last(), Some(&b'\n'));
        assert_eq!(line.bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        let back: AuditEntry = serde_json::from_slice(&line.bytes).unwrap();
        assert_eq!(back, e);
    }

    // Goal: an oversized detail is cut to fit the cap, marked, and the rest of the entry is
    // intact. Method: details of every awkward kind (multi-byte, escaped, huge).
    #[test]
    fn oversized_detail_is_cut_to_the_cap() {
        let details = [
            "x".repeat(MAX_AUDIT_LINE_BYTES),
            "é".repeat(MAX_AUDIT_LINE_BYTES),
            "\u{1}".repeat(MAX_AUDIT_LINE_BYTES * 3),
            "\"\\".repeat(10 * MAX_AUDIT_LINE_BYTES),
            "ab".repeat(MAX_AUDIT_LINE_BYTES / 2 - 60),
        ];
        for detail in details {
            let e = entry().with_detail(Some(&detail));
            let line = encode_line(&e);
            assert!(line.truncated);
            assert!(
                line.bytes.len() <= MAX_AUDIT_LINE_BYTES,
                "{}",
                line.bytes.len()
            );
            // Not cut far below the cap either.
            assert!(
                line.bytes.len() > MAX_AUDIT_LINE_BYTES / 2,
                "{}",
                line.bytes.len()
            );
            let back: AuditEntry = serde_json::from_slice(&line.bytes).unwrap();
            let cut = back.detail.unwrap();
            assert!(cut.ends_with(TRUNCATION_MARKER));
            assert!(detail.starts_with(cut.trim_end_matches(TRUNCATION_MARKER)));
            assert_eq!((back.user, back.target), (e.user.clone(), e.target.clone()));
        }
    }

    // Goal: when fields other than detail are huge (a failed login's user name is whatever
    // was typed), the line still fits. Method: every text field at 10 × the cap.
    #[test]
    fn every_field_oversized_still_fits() {
        let big = "u".repeat(10 * MAX_AUDIT_LINE_BYTES);
        let e = AuditEntry {
            time_ms: u64::MAX,
            user: big.clone(),
            remote: Some(big.clone()),
            via: big.clone(),
            action: big.clone(),
            target: "\n".repeat(MAX_AUDIT_LINE_BYTES),
            outcome: big.clone(),
            detail: Some(big),
        };
        let line = encode_line(&e);
        assert!(line.truncated);
        assert!(line.bytes.len() <= MAX_AUDIT_LINE_BYTES);
        assert_eq!(line.bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        let back: AuditEntry = serde_json::from_slice(&line.bytes).unwrap();
        assert_eq!(back.time_ms, u64::MAX);
    }
}
