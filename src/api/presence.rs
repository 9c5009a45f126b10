//! Which agents are connected, and where, as the API reports it. Fed by the agent
//! shards' presence queues; owned by the executor that serves the API.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::ids::ClientId;
use crate::shard::mesh::{PresenceEvent, PresenceReceiver};

#[derive(Default)]
pub struct Presence {
    /// client -> (shard, session) of its current task stream.
    live: RefCell<HashMap<ClientId, (usize, u64)>>,
}

impl Presence {
    pub fn apply(&self, event: PresenceEvent) {
        let mut live = self.live.borrow_mut();
        match event {
            PresenceEvent::Connected { client_id, shard, session } => {
                live.insert(client_id, (shard, session));
            }
            // Only the session that is current may remove the entry: a late
            // disconnect of an older stream must not hide a newer one.
            PresenceEvent::Disconnected { client_id, shard, session } => {
                if live.get(&client_id) == Some(&(shard, session)) {
                    live.remove(&client_id);
                }
            }
        }
    }

    pub fn is_connected(&self, client_id: &ClientId) -> bool {
        self.live.borrow().contains_key(client_id)
    }

    /// Every connected client, sorted by id.
    pub fn connected_ids(&self) -> Vec<ClientId> {
        let mut ids: Vec<ClientId> = self.live.borrow().keys().cloned().collect();
        ids.sort();
        ids
    }

    pub fn connected_count(&self) -> usize {
        self.live.borrow().len()
    }
}

/// Applies one shard's presence events for as long as the shard runs.
pub async fn follow(presence: Rc<Presence>, events: PresenceReceiver) {
    while let Some(event) = events.recv().await {
        presence.apply(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_disconnect_of_old_session_keeps_new_one() {
        let p = Presence::default();
        let c = ClientId::parse("C.0123456789abcdef").unwrap();
        p.apply(PresenceEvent::Connected { client_id: c.clone(), shard: 0, session: 1 });
        p.apply(PresenceEvent::Connected { client_id: c.clone(), shard: 1, session: 7 });
        p.apply(PresenceEvent::Disconnected { client_id: c.clone(), shard: 0, session: 1 });
        assert!(p.is_connected(&c));
        p.apply(PresenceEvent::Disconnected { client_id: c.clone(), shard: 1, session: 7 });
        assert!(!p.is_connected(&c));
    }
}
