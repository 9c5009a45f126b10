//! The agent's native artifact implementations for Linux. Each reads /proc and /etc
//! directly (no shelling out, so a collection costs no fork and cannot be fooled by a
//! doctored `ps` on PATH) and emits rows as JSON objects.
//!
//! Owns: turning an artifact name and its parameters into rows and collected files
//! (snapshots with their SHA-256, `collect_files`), within the flow's limits (`sink`).
//! Must not: batch, upload or frame rows (the comms client and outbox do), or know
//! anything of the server side.
//! `synthetic` produces rows of the same shape for loadgen without touching the host.

mod client_info;
mod collect_files;
mod glob;
mod netstat;
pub(crate) mod pslist;
pub mod sink;
pub mod synthetic;
pub(crate) mod users;

use std::collections::BTreeMap;

use serde_json::Value;

pub use crate::artifacts::ArtifactError;
use crate::artifacts::{self as catalogue, find_collectable, resolve_params};
use sink::ArtifactSink;

/// Runs the collection artifact `name` into `sink`: its rows in the order found, and
/// the files it collects.
///
/// `params` are string values as a task carries them; they are checked against the
/// catalogue and defaults are filled here. Errors are reserved for a request the agent
/// must refuse or an artifact that cannot run at all; a single unreadable process or
/// file is a skipped row or a row with an `error` field. A limit, a cancel or a timeout
/// ends it early without an error (`sink` records which limit).
pub fn collect_into(
    name: &str,
    params: &BTreeMap<String, String>,
    sink: &mut ArtifactSink<'_>,
) -> Result<(), ArtifactError> {
    let def = find_collectable(name)?;
    let params = resolve_params(def, params)?;
    // Host listings are read whole (they are small); their rows stop at a limit.
    let mut emit = |row: Value| {
        let _ = sink.row(&row);
    };
    match def.name {
        catalogue::CLIENT_INFO => client_info::collect(&mut emit),
        catalogue::PSLIST => pslist::collect(&mut emit),
        catalogue::USERS => users::collect(&mut emit),
        catalogue::NETSTAT => netstat::collect(&mut emit),
        catalogue::FILES_GLOB => glob::collect_into(&glob::GlobParams::parse(&params)?, sink),
        catalogue::COLLECTORS_FILE => collect_files::collect(&params, sink),
        // A catalogue entry without an implementation is our bug, but the agent must keep
        // serving other tasks, so it is reported as an unknown artifact, not a panic.
        other => Err(ArtifactError::UnknownArtifact(other.to_string())),
    }
}

/// Runs `name` with no limits and files in memory and returns its rows (tests).
#[cfg(test)]
pub(crate) fn collect_rows(
    name: &str,
    params: &BTreeMap<String, String>,
) -> Result<Vec<Value>, ArtifactError> {
    let ctx = crate::agent::collected::CollectContext::unlimited();
    let mut tally = sink::FlowTally::default();
    let mut sink = ArtifactSink::new(&ctx, &mut tally);
    collect_into(name, params, &mut sink)?;
    let output = sink.finish(name, None);
    Ok(output
        .jsonl
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).expect("rows are JSON"))
        .collect())
}

/// Wraps an I/O error that stops a whole artifact with what was being read.
fn io_error(artifact: &str, what: impl Into<String>, source: std::io::Error) -> ArtifactError {
    ArtifactError::Io {
        artifact: artifact.to_string(),
        what: what.into(),
        source,
    }
}

/// True for the errors that mean "this /proc entry or file went away under us", which a
/// scan treats as a vanished object rather than a failure.
fn is_vanished(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH))
        || err.kind() == std::io::ErrorKind::NotFound
}

#[cfg(test)]
mod tests {
    //! Goal: dispatch reaches every collection artifact and refuses the rest.
    //! Method: call `collect` on this host and check rows arrive as JSON objects.

    use super::*;

    fn rows_of(name: &str, params: &[(&str, &str)]) -> Result<Vec<Value>, ArtifactError> {
        let params = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        collect_rows(name, &params)
    }

    #[test]
    fn every_collection_artifact_runs_and_emits_objects() {
        for def in crate::artifacts::catalogue() {
            if def.kind != crate::artifacts::ArtifactKind::Collection {
                continue;
            }
            // Required parameters get a value that matches nothing on any host.
            let required: Vec<(&str, &str)> = def
                .parameters
                .iter()
                .filter(|p| p.default.is_none())
                .map(|p| (p.name, "/nonexistent-packhunt-test/*"))
                .collect();
            let rows = rows_of(def.name, &required).unwrap_or_else(|e| panic!("{}: {e}", def.name));
            assert!(rows.iter().all(Value::is_object), "{}", def.name);
            let may_be_empty = [
                catalogue::FILES_GLOB,
                catalogue::NETSTAT,
                catalogue::COLLECTORS_FILE,
            ];
            if !may_be_empty.contains(&def.name) {
                assert!(!rows.is_empty(), "{} gave no rows", def.name);
            }
        }
    }

    #[test]
    fn unknown_event_and_bad_parameters_are_refused() {
        assert!(matches!(
            rows_of("Nope", &[]),
            Err(ArtifactError::UnknownArtifact(_))
        ));
        let err = rows_of(catalogue::CLIENT_STATS, &[]).unwrap_err();
        assert!(matches!(err, ArtifactError::EventArtifact(_)));
        let err = rows_of(catalogue::FILES_GLOB, &[("hash", "maybe")]).unwrap_err();
        assert!(matches!(err, ArtifactError::BadParameter { .. }));
        let err = rows_of(catalogue::PSLIST, &[("x", "1")]).unwrap_err();
        assert!(matches!(err, ArtifactError::UnknownParameter { .. }));
    }
}
