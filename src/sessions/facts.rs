//! An agent's facts (its ClientInfo: hostname, os, version), which it sends first on
//! every connect and before anything else: hunts recruit an agent only once its
//! `info.json` exists, and the client list shows what it holds. Facts are a few hundred
//! bytes, so they take a path of their own rather than the general upload path's permits
//! (tuning.md, "P2 task delivery": a fresh 19,000-agent fleet's facts were shed with
//! tens of thousands of 503s while the permits were full):
//!
//! - the transport recognises a facts upload by its first bytes ([`is_facts_upload`]) and
//!   reads its body, capped at `MAX_FACTS_UPLOAD_BYTES`, without an upload permit;
//! - a frontend that recorded the same facts for that client recently answers from memory
//!   ([`FactsMemory`], shared by its shards, since a reconnect rarely lands on the shard
//!   of the last connect): no blocking-pool trip, nothing read or written;
//! - otherwise the facts take one of the shard's own small budget of blocking-pool trips
//!   (`FACTS_TRIPS_IN_FLIGHT_PER_SHARD_COUNT`), waiting in a queue sized for a whole
//!   fleet's first contact; `info.json` is written only when the facts changed (or its
//!   last_seen went stale: `datastore::client_info::record_facts_at`).
//!
//! Either way the master's client index hears the facts (`ShardEvent::Facts`).
//!
//! Each shard's budget is its own ([`ShardFacts`], in its `ShardCtx`); the memory is the
//! process's, behind a mutex held only for a map lookup or insert.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use glommio::sync::StaticPermit;

use crate::datastore::client_info::{self, cut_fact, Recorded};
use crate::datastore::ClientInfoDoc;
use crate::ids::ClientId;
use crate::limits::{
    FACTS_TRIPS_IN_FLIGHT_PER_SHARD_COUNT, FACTS_WAIT, MAX_FACTS_UPLOAD_BYTES,
    MAX_FACTS_WAITING_PER_SHARD_COUNT,
};
use crate::metrics::{metrics, DiskFullUpload, FactsOutcome, RejectReason};
use crate::notify::mesh::ShardEvent;
use crate::protocol::framing::{self, FrameError};
use crate::protocol::pb::{self, upload_ack};
use crate::runtime::offload::offload;
use crate::runtime::queued_permits::QueuedPermits;
use crate::sessions::disk_full;
use crate::sessions::shard::ShardCtx;
use crate::sessions::upload::{Answer, UploadError};

/// The tag of `Upload.info` (field 4, length-delimited) as protobuf writes it. The oneof
/// is an Upload's only field, so an encoded Upload carrying facts starts with this byte
/// right after the frame's length prefix.
const UPLOAD_INFO_TAG: u8 = (4 << 3) | 2;

/// Whether an upload body whose first DATA frame is `first` carries an agent's facts and
/// fits the facts path: its frame length prefix is complete, the whole frame is at most
/// `MAX_FACTS_UPLOAD_BYTES`, and its message starts with the ClientInfo field. Only a
/// routing hint: the body is decoded in full afterwards, and must then be a ClientInfo.
pub fn is_facts_upload(first: &[u8]) -> bool {
    let Some((frame_bytes, prefix_bytes)) = length_prefix(first) else {
        return false;
    };
    prefix_bytes as u64 + frame_bytes <= MAX_FACTS_UPLOAD_BYTES
        && first.get(prefix_bytes) == Some(&UPLOAD_INFO_TAG)
}

