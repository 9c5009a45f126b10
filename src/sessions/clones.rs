//! Settling a client's older task stream once a newer one of the same client id opened
//! (on this shard, another shard or another frontend). A reconnect storm after a network
//! blip is not a clone: the older stream's connection is asked for an HTTP/2 PING answer
//! within `CLONE_LIVENESS_PING_DEADLINE`, and if it is dead (or already gone) the stream
//! is simply ended. If it answers, two live machines hold one key: the older agent is sent
//! a `Rekey` (it makes a new key, and so a new client id, and reconnects), the event is
//! counted (`packhunt_clone_detected_total`, `packhunt_fleet_rekeys_sent_total`) and
//! logged for the audit trail. Either way the older stream ends here, after its queued
//! frames.

use std::rc::Rc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::audit::{action, outcome, via, AuditEntry};
use crate::ids::ClientId;
use crate::limits::CLONE_LIVENESS_PING_DEADLINE;
use crate::metrics::metrics;
use crate::notify::mesh::ShardEvent;
use crate::protocol::{framing, pb};
use crate::sessions::liveness::{Alive, Pinger};
use crate::sessions::registry::{CloneAudit, Live};
use crate::sessions::shard::ShardCtx;

/// Who a clone's audit entry names: no operator did it.
const AUDIT_USER: &str = "system";

/// What the older agent is told (its log shows it).
const REKEY_REASON: &str = "this client id is connected from two places at once (a cloned \
                            machine or a copied writeback); this connection is the older one";

/// A newer stream of `client_id` on this shard replaced `old` in the registry
/// (`connection` is the newer stream's). A second stream on the very connection of the
/// first is the same agent reopening it: ended at once. Otherwise settled in a task of its
/// own, so the newer stream is not held up by the check.
pub fn replaced(
    client_id: ClientId,
    old: Live,
    connection: Option<&Rc<Pinger>>,
    audit: Option<CloneAudit>,
) {
    let same = match (&old.connection, connection) {
        (Some(a), Some(b)) => Rc::ptr_eq(a, b),
        _ => false,
    };
    if same {
        metrics()
            .clone_same_connection
            .fetch_add(1, Ordering::Relaxed);
        return;
    }
    glommio::spawn_local(settle(client_id, old, audit)).detach();
}

/// The hub says this client's stream `session` here was displaced by a newer one on
/// another shard or frontend. Nothing to do if it has ended already; else it leaves the
/// registry (and presence, here and on the master) and is settled.
pub async fn displaced(ctx: &ShardCtx, client_id: ClientId, session: u64) {
    let Some(old) = ctx.sessions.take(&client_id, session) else {
        return;
    };
    let gone = ShardEvent::Disconnected {
        client_id: client_id.clone(),
        shard: ctx.shard,
        session,
    };
    let _ = ctx.events.send(gone).await;
    settle(client_id, old, ctx.sessions.audit().cloned()).await;
}

/// Checks the older stream's connection, re-keys a live one, and ends the stream.
async fn settle(client_id: ClientId, old: Live, audit: Option<CloneAudit>) {
    let alive = match &old.connection {
        Some(pinger) => pinger.check(CLONE_LIVENESS_PING_DEADLINE).await,
        None => Alive::No,
    };
    let m = metrics();
    match alive {
        Alive::No => {
            m.clone_stale_replaced.fetch_add(1, Ordering::Relaxed);
            tracing::info!(client = %client_id, "older task stream's connection is dead; replaced");
        }
        Alive::Yes => {
            m.clone_detected.fetch_add(1, Ordering::Relaxed);
            let mut frames = old.frames.clone();
            let queued = frames.try_send(rekey_frame()).is_ok();
            let counter = if queued {
                &m.clone_rekeys_sent
            } else {
                &m.clone_rekeys_failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if let Some(audit) = audit {
                let outcome = if queued { outcome::OK } else { outcome::FAILED };
                let detail = format!(
                    "two live connections; the older one, on {}, was told to re-key",
                    audit.place
                );
                audit.log.record(
                    AuditEntry::now(
                        AUDIT_USER,
                        via::AGENT_PORT,
                        action::CLIENT_CLONE,
                        client_id.as_str(),
                        outcome,
                    )
                    .with_detail(Some(detail)),
                );
            }
            tracing::warn!(
                client = %client_id,
                rekey_sent = queued,
                "clone detected: one client id on two live connections; the older one is told to re-key"
            );
        }
    }
    // Dropping the last sender ends the older stream after the frames it holds.
    drop(old);
}

/// The `Rekey` server message, framed.
fn rekey_frame() -> Bytes {
    framing::encode(&pb::ServerMessage {
        kind: Some(pb::server_message::Kind::Rekey(pb::Rekey {
            reason: REKEY_REASON.to_string(),
        })),
    })
}
