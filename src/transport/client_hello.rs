//! Whether a connection's ClientHello has arrived: the socket is read through
//! [`HelloWatch`], which follows the first TLS record's header and says once that whole
//! record is in. A peer that connects and sends nothing, or a ClientHello byte by byte,
//! is then closed at `CLIENT_HELLO_TIMEOUT` instead of holding a handshake permit for the
//! whole handshake deadline.

use std::cell::Cell;
use std::rc::Rc;

use crate::runtime::observed_read::{ObservedRead, ReadObserver};

/// TLS record header: content type (1), legacy version (2), length (2).
const RECORD_HEADER_BYTES: usize = 5;

/// Shared between the watcher (inside the TLS stream) and the connection's driver.
#[derive(Clone, Default)]
pub struct HelloSeen(Rc<Cell<bool>>);

impl HelloSeen {
    pub fn get(&self) -> bool {
        self.0.get()
    }
}

/// `inner` read through a [`HelloRecord`]; afterwards a plain pass-through.
pub type HelloWatch<S> = ObservedRead<S, HelloRecord>;

impl<S> HelloWatch<S> {
    pub fn new(inner: S) -> (Self, HelloSeen) {
        let (record, seen) = HelloRecord::new();
        (ObservedRead::with(inner, record), seen)
    }
}

/// Follows the first TLS record's header and notes when that whole record is in.
pub struct HelloRecord {
    seen: HelloSeen,
    header: [u8; RECORD_HEADER_BYTES],
    /// Bytes of the first record read so far (header included); `usize::MAX` once done.
    read: usize,
}

impl HelloRecord {
    pub fn new() -> (Self, HelloSeen) {
        let seen = HelloSeen::default();
        let record = Self {
            seen: seen.clone(),
            header: [0; RECORD_HEADER_BYTES],
            read: 0,
        };
        (record, seen)
    }
}

impl ReadObserver for HelloRecord {
    fn observe(&mut self, bytes: &[u8]) {
        if self.read == usize::MAX {
            return;
        }
        for &b in bytes {
            if self.read < RECORD_HEADER_BYTES {
                self.header[self.read] = b;
            }
            self.read += 1;
            if self.read >= RECORD_HEADER_BYTES {
                let body = u16::from_be_bytes([self.header[3], self.header[4]]) as usize;
                if self.read >= RECORD_HEADER_BYTES + body {
                    self.read = usize::MAX;
                    self.seen.0.set(true);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_once_the_first_record_is_complete_however_it_is_split() {
        let record: Vec<u8> = [0x16, 0x03, 0x01, 0x00, 0x04, 1, 2, 3, 4].to_vec();
        for split in 0..record.len() {
            let (mut watch, seen) = HelloRecord::new();
            watch.observe(&record[..split]);
            assert!(!seen.get(), "not complete after {split} bytes");
            watch.observe(&record[split..]);
            assert!(seen.get(), "complete after split at {split}");
        }
    }
}
