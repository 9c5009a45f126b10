//! `clients/<client_id>/info.json`: what the server knows about an endpoint, and the
//! list of known clients.
//!
//! Owns the document format and its atomic replacement; it must not decide what the
//! agent's facts mean (labels, hunt conditions) or bound them: sessions cap what an
//! agent may send before it gets here.

use serde::{Deserialize, Serialize};

use super::atomic::{ensure_dir, read_json, write_json};
use super::listing::ids_in;
use super::path::{ClientDir, Datastore};
use super::{serde_ids, DatastoreError};
use crate::ids::ClientId;
use crate::limits::{LAST_SEEN_WRITE_INTERVAL_MS, MAX_CLIENT_FACT_CHARS};

/// `info.json`. Field names match the API's client item (docs/architecture.md, "API shapes").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfoDoc {
    #[serde(with = "serde_ids::client_id")]
    pub client_id: ClientId,
    pub hostname: String,
    pub os: String,
    #[serde(default)]
    pub labels: Vec<String>,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub version: String,
}

/// Reads `info.json` with the labels of `labels.json`; missing → `NotFound`, a document
/// for another client → corrupt.
pub fn read_client_info(client: &ClientDir) -> Result<ClientInfoDoc, DatastoreError> {
    let path = client.info_json();
    let mut doc: ClientInfoDoc = read_json(&path)?;
    if &doc.client_id != client.id() {
        return Err(DatastoreError::Corrupt {
            path,
            reason: "names another client".into(),
        });
    }
    if let Some(labels) = read_labels(client)? {
        doc.labels = labels;
    }
    Ok(doc)
}

