//! Handshakes in flight per source address on one agent shard. Every handshake holds
//! one of the shard's handshake permits; without a per-source cap one address opening
//! slow handshakes could hold them all and keep every other agent in the accept queue.
//! Shard-local (the kernel spreads one source's connections over the shards), so no lock
//! is taken on the accept path.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

#[derive(Default)]
pub struct SourceHandshakes {
    in_flight: RefCell<HashMap<IpAddr, usize>>,
    max_per_source: usize,
}

/// One handshake of `source` in flight until dropped.
pub struct SourceSlot {
    table: Rc<SourceHandshakes>,
    source: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut in_flight = self.table.in_flight.borrow_mut();
        if let Some(n) = in_flight.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&self.source);
            }
        }
    }
}

impl SourceHandshakes {
    pub fn new(max_per_source: usize) -> Rc<Self> {
        Rc::new(Self {
            in_flight: RefCell::default(),
            max_per_source,
        })
    }

    /// A slot for one more handshake from `source`, or None when it holds the most.
    pub fn try_begin(self: &Rc<Self>, source: IpAddr) -> Option<SourceSlot> {
        let mut in_flight = self.in_flight.borrow_mut();
        let n = in_flight.entry(source).or_insert(0);
        if *n >= self.max_per_source {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            table: self.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_is_capped_and_others_are_not() {
        let table = SourceHandshakes::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = table.try_begin(a).unwrap();
        let _second = table.try_begin(a).unwrap();
        assert!(table.try_begin(a).is_none());
        assert!(table.try_begin(b).is_some());
        drop(first);
        assert!(
            table.try_begin(a).is_some(),
            "a slot comes back when dropped"
        );
    }
}