/// A frame's varint length and the bytes it took, if `bytes` holds all of it.
fn length_prefix(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Why facts were not recorded.
#[derive(Debug)]
pub enum FactsRefusal {
    /// See [`FactsBusy`]; only when recording took the facts budget ([`Budget::Take`]).
    Busy,
    /// Refused as any upload would be (bad frame, a full or failing datastore).
    Upload(UploadError),
}

impl From<UploadError> for FactsRefusal {
    fn from(e: UploadError) -> Self {
        Self::Upload(e)
    }
}

/// The shard's facts budget stayed full past `FACTS_WAIT`, or too many facts waited for
/// it: the transport answers 503 with its Retry-After policy. Counted as refused.
#[derive(Debug)]
pub struct FactsBusy;

/// The facts path: `body` is a whole upload body the transport read without an upload
/// permit (so at most `MAX_FACTS_UPLOAD_BYTES`); it must carry a ClientInfo and nothing
/// else.
pub async fn handle(
    ctx: &ShardCtx,
    client_id: &ClientId,
    body: Bytes,
) -> Result<Answer, FactsBusy> {
    let body_bytes = body.len() as u64;
    let disk_full_retry_after = ctx.config.limits.disk_full_retry_after;
    let decoded = framing::decode_single::<pb::Upload>(body, MAX_FACTS_UPLOAD_BYTES);
    let info = match decoded.map(|u| u.kind) {
        Ok(Some(pb::upload::Kind::Info(info))) => info,
        Ok(_) => {
            // Only a hand-made body starts like facts and then carries something else.
            let e = FrameError::BadMessage("a facts upload must carry a ClientInfo only".into());
            return Ok(Answer::rejected(&e.into(), disk_full_retry_after));
        }
        Err(e) => return Ok(Answer::rejected(&e.into(), disk_full_retry_after)),
    };
    match record(ctx, client_id, &info, Budget::Take).await {
        Ok(()) => {
            let m = metrics();
            m.uploads_accepted.fetch_add(1, Ordering::Relaxed);
            m.upload_bytes.fetch_add(body_bytes, Ordering::Relaxed);
            Ok(Answer::ok(upload_ack::Status::Ok, 0))
        }
        Err(FactsRefusal::Busy) => Err(FactsBusy),
        Err(FactsRefusal::Upload(e)) => {
            tracing::debug!(client = %client_id, "facts refused: {e}");
            if e.reason() == RejectReason::Overloaded {
                disk_full::refused(DiskFullUpload::ClientInfo, disk_full_retry_after);
            }
            Ok(Answer::rejected(&e, disk_full_retry_after))
        }
    }
}

/// Whether recording takes a trip of the shard's facts budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// The facts path: take one (wait for it, within bounds).
    Take,
    /// Facts that came through the general upload path hold an upload permit already,
    /// which bounds them.
    UploadPermitHeld,
}

/// Records an agent's facts: from memory when this frontend recorded the same facts for
/// it recently, otherwise through the blocking pool (writing `info.json` only if they
/// changed); then tells the hub, for the master's client index.
pub async fn record(
    ctx: &ShardCtx,
    client_id: &ClientId,
    info: &pb::ClientInfo,
    budget: Budget,
) -> Result<(), FactsRefusal> {
    let facts = Facts::cut(info);
    let shard = &ctx.facts;
    let doc = match shard.seen_recently(client_id, &facts, crate::clock::now_ms()) {
        Some(doc) => {
            metrics().facts(FactsOutcome::Cached);
            doc
        }
        None => {
            let _trip = match budget {
                Budget::Take => Some(shard.admit().await.ok_or_else(|| {
                    metrics().facts(FactsOutcome::Refused);
                    FactsRefusal::Busy
                })?),
                Budget::UploadPermitHeld => None,
            };
            let client = ctx.datastore.client(client_id);
            let owned = facts.owned();
            let (doc, recorded) = offload(move || {
                let (hostname, os, version) = &owned;
                let now_ms = crate::clock::now_ms();
                client_info::record_facts_at(&client, hostname, os, version, now_ms)
            })
            .await
            .map_err(UploadError::from)?;
            metrics().facts(match recorded {
                Recorded::Written => FactsOutcome::Written,
                Recorded::Unchanged => FactsOutcome::Unchanged,
            });
            shard.remember(client_id, facts.digest, &doc);
            doc
        }
    };
    // The hub drains this queue without touching the disk: this waits only as presence
    // does.
    let _ = ctx.events.send(ShardEvent::Facts(Box::new(doc))).await;
    Ok(())
}

/// An agent's facts as `info.json` keeps them (cut), with their digest.
struct Facts<'a> {
    hostname: &'a str,
    os: &'a str,
    version: &'a str,
    digest: u64,
}

