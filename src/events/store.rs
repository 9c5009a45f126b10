//! The master's copy of the client event table: loaded from the datastore at start,
//! served from memory, replaced atomically on disk before memory changes.
//!
//! Runs on the priority executor (one thread, hence `RefCell`); every file access goes
//! through `runtime::offload`. Replacements are serialised by a one-permit semaphore so
//! two concurrent PUTs get consecutive versions instead of the same one.

use std::cell::RefCell;
use std::rc::Rc;

use glommio::sync::Semaphore;

use super::table::{EventTable, EventTableError, VersionedTable};
use crate::datastore::{self, Datastore};
use crate::limits::MAX_DOCUMENT_BYTES;
use crate::runtime::offload::offload;

const _: () = assert!(
    crate::limits::MAX_EVENT_TABLE_BODY_BYTES as u64 * 8 <= MAX_DOCUMENT_BYTES,
    "a table at the body cap must fit a document even pretty-printed with defaults filled"
);

pub struct TableStore {
    datastore: Datastore,
    /// Invariant: equal to the document on disk once a replacement has returned.
    current: RefCell<Rc<VersionedTable>>,
    /// One permit: held from reading the current version to publishing the next.
    writing: Semaphore,
}

impl TableStore {
    /// Reads `server/client_event_table.json`; no file means version 0, an empty table.
    /// A document that does not parse, or names what the catalogue no longer has, is an
    /// error naming the file: the caller decides whether the frontend still starts.
    pub async fn load(datastore: Datastore) -> Result<Self, EventTableError> {
        let path = datastore.client_event_table_path();
        let bytes = offload(move || read_document(&path)).await?;
        let current = match bytes {
            Some(bytes) => VersionedTable::parse_document(&bytes).map_err(|source| {
                EventTableError::Stored {
                    path: datastore.client_event_table_path(),
                    source: Box::new(source),
                }
            })?,
            None => VersionedTable::default(),
        };
        Ok(Self {
            datastore,
            current: RefCell::new(Rc::new(current)),
            writing: Semaphore::new(1),
        })
    }

    /// The table agents get now, with its version.
    pub fn current(&self) -> Rc<VersionedTable> {
        self.current.borrow().clone()
    }

    /// Replaces the table with `table` under the next version; returns what is now
    /// current. Durable (per `fsync_documents`) before it is visible: a GET never shows a
    /// version a restart would lose.
    pub async fn replace(&self, table: EventTable) -> Result<Rc<VersionedTable>, EventTableError> {
        let _permit = self
            .writing
            .acquire_permit(1)
            .await
            .expect("the table store never closes its semaphore");
        let version = self
            .current()
            .version
            .next()
            .ok_or(EventTableError::VersionExhausted)?;
        let next = VersionedTable { version, table };
        let bytes = next.to_document();
        debug_assert_eq!(
            VersionedTable::parse_document(&bytes).ok().as_ref(),
            Some(&next),
            "a written table reads back as itself"
        );
        let (path, fsync) = (
            self.datastore.client_event_table_path(),
            self.datastore.fsync_documents(),
        );
        offload(move || datastore::write_atomic(&path, &bytes, fsync)).await?;
        let next = Rc::new(next);
        *self.current.borrow_mut() = next.clone();
        Ok(next)
    }
}

/// The document's bytes, `None` if it was never written. Capped like every document.
fn read_document(path: &std::path::Path) -> Result<Option<Vec<u8>>, EventTableError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(datastore::io_error("open", path)(source).into()),
    };
    let mut bytes = Vec::new();
    // One byte past the cap tells "at the cap" from "over it".
    file.take(MAX_DOCUMENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(datastore::io_error("read", path))?;
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(EventTableError::Datastore(
            datastore::DatastoreError::Corrupt {
                path: path.to_path_buf(),
                reason: "document too large".into(),
            },
        ));
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    //! Goal: the store starts at version 0, gives concurrent replacements consecutive
    //! versions, keeps what it serves equal to the document on disk, and reports a corrupt
    //! document with its path. Method: a glommio executor over a temp datastore, reloading
    //! the store from disk as a restarted master would.

    use super::*;
    use crate::events::TableVersion;

    fn table(body: &str) -> EventTable {
        EventTable::parse(body.as_bytes()).expect("a valid test table")
    }

    #[test]
    fn replacements_are_consecutive_durable_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let ds = Datastore::open(root, true).unwrap();
                let store = Rc::new(TableStore::load(ds.clone()).await.unwrap());
                assert_eq!(*store.current(), VersionedTable::default());
                let stats = r#"{"all":[{"name":"Generic.Client.Stats"}],"by_label":{}}"#;
                let empty = r#"{"all":[],"by_label":{}}"#;
                let (a, b) =
                    futures::join!(store.replace(table(stats)), store.replace(table(empty)));
                let mut versions = [a.unwrap().version.get(), b.unwrap().version.get()];
                versions.sort();
                assert_eq!(versions, [1, 2]);
                let reloaded = TableStore::load(ds.clone()).await.unwrap();
                assert_eq!(reloaded.current(), store.current());
                assert_eq!(
                    reloaded.current().version,
                    TableVersion::default().next().unwrap().next().unwrap()
                );

                std::fs::write(ds.client_event_table_path(), b"{\"version\":1").unwrap();
                let err = TableStore::load(ds.clone()).await.err().expect("corrupt");
                assert!(!err.is_caller_fault());
                assert!(err.to_string().contains("client_event_table.json"), "{err}");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
