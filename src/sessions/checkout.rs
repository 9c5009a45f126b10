//! What one connection keeps open between uploads (flows, event streams), checked out
//! while an operation on it runs on the blocking pool and checked back in after. A key
//! that is checked out is busy: a second upload for it is refused rather than queued
//! (the real agent sends one upload at a time and never sees it).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;

/// Invariant: a `Busy` slot is an operation in flight on the blocking pool; it is
/// replaced by `Idle` (or removed) when that operation returns.
enum Slot<V> {
    Idle(Box<V>),
    Busy,
}

/// The key is checked out by an operation still in flight.
#[derive(Debug)]
pub struct Busy;

pub struct Checkouts<K, V> {
    slots: RefCell<HashMap<K, Slot<V>>>,
}

impl<K, V> Default for Checkouts<K, V> {
    fn default() -> Self {
        Self {
            slots: RefCell::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V> Checkouts<K, V> {
    /// Marks `key` busy and hands over what was kept for it (None: nothing yet, open it).
    pub fn check_out(&self, key: &K) -> Result<Option<Box<V>>, Busy> {
        match self.slots.borrow_mut().insert(key.clone(), Slot::Busy) {
            None => Ok(None),
            Some(Slot::Idle(value)) => Ok(Some(value)),
            Some(Slot::Busy) => Err(Busy),
        }
    }

    /// Ends the operation on `key`: keeps `value` for the next one, or forgets the key.
    pub fn check_in(&self, key: &K, value: Option<Box<V>>) {
        let mut slots = self.slots.borrow_mut();
        match value {
            Some(value) => slots.insert(key.clone(), Slot::Idle(value)),
            None => slots.remove(key),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checked_out_key_is_busy_until_checked_in() {
        let c: Checkouts<&str, u32> = Checkouts::default();
        assert!(c.check_out(&"a").unwrap().is_none());
        assert!(c.check_out(&"a").is_err());
        assert!(c.check_out(&"b").unwrap().is_none());
        c.check_in(&"a", Some(Box::new(7)));
        assert_eq!(c.check_out(&"a").unwrap().as_deref(), Some(&7));
        c.check_in(&"a", None);
        assert!(c.check_out(&"a").unwrap().is_none());
    }
}