impl<'a> Facts<'a> {
    fn cut(info: &'a pb::ClientInfo) -> Self {
        let (hostname, os, version) = (
            cut_fact(&info.hostname),
            cut_fact(&info.os),
            cut_fact(&info.version),
        );
        // SipHash with fixed keys: stable within the process, which is all a shard's
        // memory needs. A collision could only keep a client's own older facts until
        // last_seen goes stale.
        let mut hasher = std::hash::DefaultHasher::new();
        (hostname, os, version).hash(&mut hasher);
        Self {
            hostname,
            os,
            version,
            digest: hasher.finish(),
        }
    }

    fn owned(&self) -> (String, String, String) {
        (self.hostname.into(), self.os.into(), self.version.into())
    }
}

/// The facts this frontend recorded recently, shared by its shards. Cloning shares it.
#[derive(Clone)]
pub struct FactsMemory(Arc<Mutex<SeenFacts>>);

impl FactsMemory {
    /// Remembers at most `max_count` clients.
    pub fn new(max_count: usize) -> Self {
        Self(Arc::new(Mutex::new(SeenFacts::new(max_count))))
    }

    fn with<T>(&self, f: impl FnOnce(&mut SeenFacts) -> T) -> T {
        // A panic while the map was held leaves at worst an entry short; keep serving.
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// One shard's facts state: its budget of blocking-pool trips, and the frontend's memory
/// of recent facts.
pub struct ShardFacts {
    trips: QueuedPermits,
    memory: FactsMemory,
}

/// A trip of the facts budget; updates the in-flight gauge.
struct Trip {
    _permit: StaticPermit,
}

impl Drop for Trip {
    fn drop(&mut self) {
        metrics()
            .facts_trips_in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl ShardFacts {
    /// A shard's state with the default budget, sharing `memory`.
    pub fn new(memory: FactsMemory) -> Self {
        Self::with_budget(
            FACTS_TRIPS_IN_FLIGHT_PER_SHARD_COUNT,
            MAX_FACTS_WAITING_PER_SHARD_COUNT,
            memory,
        )
    }

    fn with_budget(trips: usize, max_waiting: usize, memory: FactsMemory) -> Self {
        Self {
            trips: QueuedPermits::new(trips as u64, max_waiting, FACTS_WAIT),
            memory,
        }
    }

    /// A trip of the budget, or None when too many wait already or none came back
    /// within `FACTS_WAIT`.
    async fn admit(&self) -> Option<Trip> {
        let permit = self.trips.acquire(&metrics().facts_waiting).await?;
        metrics()
            .facts_trips_in_flight
            .fetch_add(1, Ordering::Relaxed);
        Some(Trip { _permit: permit })
    }

    /// The client's `info.json` as this frontend last recorded it, if that was these facts
    /// and recent enough that recording them again would write nothing.
    fn seen_recently(
        &self,
        client_id: &ClientId,
        facts: &Facts<'_>,
        now_ms: u64,
    ) -> Option<ClientInfoDoc> {
        let seen = self
            .memory
            .with(|memory| memory.recent(client_id, facts.digest, now_ms))?;
        Some(ClientInfoDoc {
            client_id: client_id.clone(),
            hostname: facts.hostname.into(),
            os: facts.os.into(),
            labels: seen.labels.to_vec(),
            first_seen_ms: seen.first_seen_ms,
            last_seen_ms: seen.last_seen_ms,
            version: facts.version.into(),
        })
    }

    fn remember(&self, client_id: &ClientId, digest: u64, doc: &ClientInfoDoc) {
        let seen = Seen {
            digest,
            first_seen_ms: doc.first_seen_ms,
            last_seen_ms: doc.last_seen_ms,
            labels: doc.labels.clone().into_boxed_slice(),
        };
        self.memory
            .with(|memory| memory.insert(client_id.clone(), seen));
    }
}

/// What a shard remembers of a client's recorded `info.json`: the digest of its facts
/// and the rest of the document, so that a hit can tell the client index without a read.
#[derive(Debug, Clone)]
struct Seen {
    digest: u64,
    first_seen_ms: u64,
    last_seen_ms: u64,
    labels: Box<[String]>,
}

/// Recently recorded facts, bounded by a count: two generations, the young one taking
/// every insert; when it holds half the bound the old one is forgotten and the young
/// one becomes old. A hit in the old generation moves back to the young one. So the
/// clients forgotten are always those recorded or seen longest ago, at O(1) a call.
struct SeenFacts {
    young: HashMap<ClientId, Seen>,
    old: HashMap<ClientId, Seen>,
    /// Invariant: `young.len() < generation_count` between calls, so both together hold
    /// under twice that (≤ the bound).
    generation_count: usize,
}

impl SeenFacts {
    fn new(max_count: usize) -> Self {
        Self {
            young: HashMap::new(),
            old: HashMap::new(),
            generation_count: (max_count / 2).max(1),
        }
    }

    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// The client's entry if it holds `digest` and its last_seen is still recent.
    fn recent(&mut self, client_id: &ClientId, digest: u64, now_ms: u64) -> Option<Seen> {
        let fresh = |s: &Seen| {
            s.digest == digest && client_info::last_seen_is_recent(s.last_seen_ms, now_ms)
        };
        if let Some(seen) = self.young.get(client_id) {
            return fresh(seen).then(|| seen.clone());
        }
        let seen = self.old.get(client_id).filter(|s| fresh(s))?.clone();
        let (id, entry) = self
            .old
            .remove_entry(client_id)
            .expect("just found in the old generation");
        self.insert(id, entry);
        Some(seen)
    }

    fn insert(&mut self, client_id: ClientId, seen: Seen) {
        let before = self.len();
        self.old.remove(&client_id);
        self.young.insert(client_id, seen);
        if self.young.len() >= self.generation_count {
            let forgotten = std::mem::replace(&mut self.old, std::mem::take(&mut self.young));
            metrics()
                .facts_seen_forgotten
                .fetch_add(forgotten.len() as u64, Ordering::Relaxed);
        }
        debug_assert!(self.len() < 2 * self.generation_count);
        let delta = self.len() as i64 - before as i64;
        metrics()
            .facts_seen_entries
            .fetch_add(delta, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use prost::Message;

    use super::*;

    fn encoded(kind: pb::upload::Kind) -> Bytes {
        framing::encode(&pb::Upload { kind: Some(kind) })
    }

    fn info(hostname: &str) -> pb::ClientInfo {
        pb::ClientInfo {
            hostname: hostname.into(),
            os: "linux".into(),
            version: "1.0".into(),
        }
    }

    // Goal: only an upload carrying facts small enough takes the facts path, whatever
    // else an agent sends. Method: encode every kind of upload and look at its start.
    #[test]
    fn recognises_facts_and_nothing_else() {
        assert!(is_facts_upload(&encoded(pb::upload::Kind::Info(info(
            "web-01"
        )))));
        assert!(is_facts_upload(&encoded(pb::upload::Kind::Info(
            pb::ClientInfo::default()
        ))));
        let others = [
            pb::upload::Kind::Result(pb::ResultBatch::default()),
            pb::upload::Kind::Status(pb::FlowStatus::default()),
            pb::upload::Kind::File(pb::FileChunk::default()),
            pb::upload::Kind::Events(pb::EventBatch::default()),
        ];
        for kind in others {
            let body = encoded(kind.clone());
            assert!(!is_facts_upload(&body), "{kind:?}");
        }
        // The largest facts the server keeps fit; beyond the cap, the general path.
        let widest = "\u{10348}".repeat(crate::limits::MAX_CLIENT_FACT_CHARS);
        let widest = pb::ClientInfo {
            hostname: widest.clone(),
            os: widest.clone(),
            version: widest,
        };
        assert!(is_facts_upload(&encoded(pb::upload::Kind::Info(widest))));
        let huge = info(&"h".repeat(MAX_FACTS_UPLOAD_BYTES as usize));
        assert!(!is_facts_upload(&encoded(pb::upload::Kind::Info(huge))));
        // A first DATA frame too short to tell: the general path.
        let body = encoded(pb::upload::Kind::Info(info("web-01")));
        assert!(!is_facts_upload(&body[..1]));
        assert!(!is_facts_upload(&[]));
        assert!(!is_facts_upload(&[0x80, 0x80]));
        // The ClientInfo on its own (no Upload around it) is not an upload of facts.
        let bare = info("web-01").encode_length_delimited_to_vec();
        assert!(!is_facts_upload(&bare));
    }

    fn property_cases() -> proptest::test_runner::Config {
        proptest::test_runner::Config {
            cases: crate::limits::DEFAULT_PROPERTY_TEST_CASES_COUNT,
            failure_persistence: None,
            ..Default::default()
        }
    }

    proptest::proptest! {
        #![proptest_config(property_cases())]

        // Goal: the routing hint agrees with the decoder on every well-formed upload, and
        // no byte string makes it panic. Method: uploads of every kind with arbitrary
        // text, and raw bytes.
        #[test]
        fn the_hint_matches_what_the_body_carries(
            text in "\\PC{0,1500}",
            kind in 0u8..5,
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..32),
        ) {
            use pb::upload::Kind;
            let kind = match kind {
                0 => Kind::Info(pb::ClientInfo { hostname: text.clone(), os: text, version: "1".into() }),
                1 => Kind::Result(pb::ResultBatch { flow_id: text, ..Default::default() }),
                2 => Kind::Status(pb::FlowStatus { flow_id: text, ..Default::default() }),
                3 => Kind::File(pb::FileChunk { path: text, ..Default::default() }),
                _ => Kind::Events(pb::EventBatch { artifact: text, ..Default::default() }),
            };
            let is_info = matches!(kind, Kind::Info(_));
            let body = encoded(kind);
            let fits = body.len() as u64 <= MAX_FACTS_UPLOAD_BYTES;
            proptest::prop_assert_eq!(is_facts_upload(&body), is_info && fits);
            let _ = is_facts_upload(&raw);
        }
    }

    fn seen(digest: u64, last_seen_ms: u64) -> Seen {
        Seen {
            digest,
            first_seen_ms: 1,
            last_seen_ms,
            labels: Box::new([]),
        }
    }

    fn id(n: u64) -> ClientId {
        ClientId::parse(&format!("C.{n:016x}")).unwrap()
    }

    // Goal: a hit needs the same facts and a last_seen recent enough that nothing would
    // be written; the memory stays bounded and forgets the oldest first. Method: drive
    // the two generations directly.
    #[test]
    fn remembers_recent_facts_within_its_bound() {
        let interval = crate::limits::LAST_SEEN_WRITE_INTERVAL_MS;
        let mut memory = SeenFacts::new(4);
        memory.insert(id(1), seen(7, 1_000));
        assert!(memory.recent(&id(1), 7, 1_000 + interval - 1).is_some());
        assert!(memory.recent(&id(1), 8, 1_000).is_none(), "other facts");
        assert!(
            memory.recent(&id(1), 7, 1_000 + interval).is_none(),
            "stale"
        );
        assert!(memory.recent(&id(2), 7, 1_000).is_none(), "never seen");

        // Bound 4: generations of 2. 1 and 2 become old when 2 arrives; 1 is seen again
        // (back to young), so 3's arrival ages 1 and 3 and forgets 2, the oldest.
        memory.insert(id(2), seen(7, 1_000));
        assert_eq!((memory.young.len(), memory.old.len()), (0, 2));
        assert!(memory.recent(&id(1), 7, 1_000).is_some());
        memory.insert(id(3), seen(7, 1_000));
        assert!(memory.len() <= 4);
        assert!(memory.recent(&id(2), 7, 1_000).is_none(), "the oldest went");
        assert!(memory.recent(&id(1), 7, 1_000).is_some());
        assert!(memory.recent(&id(3), 7, 1_000).is_some());
        for n in 10..100 {
            memory.insert(id(n), seen(7, 1_000));
            assert!(memory.len() < 4);
        }
        assert!(
            memory.recent(&id(99), 7, 1_000).is_some(),
            "the newest stays"
        );
    }

    // Goal: facts wait for the shard's small budget, in a bounded queue, and are refused
    // only past it. Method: hold the one trip and watch waiters time out or get it.
    #[test]
    fn the_budget_queues_then_refuses() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let facts = Rc::new(ShardFacts::with_budget(1, 1, FactsMemory::new(4)));
                let held = facts.admit().await.expect("the one trip");
                let f = facts.clone();
                let waiter = glommio::spawn_local(async move { f.admit().await.is_some() });
                glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
                assert!(facts.admit().await.is_none(), "the queue is full");
                drop(held);
                assert!(waiter.await, "a waiter gets the trip given back");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
