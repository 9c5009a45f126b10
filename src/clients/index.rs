//! The client index itself: every known client's facts and labels, kept sorted by
//! hostname then id, joined with presence when a page is built.
//!
//! Owned by the master's priority executor (`Rc`, `RefCell`, never shared); every
//! method is synchronous and touches no file, so the agent path never waits on it and
//! the API answers from memory. What feeds it is `feed.rs`.
//!
//! Memory: one `Entry` per client (~72 bytes, the id as a number, OS, version and labels
//! as 4-byte symbols into one table of distinct strings) plus its hostname on the heap,
//! one slot in the id map and 4 bytes in the sorted order: 136 bytes a client as measured
//! (tuning.md, "GUI client index").

use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::search::{contains_folded, Query, Term};
use crate::datastore::ClientInfoDoc;
use crate::ids::ClientId;
use crate::metrics::{metrics, ClientIndexRefresh};
use crate::notify::presence::Presence;

/// Index into `Strings`.
type Sym = u32;

/// A slot in `Entries::slots`; slots are never freed (clients are never forgotten).
type Slot = u32;

/// One client as a page shows it: the index's facts and labels joined with presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientView {
    pub client_id: ClientId,
    pub hostname: String,
    pub os: String,
    pub version: String,
    pub labels: Vec<String>,
    pub first_seen_ms: u64,
    /// As recorded; a connected client's is "now" in the API's answer.
    pub last_seen_ms: u64,
    /// The frontend the client's task stream is on; `None` when not connected.
    pub frontend: Option<Rc<str>>,
}

/// One page of a search.
#[derive(Debug, Clone)]
pub struct Page {
    /// Clients matching the whole query, over every page.
    pub total: usize,
    pub start: usize,
    pub items: Vec<ClientView>,
    /// False while the index is still reading the datastore at start: `total` may grow.
    pub complete: bool,
}

/// A client's `info.json` as read from the datastore by the feed.
#[derive(Debug)]
pub enum DiskRead {
    Found(ClientInfoDoc),
    /// A folder without `info.json` (e.g. made by a collection before the agent's facts
    /// landed): not listed until facts arrive.
    Missing(ClientId),
    /// `info.json` exists but could not be read: listed with empty facts, so the operator
    /// still sees the client.
    Unreadable(ClientId),
}

pub struct ClientIndex {
    entries: RefCell<Entries>,
    presence: Rc<Presence>,
    complete: Cell<bool>,
}

impl ClientIndex {
    pub fn new(presence: Rc<Presence>) -> Self {
        Self {
            entries: RefCell::new(Entries::default()),
            presence,
            complete: Cell::new(false),
        }
    }

