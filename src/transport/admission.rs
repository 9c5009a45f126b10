//! What one agent shard admits before it spends: its share of
//! `max_connections_per_second` (checked right after accept(), before any TLS work) and
//! its share of `concurrency` (taken before an upload's body is read), and its own pool
//! for small uploads, so that an agent's facts or a one-row event batch never queue
//! behind the big bodies `concurrency` is there to bound.

use crate::runtime::rate::TokenBucket;
use crate::transport::upload_permits::UploadPermits;

pub struct Admission {
    /// This shard's share of the `concurrency` limit.
    pub uploads: UploadPermits,
    /// Uploads declaring at most `SMALL_UPLOAD_MAX_BYTES` (bodies capped there).
    pub small_uploads: UploadPermits,
    /// Load shedding: this shard's share of `max_connections_per_second`, one second of
    /// burst. Connections above it are closed right after accept(), before any TLS work.
    pub accept_rate: TokenBucket,
}

impl Admission {
    pub fn new(
        uploads: UploadPermits,
        small_uploads: UploadPermits,
        connections_per_second: u64,
    ) -> Self {
        Self {
            uploads,
            small_uploads,
            accept_rate: TokenBucket::new(connections_per_second, connections_per_second),
        }
    }
}
