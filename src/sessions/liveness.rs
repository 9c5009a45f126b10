//! Is an agent connection still there? Each agent connection on a shard attaches its
//! HTTP/2 PING handle here for as long as it is driven; the clone check asks the
//! connection that carries a client's older task stream for a PING answer under
//! `CLONE_LIVENESS_PING_DEADLINE`. A connection that has already ended is dead at once.
//!
//! Nothing here reads or writes a stream: the PING goes out on the connection's own
//! driver (the transport's accept loop polls the connection, which sends it and reads the
//! answer).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use crate::ids::ClientId;
use crate::runtime::deadline::with_deadline;

/// One attached connection's PING handle.
pub struct Pinger {
    /// h2 allows one user PING in flight per connection: the lock serialises checks.
    ping_pong: futures::lock::Mutex<Option<h2::PingPong>>,
    /// Set when the connection's driver ended (its attachment dropped).
    ended: Cell<bool>,
}

/// What a liveness check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alive {
    /// The peer answered a PING within the deadline.
    Yes,
    /// The connection has ended, its PING failed, or no answer came within the deadline.
    No,
}

impl Pinger {
    /// Sends a PING and waits up to `deadline` for its answer.
    pub async fn check(&self, deadline: Duration) -> Alive {
        if self.ended.get() {
            return Alive::No;
        }
        let probe = async {
            let mut held = self.ping_pong.lock().await;
            match held.as_mut() {
                Some(ping_pong) => ping_pong.ping(h2::Ping::opaque()).await.is_ok(),
                // No PING handle (h2 gives it out once): the connection is being driven,
                // which is all that can be known.
                None => !self.ended.get(),
            }
        };
        match with_deadline(deadline, probe).await {
            Some(true) if !self.ended.get() => Alive::Yes,
            _ => Alive::No,
        }
    }
}

/// The connections attached on one shard, by client id, oldest first.
#[derive(Default)]
pub struct Liveness {
    inner: Rc<Attached>,
}

/// One client's attached connections: (attachment number, PING handle), oldest first.
type ClientConnections = Vec<(u64, Rc<Pinger>)>;

#[derive(Default)]
struct Attached {
    by_client: RefCell<HashMap<ClientId, ClientConnections>>,
    next: Cell<u64>,
}

/// Keeps a connection attached until dropped (when its driver ends).
pub struct Attachment {
    attached: Rc<Attached>,
    client_id: ClientId,
    seq: u64,
    pinger: Rc<Pinger>,
}

impl Liveness {
    /// Attaches a connection of `client_id` with its PING handle (`None`: taken already).
    pub fn attach(&self, client_id: &ClientId, ping_pong: Option<h2::PingPong>) -> Attachment {
        let seq = self.inner.next.get();
        self.inner.next.set(seq + 1);
        let pinger = Rc::new(Pinger {
            ping_pong: futures::lock::Mutex::new(ping_pong),
            ended: Cell::new(false),
        });
        self.inner
            .by_client
            .borrow_mut()
            .entry(client_id.clone())
            .or_default()
            .push((seq, pinger.clone()));
        Attachment {
            attached: self.inner.clone(),
            client_id: client_id.clone(),
            seq,
            pinger,
        }
    }

    /// The connection `client_id` attached last: the one its newest task stream came on.
    pub fn newest(&self, client_id: &ClientId) -> Option<Rc<Pinger>> {
        let by_client = self.inner.by_client.borrow();
        by_client.get(client_id)?.last().map(|(_, p)| p.clone())
    }

    /// Connections attached now (for tests and the shard's bookkeeping).
    pub fn len(&self) -> usize {
        self.inner.by_client.borrow().values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.pinger.ended.set(true);
        let mut by_client = self.attached.by_client.borrow_mut();
        if let Some(list) = by_client.get_mut(&self.client_id) {
            list.retain(|(seq, _)| *seq != self.seq);
            if list.is_empty() {
                by_client.remove(&self.client_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the newest attachment is the one a new stream is tied to, and a detached
    // connection is dead without waiting for any deadline.
    #[test]
    fn attachments_track_the_newest_and_detached_ones_are_dead() {
        let liveness = Liveness::default();
        let client = ClientId::parse("C.0123456789abcdef").unwrap();
        let first = liveness.attach(&client, None);
        let second = liveness.attach(&client, None);
        let newest = liveness.newest(&client).expect("attached");
        assert!(Rc::ptr_eq(&newest, &second.pinger));
        let old = first.pinger.clone();
        drop(first);
        assert_eq!(liveness.len(), 1);
        let found = futures::executor::block_on(old.check(Duration::from_secs(60)));
        assert_eq!(found, Alive::No, "an ended connection is dead at once");
        drop(second);
        assert!(liveness.is_empty());
        assert!(liveness.newest(&client).is_none());
    }
}