    /// The start-up load has read every client folder.
    pub fn set_complete(&self, took: Duration) {
        self.complete.set(true);
        let m = metrics();
        m.client_index_complete
            .store(1, std::sync::atomic::Ordering::Relaxed);
        let ms = took.as_millis().min(i64::MAX as u128) as i64;
        m.client_index_load_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_complete(&self) -> bool {
        self.complete.get()
    }

    /// Clients listed (with facts).
    pub fn len(&self) -> usize {
        self.entries.borrow().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An agent's facts as its frontend just recorded them (newer than anything read
    /// from disk before). Labels are taken only from this frontend's shards, which read
    /// them with the facts, and only if the index has none yet (an API change is newer).
    pub fn agent_facts(&self, doc: &ClientInfoDoc, source: ClientIndexRefresh) {
        let mut entries = self.entries.borrow_mut();
        let slot = entries.slot_of(&doc.client_id);
        let mut relist = Vec::new();
        entries.set_facts(slot, doc, &mut relist);
        if source == ClientIndexRefresh::AgentFacts && !entries.labels_known(slot) {
            entries.set_labels(slot, &doc.labels);
        }
        entries.relist(relist);
        metrics().client_index_refreshed(source, 1);
        entries.publish_len();
    }

    /// Documents read from the datastore (`Load` at start, `Resync` after a snapshot).
    /// Facts already heard from an agent win over the load's (they are newer); a
    /// resync's win when at least as recent. Labels from disk fill only an entry that
    /// has none yet.
    pub fn disk_reads(&self, reads: Vec<DiskRead>, source: ClientIndexRefresh) {
        let mut entries = self.entries.borrow_mut();
        let mut relist = Vec::new();
        let mut changed = 0;
        for read in reads {
            match read {
                DiskRead::Found(doc) => {
                    let slot = entries.slot_of(&doc.client_id);
                    let take = match entries.facts_seen_ms(slot) {
                        None => true,
                        Some(_) if source == ClientIndexRefresh::Load => false,
                        Some(last_seen_ms) => doc.last_seen_ms >= last_seen_ms,
                    };
                    if take {
                        entries.set_facts(slot, &doc, &mut relist);
                    }
                    if !entries.labels_known(slot) {
                        entries.set_labels(slot, &doc.labels);
                    }
                    changed += 1;
                }
                DiskRead::Unreadable(id) => {
                    metrics()
                        .client_index_unreadable
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let slot = entries.slot_of(&id);
                    if entries.facts_seen_ms(slot).is_none() {
                        let empty = ClientInfoDoc {
                            client_id: id,
                            hostname: String::new(),
                            os: String::new(),
                            labels: Vec::new(),
                            first_seen_ms: 0,
                            last_seen_ms: 0,
                            version: String::new(),
                        };
                        entries.set_facts(slot, &empty, &mut relist);
                    }
                }
                DiskRead::Missing(_) => {}
            }
        }
        entries.relist(relist);
        metrics().client_index_refreshed(source, changed);
        entries.publish_len();
    }

    /// An operator changed the client's labels (already on disk): shown at once.
    pub fn set_labels(&self, client_id: &ClientId, labels: &[String]) {
        let mut entries = self.entries.borrow_mut();
        let slot = entries.slot_of(client_id);
        entries.set_labels(slot, labels);
        metrics().client_index_refreshed(ClientIndexRefresh::Labels, 1);
    }

    /// These clients disconnected now: their last seen time is now.
    pub fn left(&self, clients: &[ClientId], now_ms: u64) {
        let mut entries = self.entries.borrow_mut();
        for id in clients {
            if let Some(&slot) = entries.by_id.get(&id_number(id)) {
                let e = &mut entries.slots[slot as usize];
                e.last_seen_ms = e.last_seen_ms.max(now_ms);
            }
        }
    }

    /// One client, if listed.
    pub fn get(&self, client_id: &ClientId) -> Option<ClientView> {
        let entries = self.entries.borrow();
        let slot = *entries.by_id.get(&id_number(client_id))?;
        entries.slots[slot as usize]
            .listed()
            .then(|| entries.view(slot, &self.presence))
    }

    /// A client's OS and labels, for checking a hunt's condition without its info.json:
    /// None when not listed, or listed with facts that could not be read (empty OS).
    pub fn os_and_labels(&self, client_id: &ClientId) -> Option<(String, Vec<String>)> {
        let entries = self.entries.borrow();
        let slot = *entries.by_id.get(&id_number(client_id))?;
        let e = &entries.slots[slot as usize];
        let os = entries.strings.name(e.os);
        if !e.listed() || os.is_empty() {
            return None;
        }
        let labels = e
            .labels
            .iter()
            .map(|l| entries.strings.name(*l).to_string());
        Some((os.to_string(), labels.collect()))
    }

    /// The clients matching `query`, in order, from `start`, at most `limit` of them,
    /// with the count of all that match.
    pub fn search(&self, query: &Query, start: usize, limit: usize) -> Page {
        let started = Instant::now();
        let entries = self.entries.borrow();
        let (total, slots) = if query.is_everything() {
            let order = &entries.order;
            let from = start.min(order.len());
            let to = from.saturating_add(limit).min(order.len());
            (order.len(), order[from..to].to_vec())
        } else {
            entries.scan(query, &self.presence, start, limit)
        };
        let items = slots
            .into_iter()
            .map(|slot| entries.view(slot, &self.presence))
            .collect();
        let m = metrics();
        m.client_index_searches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        m.client_index_search_latency.observe(started.elapsed());
        Page {
            total,
            start,
            items,
            complete: self.complete.get(),
        }
    }
}

/// Distinct OS names, versions and labels, each stored once.
#[derive(Default)]
struct Strings {
    names: Vec<Rc<str>>,
    syms: HashMap<Rc<str>, Sym>,
}

impl Strings {
    fn intern(&mut self, s: &str) -> Sym {
        if let Some(&sym) = self.syms.get(s) {
            return sym;
        }
        let name: Rc<str> = Rc::from(s);
        let sym = self.names.len() as Sym;
        self.names.push(name.clone());
        self.syms.insert(name, sym);
        sym
    }

    fn get(&self, s: &str) -> Option<Sym> {
        self.syms.get(s).copied()
    }

    fn name(&self, sym: Sym) -> &str {
        &self.names[sym as usize]
    }
}

const FACTS_KNOWN: u8 = 1;
const LABELS_KNOWN: u8 = 2;

struct Entry {
    /// The 16 hex digits of the client id.
    id: u64,
    hostname: Box<str>,
    os: Sym,
    version: Sym,
    /// Invariant: sorted by name, each once.
    labels: Box<[Sym]>,
    first_seen_ms: u64,
    last_seen_ms: u64,
    /// `FACTS_KNOWN`: listed (and in `order`); `LABELS_KNOWN`: labels came from the API,
    /// an agent's shard or the datastore, so an older source must not replace them.
    known: u8,
}

impl Entry {
    fn listed(&self) -> bool {
        self.known & FACTS_KNOWN != 0
    }
}

#[derive(Default)]
struct Entries {
    slots: Vec<Entry>,
    by_id: HashMap<u64, Slot>,
    /// Invariant: exactly the listed slots, sorted by `order_of`.
    order: Vec<Slot>,
    strings: Strings,
}

impl Entries {
    fn slot_of(&mut self, client_id: &ClientId) -> Slot {
        let id = id_number(client_id);
        if let Some(&slot) = self.by_id.get(&id) {
            return slot;
        }
        let empty = self.strings.intern("");
        let slot = self.slots.len() as Slot;
        self.slots.push(Entry {
            id,
            hostname: Box::from(""),
            os: empty,
            version: empty,
            labels: Box::new([]),
            first_seen_ms: 0,
            last_seen_ms: 0,
            known: 0,
        });
        self.by_id.insert(id, slot);
        slot
    }

    fn facts_seen_ms(&self, slot: Slot) -> Option<u64> {
        let e = &self.slots[slot as usize];
        e.listed().then_some(e.last_seen_ms)
    }

    fn labels_known(&self, slot: Slot) -> bool {
        self.slots[slot as usize].known & LABELS_KNOWN != 0
    }

    /// Sets the facts; a slot whose place in the order changes leaves `order` now and is
    /// pushed on `relist` to be put back by `relist()`.
    fn set_facts(&mut self, slot: Slot, doc: &ClientInfoDoc, relist: &mut Vec<Slot>) {
        let (os, version) = (
            self.strings.intern(&doc.os),
            self.strings.intern(&doc.version),
        );
        let e = &self.slots[slot as usize];
        let moves = !e.listed() || *e.hostname != *doc.hostname;
        if moves && e.listed() {
            self.unlist(slot);
        }
        let e = &mut self.slots[slot as usize];
        if moves {
            e.hostname = Box::from(doc.hostname.as_str());
            relist.push(slot);
        }
        e.os = os;
        e.version = version;
        e.first_seen_ms = doc.first_seen_ms;
        e.last_seen_ms = e.last_seen_ms.max(doc.last_seen_ms);
        e.known |= FACTS_KNOWN;
    }

    fn set_labels(&mut self, slot: Slot, labels: &[String]) {
        let mut syms: Vec<Sym> = labels.iter().map(|l| self.strings.intern(l)).collect();
        syms.sort_by(|a, b| self.strings.name(*a).cmp(self.strings.name(*b)));
        syms.dedup();
        let e = &mut self.slots[slot as usize];
        e.labels = syms.into_boxed_slice();
        e.known |= LABELS_KNOWN;
    }

    fn unlist(&mut self, slot: Slot) {
        let key = &self.slots[slot as usize];
        let found = self
            .order
            .binary_search_by(|&o| order_of(&self.slots[o as usize], key));
        debug_assert!(found.is_ok(), "a listed slot is in the order");
        if let Ok(at) = found {
            self.order.remove(at);
        }
    }

    /// Puts `slots` (listed, out of `order`) back in order: one binary insert, or for a
    /// batch a sort of the batch and one merge, so a load of n clients in batches of b
    /// costs O(n²/b) moves instead of O(n²).
    fn relist(&mut self, mut slots: Vec<Slot>) {
        let entries = &self.slots;
        let cmp = |a: &Slot, b: &Slot| order_of(&entries[*a as usize], &entries[*b as usize]);
        if let [slot] = slots[..] {
            let at = self
                .order
                .partition_point(|o| cmp(o, &slot) == Ordering::Less);
            self.order.insert(at, slot);
            return;
        }
        slots.sort_unstable_by(cmp);
        let old = std::mem::take(&mut self.order);
        let mut merged = Vec::with_capacity(old.len() + slots.len());
        let (mut a, mut b) = (old.into_iter().peekable(), slots.into_iter().peekable());
        while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
            if cmp(x, y) == Ordering::Less {
                merged.extend(a.next());
            } else {
                merged.extend(b.next());
            }
        }
        merged.extend(a);
        merged.extend(b);
        self.order = merged;
    }

    fn publish_len(&self) {
        metrics().client_index_entries.store(
            self.order.len() as i64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Walks the order once: counts every match, keeps the slots of the page.
    fn scan(
        &self,
        query: &Query,
        presence: &Presence,
        start: usize,
        limit: usize,
    ) -> (usize, Vec<Slot>) {
        let Some(matcher) = Matcher::new(query, &self.strings) else {
            return (0, Vec::new());
        };
        let mut page = Vec::new();
        let mut total = 0usize;
        let mut buf = [0u8; ID_TEXT_BYTES];
        for &slot in &self.order {
            let e = &self.slots[slot as usize];
            if !matcher.matches(e) {
                continue;
            }
            if let Some(want) = query.connected {
                let connected = presence.frontend_of_str(id_text(e.id, &mut buf)).is_some();
                if connected != want {
                    continue;
                }
            }
            if total >= start && page.len() < limit {
                page.push(slot);
            }
            total += 1;
        }
        (total, page)
    }

    fn view(&self, slot: Slot, presence: &Presence) -> ClientView {
        let e = &self.slots[slot as usize];
        let mut buf = [0u8; ID_TEXT_BYTES];
        let text = id_text(e.id, &mut buf);
        ClientView {
            client_id: ClientId::parse(text).expect("a formatted id is a valid client id"),
            hostname: e.hostname.to_string(),
            os: self.strings.name(e.os).to_string(),
            version: self.strings.name(e.version).to_string(),
            labels: e
                .labels
                .iter()
                .map(|l| self.strings.name(*l).to_string())
                .collect(),
            first_seen_ms: e.first_seen_ms,
            last_seen_ms: e.last_seen_ms,
            frontend: presence.frontend_of_str(text),
        }
    }
}

/// A query's terms resolved against the string table once, so matching an entry is a
/// few integer compares and at most one substring search per word.
struct Matcher<'q> {
    words: Vec<(&'q str, Option<super::search::IdPrefix>)>,
    hosts: Vec<&'q str>,
    labels: Vec<Sym>,
    /// Each `os:` term as the symbols whose name equals it ignoring case.
    oses: Vec<Vec<Sym>>,
}

impl<'q> Matcher<'q> {
    /// `None` when nothing can match (a label or OS no client has).
    fn new(query: &'q Query, strings: &Strings) -> Option<Self> {
        let mut m = Matcher {
            words: Vec::new(),
            hosts: Vec::new(),
            labels: Vec::new(),
            oses: Vec::new(),
        };
        for term in &query.terms {
            match term {
                Term::Word { lower, id_prefix } => m.words.push((lower, *id_prefix)),
                Term::Host(lower) => m.hosts.push(lower),
                Term::Label(label) => m.labels.push(strings.get(label)?),
                Term::Os(lower) => {
                    let syms: Vec<Sym> = (0..strings.names.len() as Sym)
                        .filter(|s| strings.name(*s).to_lowercase() == *lower)
                        .collect();
                    if syms.is_empty() {
                        return None;
                    }
                    m.oses.push(syms);
                }
            }
        }
        Some(m)
    }

    fn matches(&self, e: &Entry) -> bool {
        self.labels.iter().all(|l| e.labels.contains(l))
            && self.oses.iter().all(|any| any.contains(&e.os))
            && self.hosts.iter().all(|h| contains_folded(&e.hostname, h))
            && self.words.iter().all(|(word, prefix)| {
                prefix.is_some_and(|p| p.matches(e.id)) || contains_folded(&e.hostname, word)
            })
    }
}

/// Hostname (ASCII case folded), then hostname as stored, then id: a total order, so
/// pages are stable.
fn order_of(a: &Entry, b: &Entry) -> Ordering {
    a.hostname
        .bytes()
        .map(|c| c.to_ascii_lowercase())
        .cmp(b.hostname.bytes().map(|c| c.to_ascii_lowercase()))
        .then_with(|| a.hostname.cmp(&b.hostname))
        .then(a.id.cmp(&b.id))
}

/// `C.` + 16 hex digits.
const ID_TEXT_BYTES: usize = 18;

/// The 16 hex digits of a client id as a number. `ClientId::parse` guarantees the form.
pub(crate) fn id_number(client_id: &ClientId) -> u64 {
    u64::from_str_radix(&client_id.as_str()[2..], 16).expect("a client id is C. and 16 hex digits")
}

/// The id's text in `buf`, without allocating.
fn id_text(id: u64, buf: &mut [u8; ID_TEXT_BYTES]) -> &str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf[0] = b'C';
    buf[1] = b'.';
    for i in 0..16 {
        buf[2 + i] = HEX[((id >> (60 - 4 * i)) & 0xf) as usize];
    }
    std::str::from_utf8(buf).expect("ASCII")
}

#[cfg(test)]
mod tests {
    //! Goal: the order is stable (hostname ignoring case, then id), searches count every
    //! match and page through them, and each feed keeps the newest facts and labels.
    //! Method: an index over a Presence with some clients connected, fed directly.

    use super::*;
    use crate::config::FrontendRole;
    use crate::notify::mesh::ShardEvent;

    fn id(n: u64) -> ClientId {
        ClientId::parse(&format!("C.{n:016x}")).unwrap()
    }

    fn doc(n: u64, hostname: &str, os: &str, labels: &[&str], last_seen_ms: u64) -> ClientInfoDoc {
        ClientInfoDoc {
            client_id: id(n),
            hostname: hostname.into(),
            os: os.into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            first_seen_ms: 1,
            last_seen_ms,
            version: "1.0".into(),
        }
    }

    fn index() -> (ClientIndex, Rc<Presence>) {
        let presence = Rc::new(Presence::new("master:1", FrontendRole::Master, &[]));
        (ClientIndex::new(presence.clone()), presence)
    }

    fn ids(page: &Page) -> Vec<String> {
        page.items.iter().map(|v| v.client_id.to_string()).collect()
    }

    fn search(index: &ClientIndex, search: &str, connected: Option<bool>) -> Page {
        index.search(&Query::parse(search, connected).unwrap(), 0, 1000)
    }

    // Goal: a hunt's condition is checked on the facts and labels the index holds, and
    // on nothing for a client it does not list or whose facts could not be read.
    #[test]
    fn os_and_labels_only_for_clients_with_known_facts() {
        let (index, _) = index();
        let reads = vec![
            DiskRead::Found(doc(1, "web", "linux", &["eu"], 1)),
            DiskRead::Missing(id(2)),
            DiskRead::Unreadable(id(3)),
        ];
        index.disk_reads(reads, ClientIndexRefresh::Load);
        assert_eq!(
            index.os_and_labels(&id(1)),
            Some(("linux".to_string(), vec!["eu".to_string()]))
        );
        index.set_labels(&id(1), &["prod".to_string()]);
        assert_eq!(index.os_and_labels(&id(1)).unwrap().1, ["prod"]);
        for unknown in [2, 3, 4] {
            assert_eq!(index.os_and_labels(&id(unknown)), None, "{unknown}");
        }
    }

    #[test]
    fn ordered_by_hostname_ignoring_case_then_id() {
        let (index, _) = index();
        let reads = vec![
            DiskRead::Found(doc(3, "web", "linux", &[], 1)),
            DiskRead::Found(doc(1, "Web", "linux", &[], 1)),
            DiskRead::Found(doc(2, "app", "linux", &[], 1)),
            DiskRead::Found(doc(4, "web", "linux", &[], 1)),
            DiskRead::Missing(id(5)),
        ];
        index.disk_reads(reads, ClientIndexRefresh::Load);
        index.agent_facts(
            &doc(9, "Db", "linux", &[], 2),
            ClientIndexRefresh::AgentFacts,
        );
        let all = search(&index, "", None);
        let hosts: Vec<&str> = all.items.iter().map(|v| v.hostname.as_str()).collect();
        assert_eq!(hosts, ["app", "Db", "Web", "web", "web"]);
        assert_eq!(ids(&all)[3..], [id(3).to_string(), id(4).to_string()]);
        assert_eq!(all.total, 5, "a folder without info.json is not listed");

        // A renamed host moves; nothing is listed twice.
        index.agent_facts(
            &doc(2, "zeta", "linux", &[], 3),
            ClientIndexRefresh::AgentFacts,
        );
        let hosts: Vec<String> = search(&index, "", None)
            .items
            .into_iter()
            .map(|v| v.hostname)
            .collect();
        assert_eq!(hosts, ["Db", "Web", "web", "web", "zeta"]);
    }

    #[test]
    fn terms_all_match_and_pages_count_everything() {
        let (index, presence) = index();
        let mut reads = Vec::new();
        for n in 0..300u64 {
            let os = if n % 3 == 0 { "Windows" } else { "linux" };
            let labels: &[&str] = if n % 2 == 0 { &["even"] } else { &[] };
            reads.push(DiskRead::Found(doc(
                n,
                &format!("host-{n:03}"),
                os,
                labels,
                1,
            )));
        }
        index.disk_reads(reads, ClientIndexRefresh::Load);
        for n in (0..300).step_by(5) {
            presence.apply(ShardEvent::Connected {
                client_id: id(n),
                shard: 0,
                session: 1,
            });
        }
        let total = |s: &str, c: Option<bool>| search(&index, s, c).total;
        assert_eq!(total("", None), 300);
        assert_eq!(total("label:even", None), 150);
        assert_eq!(total("label:even os:windows", None), 50);
        assert_eq!(total("os:LINUX", None), 200);
        assert_eq!(total("label:nobody", None), 0);
        assert_eq!(total("os:plan9", None), 0);
        assert_eq!(total("HOST-1", None), 100);
        assert_eq!(total("host:-2", None), 100);
        assert_eq!(total("", Some(true)), 60);
        assert_eq!(total("", Some(false)), 240);
        assert_eq!(total("label:even", Some(true)), 30);
        assert_eq!(total(&id(42).to_string(), None), 1);
        assert_eq!(total("C.00000000000001", None), 44, "ids 0x100..=299");
        assert_eq!(total("C.", None), 300);

        let query = Query::parse("label:even", None).unwrap();
        let mut seen = Vec::new();
        for start in (0..200).step_by(40) {
            let page = index.search(&query, start, 40);
            assert_eq!((page.total, page.start), (150, start));
            seen.extend(ids(&page));
        }
        assert_eq!(seen.len(), 150, "the pages past the end are empty");
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 150);
        let view = index.get(&id(10)).unwrap();
        assert_eq!(view.frontend.as_deref(), Some("master:1"));
        assert_eq!(view.labels, ["even"]);
        assert!(index.get(&id(10_000)).is_none());
    }

    #[test]
    fn newest_facts_and_labels_win_whatever_the_arrival_order() {
        let (index, _) = index();
        // An agent's facts arrive while the load is still reading its folder.
        index.agent_facts(
            &doc(1, "new-name", "linux", &["a"], 50),
            ClientIndexRefresh::AgentFacts,
        );
        index.disk_reads(
            vec![DiskRead::Found(doc(1, "old-name", "linux", &["old"], 10))],
            ClientIndexRefresh::Load,
        );
        let v = index.get(&id(1)).unwrap();
        assert_eq!(
            (v.hostname.as_str(), v.labels.clone()),
            ("new-name", vec!["a".to_string()])
        );

        // An API label change wins over labels that come with later facts.
        index.set_labels(&id(1), &["b".into(), "a".into(), "b".into()]);
        index.agent_facts(
            &doc(1, "new-name", "linux", &["stale"], 60),
            ClientIndexRefresh::AgentFacts,
        );
        assert_eq!(index.get(&id(1)).unwrap().labels, ["a", "b"]);

        // A minion's facts carry no labels and keep them; a resync older than what is
        // known changes nothing, a newer one does.
        index.agent_facts(
            &doc(1, "moved", "linux", &[], 70),
            ClientIndexRefresh::MinionFacts,
        );
        index.disk_reads(
            vec![DiskRead::Found(doc(1, "older", "linux", &[], 65))],
            ClientIndexRefresh::Resync,
        );
        let v = index.get(&id(1)).unwrap();
        assert_eq!((v.hostname.as_str(), v.labels.len()), ("moved", 2));
        index.disk_reads(
            vec![DiskRead::Found(doc(1, "newer", "linux", &[], 80))],
            ClientIndexRefresh::Resync,
        );
        assert_eq!(index.get(&id(1)).unwrap().hostname, "newer");

        // Labels set before any facts: not listed until facts arrive, then listed with them.
        index.set_labels(&id(2), &["early".into()]);
        assert!(index.get(&id(2)).is_none());
        index.disk_reads(vec![DiskRead::Unreadable(id(2))], ClientIndexRefresh::Load);
        let v = index.get(&id(2)).unwrap();
        assert_eq!(
            (v.hostname.as_str(), v.labels.clone()),
            ("", vec!["early".to_string()])
        );
        index.left(&[id(2)], 99);
        assert_eq!(index.get(&id(2)).unwrap().last_seen_ms, 99);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn pages_say_whether_the_load_has_finished() {
        let (index, _) = index();
        index.disk_reads(
            vec![DiskRead::Found(doc(1, "a", "linux", &[], 1))],
            ClientIndexRefresh::Load,
        );
        let loading = search(&index, "", None);
        assert_eq!((loading.total, loading.complete), (1, false));
        index.set_complete(Duration::from_millis(5));
        assert!(search(&index, "", None).complete);
    }

    #[test]
    fn id_text_round_trips() {
        let mut buf = [0u8; ID_TEXT_BYTES];
        for n in [0, 1, 0x0123_4567_89ab_cdef, u64::MAX] {
            let text = id_text(n, &mut buf).to_string();
            assert_eq!(id_number(&ClientId::parse(&text).unwrap()), n);
        }
    }
}
