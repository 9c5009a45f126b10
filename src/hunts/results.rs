//! Where each row of a hunt's results is: per artifact, the rows of every participant
//! flow in recruitment order, so that a results page is a binary search over cumulative
//! counts and reads only the flows it shows, not every participant's result set.
//!
//! A flow is *settled* once it ended and its per-artifact rows were read from its
//! status.json (once; a terminal flow takes no more rows). Until then its rows may still
//! grow, so a page asks the caller for their live counts ([`ResultsIndex::unsettled`]),
//! which keeps pages exact while a hunt runs; a finished hunt's page reads no summary at
//! all. The index is rebuilt from disk when the master starts (`recount_all`).

use std::collections::{BTreeSet, HashMap};

use crate::datastore::{ArtifactName, ArtifactRowsDoc};
use crate::ids::{ClientId, FlowId};

/// Rows of one artifact per participant position, with prefix sums (a Fenwick tree).
#[derive(Debug, Default)]
struct Counts {
    rows: Vec<u64>,
    /// 1-based Fenwick tree over `rows`. Invariant: `tree.len() == rows.len() + 1`.
    tree: Vec<u64>,
}

impl Counts {
    fn new() -> Self {
        Self {
            rows: Vec::new(),
            tree: vec![0],
        }
    }

    /// Appends a participant with no rows.
    fn push(&mut self) {
        let i = self.rows.len() + 1;
        let low = i & i.wrapping_neg();
        // Node i covers (i - low, i]; its new element is 0.
        let covered = self.prefix(i - 1) - self.prefix(i - low);
        self.rows.push(0);
        self.tree.push(covered);
    }

    fn add(&mut self, pos: usize, rows: u64) {
        self.rows[pos] += rows;
        let mut i = pos + 1;
        while i < self.tree.len() {
            self.tree[i] += rows;
            i += i & i.wrapping_neg();
        }
    }

    /// Rows of positions `0..end`.
    fn prefix(&self, end: usize) -> u64 {
        let (mut i, mut sum) = (end, 0);
        while i > 0 {
            sum += self.tree[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }
}

/// The results index of one hunt.
#[derive(Debug)]
pub(super) struct ResultsIndex {
    artifacts: Vec<ArtifactName>,
    /// Per artifact (the hunt's order), settled rows by participant position.
    counts: Vec<Counts>,
    positions: HashMap<FlowId, usize>,
    /// Positions whose rows are not settled yet, in order.
    unsettled: BTreeSet<usize>,
}

/// One flow's part of a page: rows `skip .. skip + take` of its result set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageSegment {
    pub position: usize,
    pub skip: u64,
    pub take: u64,
}

impl ResultsIndex {
    pub(super) fn new(artifacts: Vec<ArtifactName>) -> Self {
        let counts = artifacts.iter().map(|_| Counts::new()).collect();
        Self {
            artifacts,
            counts,
            positions: HashMap::new(),
            unsettled: BTreeSet::new(),
        }
    }

    /// A new participant, after the others.
    pub(super) fn push(&mut self, flow: &FlowId) {
        let pos = self
            .counts
            .first()
            .map_or(self.positions.len(), |c| c.rows.len());
        if self.positions.contains_key(flow) {
            return;
        }
        self.positions.insert(flow.clone(), pos);
        self.unsettled.insert(pos);
        self.counts.iter_mut().for_each(Counts::push);
    }

    /// The client of participant `flow`, from the hunt's flows in recruitment order.
    pub(super) fn client_of(
        &self,
        flow: &FlowId,
        flows: &[(ClientId, FlowId)],
    ) -> Option<ClientId> {
        let pos = *self.positions.get(flow)?;
        flows.get(pos).map(|(c, _)| c.clone())
    }

    pub(super) fn is_settled(&self, flow: &FlowId) -> bool {
        self.positions
            .get(flow)
            .is_some_and(|p| !self.unsettled.contains(p))
    }

    /// Records an ended flow's rows per artifact (its final status.json), once.
    pub(super) fn settle(&mut self, flow: &FlowId, rows: &[ArtifactRowsDoc]) {
        let Some(&pos) = self.positions.get(flow) else {
            return;
        };
        if !self.unsettled.remove(&pos) {
            return;
        }
        for (a, counts) in self.artifacts.iter().zip(&mut self.counts) {
            let n: u64 = rows.iter().filter(|r| &r.name == a).map(|r| r.rows).sum();
            counts.add(pos, n);
        }
    }

    /// Positions whose rows the caller must count live for a page.
    pub(super) fn unsettled(&self) -> Vec<usize> {
        self.unsettled.iter().copied().collect()
    }

