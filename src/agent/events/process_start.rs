//! `Linux.Events.ProcessStart`: one row per process that appears, found by listing /proc
//! every `PROCESS_START_POLL_INTERVAL` and reading the pids not seen on the previous
//! pass. Rows are a Pslist row without what a just-started process cannot have yet
//! (state, resident memory).
//!
//! Polling rather than the netlink process connector: it needs no privileges and no
//! socket the agent must keep draining, at the price that a process living shorter than
//! the interval may be missed.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::agent::artifacts::pslist::{host_units, list_pids, process_row, Units};
use crate::agent::artifacts::users::{read_passwd, uid_names};
use crate::agent::events::stop::StopSignal;
use crate::artifacts::{ArtifactError, PROCESS_START};
use crate::limits::PROCESS_START_POLL_INTERVAL;

/// Passes between re-reads of /etc/passwd (one a minute at the poll interval), so a
/// user added while the agent runs gets its name.
const PASSWD_REFRESH_POLLS: u32 = 120;

pub(super) fn run(emit: &dyn Fn(Value), stop: &StopSignal) -> Result<(), ArtifactError> {
    let mut watcher = ProcessWatcher::new().map_err(|source| ArtifactError::Io {
        artifact: PROCESS_START.into(),
        what: "/proc".into(),
        source,
    })?;
    let mut polls = 0u32;
    while !stop.wait(PROCESS_START_POLL_INTERVAL) {
        polls = polls.wrapping_add(1);
        if polls % PASSWD_REFRESH_POLLS == 0 {
            watcher.refresh_names();
        }
        if let Err(e) = watcher.poll(emit) {
            tracing::debug!("process list skipped: {e}");
        }
    }
    Ok(())
}

pub(super) struct ProcessWatcher {
    /// Pids present at the previous pass (and reported, or not worth reporting).
    known: HashSet<u32>,
    /// Pids seen in the middle of their exec on the previous pass, looked at again once.
    unfinished: HashSet<u32>,
    units: Units,
    names: HashMap<u32, String>,
}

impl ProcessWatcher {
    /// Takes the processes running now as known: only later ones are events.
    pub(super) fn new() -> std::io::Result<Self> {
        let mut watcher = Self {
            known: list_pids()?.into_iter().collect(),
            unfinished: HashSet::new(),
            units: host_units(),
            names: HashMap::new(),
        };
        watcher.refresh_names();
        Ok(watcher)
    }

    fn refresh_names(&mut self) {
        self.names = read_passwd()
            .map(|entries| uid_names(&entries))
            .unwrap_or_default();
    }

    /// Emits a row for every pid not present at the previous pass, in pid order.
    pub(super) fn poll(&mut self, emit: &dyn Fn(Value)) -> std::io::Result<()> {
        let pids = list_pids()?;
        let mut unfinished = HashSet::new();
        for &pid in &pids {
            if self.known.contains(&pid) {
                continue;
            }
            match process_row(pid, &self.units, &self.names) {
                // The kernel shows the new executable before the new command line: a
                // process caught in between is looked at again on the next pass (once).
                Ok(row) if in_exec(&row) && !self.unfinished.contains(&pid) => {
                    unfinished.insert(pid);
                }
                Ok(mut row) => {
                    if let Some(object) = row.as_object_mut() {
                        object.remove("state");
                        object.remove("rss_bytes");
                    }
                    emit(row);
                }
                // Gone already (or unreadable): it started, but there is nothing to say.
                Err(e) => tracing::trace!(pid, "new process not read: {e}"),
            }
        }
        self.known = pids
            .into_iter()
            .filter(|p| !unfinished.contains(p))
            .collect();
        self.unfinished = unfinished;
        Ok(())
    }
}

/// A user process (it has an executable) with no command line yet: mid-exec.
fn in_exec(row: &Value) -> bool {
    !row["exe"].is_null() && row["cmdline"].as_str().is_some_and(str::is_empty)
}

#[cfg(test)]
mod tests {
    //! Goal: a process started after the watcher sees its first pass is reported once,
    //! with its real pid, parent and command line, in the synthetic row's shape. Method:
    //! spawn a child of this test process between two passes.

    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_child_started_by_the_test_is_seen_once() {
        let mut watcher = ProcessWatcher::new().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("37")
            .spawn()
            .unwrap();
        let rows = Mutex::new(Vec::new());
        // A child caught mid-exec is reported on a later pass; passes after that must not
        // report it again.
        let mine = |rows: &Mutex<Vec<Value>>| {
            let rows = rows.lock().unwrap();
            rows.iter().filter(|r| r["pid"] == child.id()).count()
        };
        for _ in 0..100 {
            watcher.poll(&|row| rows.lock().unwrap().push(row)).unwrap();
            if mine(&rows) > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        watcher.poll(&|row| rows.lock().unwrap().push(row)).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let rows = rows.into_inner().unwrap();
        let mine: Vec<&Value> = rows.iter().filter(|r| r["pid"] == child.id()).collect();
        assert_eq!(mine.len(), 1, "{rows:?}");
        let row = mine[0];
        assert_eq!(row["ppid"], std::process::id());
        assert!(
            row["cmdline"].as_str().unwrap().contains("sleep 37"),
            "{row}"
        );
        assert!(
            row["exe"].as_str().unwrap_or("").contains("sleep")
                || row["exe"].as_str().unwrap_or("").contains("coreutils")
                || row["exe"].as_str().unwrap_or("").contains("busybox"),
            "{row}"
        );
        assert!(row["start_time"].as_u64().unwrap() > 1_600_000_000);
        assert!(row.get("username").is_some() && row.get("uid").is_some());
        let synthetic = crate::agent::artifacts::synthetic::synthetic_rows(PROCESS_START, 1, 1);
        let keys = |v: &Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(row), keys(&synthetic[0]));
    }
}
