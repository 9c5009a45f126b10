//! A value written rarely from anywhere and read on every event batch by every agent
//! shard (which artifacts are watched, where a batch goes). Readers take no lock in the
//! steady state: each thread keeps the last snapshot it saw and one atomic load tells it
//! whether that is still current; only after a change does a thread take the writers'
//! lock, once, to pick up the new snapshot. Writers serialise on that lock.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Snapshots one thread keeps at most; past this (only tests make that many values)
/// the cache starts over, so a thread never holds memory for values long gone.
const CACHED_SNAPSHOTS_PER_THREAD_COUNT: usize = 64;

/// Tells every `Published` apart in the per-thread caches.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A snapshot of some `Published<T>` with the version it was current at.
type Snapshot = (u64, Arc<dyn Any + Send + Sync>);

thread_local! {
    /// Published id -> the snapshot this thread last loaded.
    static SNAPSHOTS: RefCell<HashMap<u64, Snapshot>> = RefCell::new(HashMap::new());
}

/// A shared, replaceable value; cheap to clone (clones share it).
pub struct Published<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    id: u64,
    /// Invariant: bumped (under `current`'s lock) after every replacement, so a reader
    /// that sees an unchanged version holds the current snapshot.
    version: AtomicU64,
    current: Mutex<Arc<T>>,
}

impl<T> Clone for Published<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Send + Sync + 'static> Published<T> {
    pub fn new(value: T) -> Self {
        Self {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                version: AtomicU64::new(0),
                current: Mutex::new(Arc::new(value)),
            }),
        }
    }

    /// The current value. Lock-free unless it changed since this thread last looked.
    pub fn load(&self) -> Arc<T> {
        let version = self.inner.version.load(Ordering::Acquire);
        let id = self.inner.id;
        // `try_with`: a thread tearing down its locals still reads, through the lock.
        let cached = SNAPSHOTS
            .try_with(|s| {
                let s = s.borrow();
                let (seen, value) = s.get(&id)?;
                (*seen == version).then(|| value.clone())
            })
            .ok()
            .flatten();
        if let Some(value) = cached.and_then(|v| v.downcast::<T>().ok()) {
            return value;
        }
        let (version, value) = {
            let current = self.inner.current.lock().expect("published value lock");
            (self.inner.version.load(Ordering::Acquire), current.clone())
        };
        let _ = SNAPSHOTS.try_with(|s| {
            let mut s = s.borrow_mut();
            if s.len() >= CACHED_SNAPSHOTS_PER_THREAD_COUNT && !s.contains_key(&id) {
                s.clear();
            }
            let erased: Arc<dyn Any + Send + Sync> = value.clone();
            s.insert(id, (version, erased));
        });
        value
    }

    /// Replaces the value with what `change(current)` returns, if anything (`None`
    /// leaves it, and every reader's snapshot, as it is); returns `change`'s other
    /// result. Writers run one at a time.
    pub fn update<R>(&self, change: impl FnOnce(&T) -> (Option<T>, R)) -> R {
        let mut current = self.inner.current.lock().expect("published value lock");
        let (next, result) = change(&current);
        if let Some(next) = next {
            *current = Arc::new(next);
            self.inner.version.fetch_add(1, Ordering::Release);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: a reader sees every replacement, on its own thread and on others, and two
    // values never share a cached snapshot.
    #[test]
    fn readers_see_each_replacement() {
        let a = Published::new(1u32);
        let b = Published::new(String::from("b"));
        assert_eq!(*a.load(), 1);
        assert_eq!(*b.load(), "b");
        a.update(|v| (Some(v + 1), ()));
        a.update(|_| (None, ()));
        assert_eq!(*a.load(), 2);
        let remote = a.clone();
        let seen = std::thread::spawn(move || {
            let first = *remote.load();
            remote.update(|v| (Some(v * 10), ()));
            (first, *remote.load())
        })
        .join()
        .unwrap();
        assert_eq!(seen, (2, 20));
        assert_eq!(
            *a.load(),
            20,
            "a change made on another thread is seen here"
        );
        assert_eq!(*b.load(), "b");
    }
}