    /// The page `start_row .. start_row + wanted` of `artifact`, given the live counts of
    /// (some) unsettled positions (`live`, by position; any not listed count 0): the total
    /// and the segments to read. None for an artifact the hunt did not collect.
    pub(super) fn plan(
        &self,
        artifact: &ArtifactName,
        live: &[(usize, u64)],
        start_row: u64,
        wanted: u64,
    ) -> Option<(u64, Vec<PageSegment>)> {
        let a = self.artifacts.iter().position(|x| x == artifact)?;
        let view = View::new(&self.counts[a], live);
        let n = self.counts[a].rows.len();
        let total = view.before(n);
        let mut segments = Vec::new();
        let mut taken = 0u64;
        while taken < wanted && start_row.saturating_add(taken) < total {
            let target = start_row + taken;
            let pos = view.holding(target, n);
            let begin = view.before(pos);
            let count = view.before(pos + 1) - begin;
            let skip = target - begin;
            let take = (count - skip).min(wanted - taken);
            segments.push(PageSegment {
                position: pos,
                skip,
                take,
            });
            taken += take;
        }
        Some((total, segments))
    }
}

/// Settled counts with live counts laid over them.
struct View<'a> {
    counts: &'a Counts,
    /// (position, live rows − settled rows there), by position.
    deltas: Vec<(usize, i128)>,
    /// Sums of `deltas[..k]`.
    delta_prefix: Vec<i128>,
}

impl<'a> View<'a> {
    fn new(counts: &'a Counts, live: &[(usize, u64)]) -> Self {
        let mut deltas: Vec<(usize, i128)> = live
            .iter()
            .filter(|(p, _)| *p < counts.rows.len())
            .map(|&(p, rows)| (p, i128::from(rows) - i128::from(counts.rows[p])))
            .collect();
        deltas.sort_by_key(|d| d.0);
        deltas.dedup_by_key(|d| d.0);
        let mut delta_prefix = Vec::with_capacity(deltas.len() + 1);
        let mut sum = 0i128;
        delta_prefix.push(0);
        for (_, d) in &deltas {
            sum += d;
            delta_prefix.push(sum);
        }
        Self {
            counts,
            deltas,
            delta_prefix,
        }
    }

    /// Rows of positions `0..end`.
    fn before(&self, end: usize) -> u64 {
        let k = self.deltas.partition_point(|d| d.0 < end);
        let sum = i128::from(self.counts.prefix(end)) + self.delta_prefix[k];
        u64::try_from(sum).expect("live counts are never negative")
    }

    /// The position holding row `target` (< the total): the first whose end passes it.
    fn holding(&self, target: u64, n: usize) -> usize {
        let (mut lo, mut hi) = (0usize, n - 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.before(mid + 1) > target {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ArtifactName {
        ArtifactName::parse(s).unwrap()
    }

    /// The page as reading every flow's count in order would give it (the old way).
    fn by_scan(rows: &[u64], start: u64, wanted: u64) -> (u64, Vec<PageSegment>) {
        let total = rows.iter().sum();
        let (mut out, mut begin, mut taken) = (Vec::new(), 0u64, 0u64);
        for (pos, &n) in rows.iter().enumerate() {
            let from = start + taken;
            if taken < wanted && from < begin + n && from >= begin {
                let take = (begin + n - from).min(wanted - taken);
                out.push(PageSegment {
                    position: pos,
                    skip: from - begin,
                    take,
                });
                taken += take;
            }
            begin += n;
        }
        (total, out)
    }

    // Goal: pages from the index equal pages from a scan of every flow, with flows settled
    // in any order and unsettled ones counted live. Method: random counts, every page.
    #[test]
    fn pages_match_a_scan_of_every_flow() {
        let a = name("Linux.Sys.Users");
        for seed in 0..40u64 {
            let n = 1 + (seed as usize * 7) % 23;
            let rows: Vec<u64> = (0..n as u64)
                .map(|i| (i * 31 + seed * 17) % 5 * ((i + seed) % 3))
                .collect();
            let flows: Vec<FlowId> = (0..n).map(|_| FlowId::random()).collect();
            let mut index = ResultsIndex::new(vec![name("Other.Art"), a.clone()]);
            flows.iter().for_each(|f| index.push(f));
            // Settle every other flow, in reverse order; the rest stay live.
            for (i, f) in flows.iter().enumerate().rev().filter(|(i, _)| i % 2 == 0) {
                let doc = vec![ArtifactRowsDoc {
                    name: a.clone(),
                    rows: rows[i],
                }];
                index.settle(f, &doc);
                index.settle(f, &doc);
            }
            let live: Vec<(usize, u64)> = index
                .unsettled()
                .into_iter()
                .map(|p| (p, rows[p]))
                .collect();
            let total: u64 = rows.iter().sum();
            for start in 0..=total + 1 {
                for wanted in [1, 2, 3, 100] {
                    let got = index.plan(&a, &live, start, wanted).unwrap();
                    assert_eq!(
                        got,
                        by_scan(&rows, start, wanted),
                        "seed {seed} start {start}"
                    );
                }
            }
            assert!(index.plan(&name("Not.Collected"), &live, 0, 1).is_none());
        }
    }
}
