//! What one agent shard admits before it spends: its share of
//! `max_connections_per_second` (checked right after accept(), before any TLS work) and
//! its share of `concurrency` (taken before an upload's body is read). It also counts the
//! shard's uploads in flight for the drain at shutdown (`transport::drain`).

use crate::runtime::rate::TokenBucket;
use crate::transport::drain::DrainTally;
use crate::transport::upload_permits::UploadPermits;

pub struct Admission {
    /// This shard's share of the `concurrency` limit.
    pub uploads: UploadPermits,
    /// Load shedding: this shard's share of `max_connections_per_second`, one second of
    /// burst. Connections above it are closed right after accept(), before any TLS work.
    pub accept_rate: TokenBucket,
    /// Uploads in flight, as the drain at shutdown counts them.
    pub drain: DrainTally,
}

impl Admission {
    pub fn new(uploads: UploadPermits, connections_per_second: u64) -> Self {
        Self {
            uploads,
            accept_rate: TokenBucket::new(connections_per_second, connections_per_second),
            drain: DrainTally::default(),
        }
    }
}
