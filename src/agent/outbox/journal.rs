//! Flows the agent is done with (status acknowledged, cancelled, refused or given up), so
//! a task the server pushes again (queue scan, reconnect, restart) is never run twice.
//!
//! Owns: the bounded set of finished flow ids and, on disk, `finished.log` (one id a
//! line, appended and fdatasynced before the flow's folder goes, so a restart never
//! finds a flow neither finished nor held). Past twice the bound the file is rewritten
//! with the newest ids (temp + rename). Must not: know what a flow holds.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::agent::outbox::disk;
use crate::limits::MAX_AGENT_REMEMBERED_FLOWS_COUNT;

const JOURNAL_FILE: &str = "finished.log";

pub struct Journal {
    /// None: memory only.
    path: Option<PathBuf>,
    /// Invariant: the same ids as `order`, at most `MAX_AGENT_REMEMBERED_FLOWS_COUNT`.
    ids: HashSet<String>,
    order: VecDeque<String>,
    /// Lines in the file (compacted past twice the bound).
    lines: usize,
    /// Ids kept: `MAX_AGENT_REMEMBERED_FLOWS_COUNT` (smaller in tests).
    max_count: usize,
}

impl Journal {
    pub fn memory() -> Self {
        Self {
            path: None,
            ids: HashSet::new(),
            order: VecDeque::new(),
            lines: 0,
            max_count: MAX_AGENT_REMEMBERED_FLOWS_COUNT,
        }
    }

    /// The journal in `dir`, with the newest ids the file holds.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        Self::open_keeping(dir, MAX_AGENT_REMEMBERED_FLOWS_COUNT)
    }

    fn open_keeping(dir: &Path, max_count: usize) -> std::io::Result<Self> {
        let path = dir.join(JOURNAL_FILE);
        let mut journal = Self::memory();
        journal.max_count = max_count;
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for id in text.lines().filter(|l| disk::is_name_safe(l)) {
                    journal.remember(id);
                    journal.lines += 1;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        journal.path = Some(path);
        Ok(journal)
    }

    pub fn contains(&self, flow_id: &str) -> bool {
        self.ids.contains(flow_id)
    }

    /// Records `flow_id` as finished; durable (on disk) when this returns Ok.
    pub fn add(&mut self, flow_id: &str) -> std::io::Result<()> {
        if !self.remember(flow_id) {
            return Ok(());
        }
        let Some(path) = &self.path else {
            return Ok(());
        };
        if self.lines >= 2 * self.max_count {
            let mut text = String::new();
            self.order.iter().for_each(|id| {
                text.push_str(id);
                text.push('\n');
            });
            disk::write_atomically(path, text.as_bytes(), true)?;
            self.lines = self.order.len();
            return Ok(());
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        file.write_all(format!("{flow_id}\n").as_bytes())?;
        file.sync_data()?;
        self.lines += 1;
        Ok(())
    }

    fn remember(&mut self, flow_id: &str) -> bool {
        if !self.ids.insert(flow_id.to_string()) {
            return false;
        }
        self.order.push_back(flow_id.to_string());
        if self.order.len() > self.max_count {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_survive_a_reopen_and_the_file_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        const KEPT: usize = 50;
        let mut journal = Journal::open_keeping(dir.path(), KEPT).unwrap();
        journal.add("F.1").unwrap();
        journal.add("F.1").unwrap();
        journal.add("F.2").unwrap();
        let journal = Journal::open_keeping(dir.path(), KEPT).unwrap();
        assert!(journal.contains("F.1") && journal.contains("F.2"));
        assert!(!journal.contains("F.3"));
        let mut journal = journal;
        let total = 2 * KEPT + 10;
        for i in 0..total {
            journal.add(&format!("F.x{i}")).unwrap();
        }
        let journal = Journal::open_keeping(dir.path(), KEPT).unwrap();
        assert!(journal.contains(&format!("F.x{}", total - 1)));
        assert!(!journal.contains("F.1"), "the oldest are forgotten");
        let lines = std::fs::read_to_string(dir.path().join(JOURNAL_FILE))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 2 * KEPT, "{lines}");
    }
}