/// `labels.json`, if an operator ever labelled the client.
pub fn read_labels(client: &ClientDir) -> Result<Option<Vec<String>>, DatastoreError> {
    match read_json::<Vec<String>>(&client.labels_json()) {
        Ok(labels) => Ok(Some(labels)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Adds then removes labels (sorted, each once); returns the new set. The client must
/// have connected at least once.
pub fn change_labels(
    client: &ClientDir,
    add: &[String],
    remove: &[String],
) -> Result<Vec<String>, DatastoreError> {
    let current = match read_labels(client)? {
        Some(labels) => labels,
        None => read_json::<ClientInfoDoc>(&client.info_json())?.labels,
    };
    let mut labels: std::collections::BTreeSet<String> = current.into_iter().collect();
    labels.extend(add.iter().cloned());
    for label in remove {
        labels.remove(label);
    }
    let labels: Vec<String> = labels.into_iter().collect();
    write_json(&client.labels_json(), &labels, client.fsync_documents())?;
    Ok(labels)
}

/// Replaces `info.json`, creating the client folder on first contact.
pub fn write_client_info(client: &ClientDir, doc: &ClientInfoDoc) -> Result<(), DatastoreError> {
    if &doc.client_id != client.id() {
        return Err(DatastoreError::Mismatch {
            what: "info.json client_id is not this client",
        });
    }
    ensure_dir(client.path(), client.fsync_documents())?;
    write_json(&client.info_json(), doc, client.fsync_documents())
}

/// What recording an agent's facts did to `info.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Created or replaced: new or changed facts, or a stale last_seen.
    Written,
    /// Left alone: the same facts, last seen within [`LAST_SEEN_WRITE_INTERVAL_MS`].
    Unchanged,
}

/// Records that the agent connected now with these facts: creates `info.json` on first
/// contact (first_seen = now), otherwise updates facts and last_seen and keeps labels
/// and first_seen. Facts are cut to [`MAX_CLIENT_FACT_CHARS`]. Unchanged facts seen
/// again within [`LAST_SEEN_WRITE_INTERVAL_MS`] of the stored last_seen write nothing.
/// An unreadable old document is replaced rather than blocking the agent (its labels
/// are lost).
pub fn record_seen(
    client: &ClientDir,
    hostname: &str,
    os: &str,
    version: &str,
) -> Result<ClientInfoDoc, DatastoreError> {
    record_seen_at(client, hostname, os, version, crate::clock::now_ms())
}

/// [`record_seen`] with the clock passed in.
pub fn record_seen_at(
    client: &ClientDir,
    hostname: &str,
    os: &str,
    version: &str,
    now_ms: u64,
) -> Result<ClientInfoDoc, DatastoreError> {
    Ok(record_facts_at(client, hostname, os, version, now_ms)?.0)
}

/// [`record_seen_at`], also saying whether it wrote.
pub fn record_facts_at(
    client: &ClientDir,
    hostname: &str,
    os: &str,
    version: &str,
    now_ms: u64,
) -> Result<(ClientInfoDoc, Recorded), DatastoreError> {
    let (mut doc, new) = match read_client_info(client) {
        Ok(doc) => (doc, false),
        Err(err) if err.is_not_found() => (first_contact(client, now_ms), true),
        Err(DatastoreError::Document { .. } | DatastoreError::Corrupt { .. }) => {
            (first_contact(client, now_ms), false)
        }
        Err(err) => return Err(err),
    };
    let (hostname, os, version) = (cut_fact(hostname), cut_fact(os), cut_fact(version));
    let unchanged = doc.hostname == hostname && doc.os == os && doc.version == version;
    if unchanged && last_seen_is_recent(doc.last_seen_ms, now_ms) {
        return Ok((doc, Recorded::Unchanged));
    }
    (doc.hostname, doc.os, doc.version) = (hostname.into(), os.into(), version.into());
    doc.last_seen_ms = doc.last_seen_ms.max(now_ms);
    if new {
        make_queue_folders(client)?;
    }
    write_client_info(client, &doc)?;
    Ok((doc, Recorded::Written))
}

/// A fact as `info.json` keeps it: its first [`MAX_CLIENT_FACT_CHARS`] characters.
pub fn cut_fact(fact: &str) -> &str {
    match fact.char_indices().nth(MAX_CLIENT_FACT_CHARS) {
        Some((end, _)) => &fact[..end],
        None => fact,
    }
}

/// Whether a stored last_seen is recent enough that the same facts need not be written
/// again now.
pub fn last_seen_is_recent(last_seen_ms: u64, now_ms: u64) -> bool {
    now_ms < last_seen_ms.saturating_add(LAST_SEEN_WRITE_INTERVAL_MS)
}

/// A new client's `collections/` and `tasks/`, made once with its folder so that a
/// collection or a hunt reaching a whole fresh fleet does not make them per client in
/// its own time (each is an inode allocation; tuning.md, "P2 fan-out"). Not synced: a
/// folder lost to a crash is made again by the first write that needs it.
fn make_queue_folders(client: &ClientDir) -> Result<(), DatastoreError> {
    ensure_dir(&client.collections_dir(), false)?;
    ensure_dir(&client.tasks_dir(), false)
}

fn first_contact(client: &ClientDir, now_ms: u64) -> ClientInfoDoc {
    ClientInfoDoc {
        client_id: client.id().clone(),
        hostname: String::new(),
        os: String::new(),
        labels: Vec::new(),
        first_seen_ms: now_ms,
        last_seen_ms: now_ms,
        version: String::new(),
    }
}

/// Every client folder under `clients/`, sorted by id; anything whose name is not a
/// valid client id, or that is not a folder, is skipped.
pub fn list_clients(datastore: &Datastore) -> Result<Vec<ClientId>, DatastoreError> {
    let dir = datastore.clients_dir();
    let mut clients = Vec::new();
    for listed in ids_in(&dir, "", ClientId::parse)? {
        let (id, entry) = listed?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            clients.push(id);
        }
    }
    clients.sort_unstable();
    Ok(clients)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn doc(id: &ClientId) -> ClientInfoDoc {
        ClientInfoDoc {
            client_id: id.clone(),
            hostname: "web-01".into(),
            os: "linux".into(),
            labels: vec!["prod".into()],
            first_seen_ms: 1,
            last_seen_ms: 2,
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn info_round_trips_and_checks_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_path_buf(), false).unwrap();
        let id = ClientId::parse("C.0123456789abcdef").unwrap();
        let client = ds.client(&id);
        assert!(read_client_info(&client).unwrap_err().is_not_found());
        let mut info = doc(&id);
        write_client_info(&client, &info).unwrap();
        assert_eq!(read_client_info(&client).unwrap(), info);
        info.last_seen_ms = 99;
        write_client_info(&client, &info).unwrap();
        assert_eq!(read_client_info(&client).unwrap().last_seen_ms, 99);

        let other = ClientId::parse("C.fedcba9876543210").unwrap();
        assert!(matches!(
            write_client_info(&client, &doc(&other)),
            Err(DatastoreError::Mismatch { .. })
        ));
        // A document copied from another client's folder is not trusted.
        let text = fs::read_to_string(client.info_json()).unwrap();
        fs::write(
            client.info_json(),
            text.replace(id.as_str(), other.as_str()),
        )
        .unwrap();
        assert!(matches!(
            read_client_info(&client),
            Err(DatastoreError::Corrupt { .. })
        ));
        fs::write(client.info_json(), text.replace(id.as_str(), "../../etc")).unwrap();
        assert!(matches!(
            read_client_info(&client),
            Err(DatastoreError::Document { .. })
        ));
    }

    #[test]
    fn record_seen_creates_then_updates_keeping_labels() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_path_buf(), false).unwrap();
        let id = ClientId::parse("C.0123456789abcdef").unwrap();
        let client = ds.client(&id);
        let first = record_seen_at(&client, "web-01", "linux", "0.1.0", 1_000).unwrap();
        assert_eq!((first.first_seen_ms, first.last_seen_ms), (1_000, 1_000));
        assert_eq!(read_client_info(&client).unwrap(), first);

        let mut labelled = first.clone();
        labelled.labels = vec!["prod".into()];
        write_client_info(&client, &labelled).unwrap();
        let long = "h".repeat(10_000);
        let second = record_seen_at(&client, &long, "linux", "0.2.0", 5_000).unwrap();
        assert_eq!((second.first_seen_ms, second.last_seen_ms), (1_000, 5_000));
        assert_eq!(second.labels, ["prod"]);
        assert_eq!(second.hostname.len(), MAX_CLIENT_FACT_CHARS);
        assert_eq!(second.version, "0.2.0");

        // Same facts again soon after: nothing is written; later, last_seen moves on.
        let soon = record_seen_at(
            &client,
            &long,
            "linux",
            "0.2.0",
            5_000 + LAST_SEEN_WRITE_INTERVAL_MS - 1,
        )
        .unwrap();
        assert_eq!(soon.last_seen_ms, 5_000);
        assert_eq!(read_client_info(&client).unwrap(), second);
        let later = record_seen_at(
            &client,
            &long,
            "linux",
            "0.2.0",
            5_000 + LAST_SEEN_WRITE_INTERVAL_MS,
        )
        .unwrap();
        assert_eq!(later.last_seen_ms, 5_000 + LAST_SEEN_WRITE_INTERVAL_MS);
        assert_eq!(read_client_info(&client).unwrap(), later);
        let upgraded = record_seen_at(
            &client,
            &long,
            "linux",
            "0.3.0",
            5_000 + LAST_SEEN_WRITE_INTERVAL_MS + 1,
        )
        .unwrap();
        assert_eq!(read_client_info(&client).unwrap().version, "0.3.0");
        assert_eq!(
            upgraded.last_seen_ms,
            5_000 + LAST_SEEN_WRITE_INTERVAL_MS + 1
        );

        fs::write(client.info_json(), b"{").unwrap();
        let repaired = record_seen_at(&client, "web-01", "linux", "0.2.0", 6_000).unwrap();
        assert_eq!(read_client_info(&client).unwrap(), repaired);
    }

    // Goal: the caller learns whether facts were written, and facts are cut on a
    // character boundary. Method: record, record the same, record changed facts.
    #[test]
    fn record_facts_says_whether_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_path_buf(), false).unwrap();
        let id = ClientId::parse("C.0123456789abcdef").unwrap();
        let client = ds.client(&id);
        let (_, first) = record_facts_at(&client, "web-01", "linux", "1", 1_000).unwrap();
        assert_eq!(first, Recorded::Written);
        // A new client's queue folders come with it, not with its first collection.
        assert!(client.collections_dir().is_dir() && client.tasks_dir().is_dir());
        let (doc, again) = record_facts_at(&client, "web-01", "linux", "1", 2_000).unwrap();
        assert_eq!((again, doc.last_seen_ms), (Recorded::Unchanged, 1_000));
        let (doc, changed) = record_facts_at(&client, "web-02", "linux", "1", 3_000).unwrap();
        assert_eq!((changed, doc.last_seen_ms), (Recorded::Written, 3_000));
        assert_eq!(read_client_info(&client).unwrap().hostname, "web-02");

        let wide = "é".repeat(MAX_CLIENT_FACT_CHARS + 1);
        assert_eq!(cut_fact(&wide).chars().count(), MAX_CLIENT_FACT_CHARS);
        assert_eq!(cut_fact("short"), "short");
        assert!(last_seen_is_recent(
            1_000,
            1_000 + LAST_SEEN_WRITE_INTERVAL_MS - 1
        ));
        assert!(!last_seen_is_recent(
            1_000,
            1_000 + LAST_SEEN_WRITE_INTERVAL_MS
        ));
    }

    #[test]
    fn list_clients_skips_everything_that_is_not_a_client_folder() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_path_buf(), false).unwrap();
        assert!(list_clients(&ds).unwrap().is_empty());
        let ids: Vec<ClientId> = ["C.00000000000000ff", "C.0123456789abcdef"]
            .iter()
            .map(|s| ClientId::parse(s).unwrap())
            .collect();
        for id in ids.iter().rev() {
            write_client_info(&ds.client(id), &doc(id)).unwrap();
        }
        let clients = ds.clients_dir();
        fs::create_dir(clients.join("C.0123456789ABCDEF")).unwrap();
        fs::create_dir(clients.join("lost+found")).unwrap();
        fs::write(clients.join("C.1111111111111111"), b"file").unwrap();
        fs::write(clients.join("C.2222222222222222.tmp.0000000000000000"), b"").unwrap();
        assert_eq!(list_clients(&ds).unwrap(), ids);
    }
}
