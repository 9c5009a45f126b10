//! What one agent shard admits before it spends: its share of
//! `max_connections_per_second` (checked right after accept(), before any TLS work) and
//! its share of `concurrency` (taken before an upload's body is read).

use crate::runtime::rate::TokenBucket;
use crate::transport::upload_permits::UploadPermits;

pub struct Admission {
    /// This shard's share of the `concurrency` limit.
    pub uploads: UploadPermits,
    /// Load shedding: this shard's share of `max_connections_per_second`, one second of
    /// burst. Connections above it are closed right after accept(), before any TLS work.
    pub accept_rate: TokenBucket,
}

impl Admission {
    pub fn new(uploads: UploadPermits, connections_per_second: u64) -> Self {
        Self {
            uploads,
            accept_rate: TokenBucket::new(connections_per_second, connections_per_second),
        }
    }
}
