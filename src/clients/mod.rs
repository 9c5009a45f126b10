//! The master's client index: every known client's facts (hostname, OS, version, first
//! and last seen) and labels in memory, joined with presence when a page is built, so
//! every client list and search of the GUI/API is answered without touching the
//! datastore.
//!
//! index — the entries, their order (hostname, then id), searching and paging; search —
//! the search grammar; feed — what keeps it current (the datastore at start, agents'
//! facts from this frontend's shards and from minions, snapshots, departures).
//! It runs on the master's priority executor only; it never touches a session, and the
//! agent path reaches it only through presence's queues. docs/gui/client-index.md.

pub mod feed;
pub mod index;
pub mod search;

pub use index::{ClientIndex, ClientView, DiskRead, Page};
pub use search::{Query, SearchError};
