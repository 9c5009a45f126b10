//! Runs datastore work on the executor's blocking thread pool. The datastore is plain
//! files, on NFS in production: any open, read, write or fsync can block for
//! milliseconds (an fsync'd document costs ~2 ms on this box's disk), and a shard that
//! blocks stalls every agent it serves. Shards and the API never touch files directly;
//! they hand the work here and await it.

/// Runs `work` off the executor thread and resolves with its result.
pub async fn offload<R, F>(work: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    glommio::executor().spawn_blocking(work).await
}
