//! `loadgen verify --record DIR --datastore PATH`: checks a datastore against the record
//! of one or more loadgen runs made with `--record DIR` (see `record.rs`), reading the
//! datastore's files directly (through packhunt's own readers), so it also works after
//! the frontends are gone.
//!
//! - Rows: for every flow an agent took, each artifact's result set must hold every row
//!   index 0..rows exactly once (when the agent had every batch acknowledged, or the
//!   server finished the flow), and the rows, in index order, must hash to what was sent.
//! - Uploads: every file the agent uploaded is listed once in the flow's `uploads.jsonl`
//!   with the size and SHA-256 sent, no error, and the stored bytes hash to it.
//! - Flows: every flow of the recorded agents created since the record began (scheduled
//!   by the driver, a hunt or anyone) is in a final state (finished, error, cancelled).
//! - Events: per (agent, artifact, run), no row is stored twice, and at least as many
//!   distinct rows are stored as the frontends acknowledged. Rows the agent gave up
//!   (its bounded buffer was full) and rows still unacknowledged when it stopped are
//!   counted apart: they are not losses of the server's. When the agent dropped nothing
//!   and stopped with nothing unacknowledged, the check is exact.
//!
//! Prints a one-line summary and the JSON verdict; exits 0 only when nothing is lost,
//! duplicated, mismatched or unfinished.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use packhunt::datastore::flow::{list_flows, read_status, FlowState};
use packhunt::datastore::path::{ArtifactName, ClientDir, Datastore, FlowDir};
use packhunt::datastore::{monitoring, resultset, uploads};
use packhunt::ids::{ClientId, FlowId};
use packhunt::limits::MAX_RESULT_PAGE_ROWS;

use crate::record::{self, ArtifactSent, FileSent, Line, Tally};

/// Exit status when the check ran and found problems (1 is an error: nothing checked).
pub const EXIT_PROBLEMS: i32 = 3;
/// Problems listed by name in the verdict; the counts cover them all.
const MAX_PROBLEMS_LISTED: usize = 20;
/// Flows created up to this long before the record's first start still count as the
/// run's (the driver's clock and the frontend's are the same host's; this is slack for
/// a flow scheduled in the same second).
const FLOW_CREATE_SLACK_MS: u64 = 5_000;
/// Bytes read at a time while hashing a stored upload.
const HASH_CHUNK_BYTES: usize = 1024 * 1024;

#[derive(clap::Parser)]
#[command(
    name = "loadgen verify",
    about = "Check a datastore against what loadgen --record DIR says the agents sent",
    after_help = "Exit status: 0 nothing lost, duplicated, mismatched or unfinished; \
3 problems found (see the JSON); 1 the check could not run."
)]
pub struct VerifyArgs {
    /// The folder given to `loadgen --record` (every *.jsonl in it is read).
    #[arg(long)]
    pub record: PathBuf,
    /// The datastore's root (`[datastore] location`).
    #[arg(long)]
    pub datastore: PathBuf,
    /// Also write the JSON verdict here.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// What the check found. Bad counts: `rows_lost`, `rows_duplicated`,
/// `rows_content_mismatched`, `uploads_mismatched`, `flows_not_final`, `events_lost`,
/// `events_duplicated`.
#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    pub ok: bool,
    pub rows_expected: u64,
    pub rows_found: u64,
    pub rows_lost: u64,
    pub rows_duplicated: u64,
    /// Rows in the flows' result sets without a recorded id (not sent by these agents).
    pub rows_unexpected: u64,
    /// Result sets holding every row once whose bytes differ from what was sent.
    pub rows_content_mismatched: u64,
    pub uploads_expected: u64,
    /// Files listed and hashed as sent.
    pub uploads_checked: u64,
    pub uploads_missing: u64,
    /// Missing, listed twice, listed with another size or hash or an error, or stored
    /// bytes that hash otherwise.
    pub uploads_mismatched: u64,
    pub flows_total: u64,
    pub flows_final: u64,
    pub flows_not_final: u64,
    pub flows_finished: u64,
    pub flows_error: u64,
    pub flows_cancelled: u64,
    /// Flows no recorded agent took (scheduled while it was away, or at the very end).
    pub flows_never_taken: u64,
    /// Flows an agent took but had not had every batch acknowledged when it stopped.
    pub flows_not_done_by_agents: u64,
    /// Event rows the frontends acknowledged.
    pub events_expected: u64,
    /// Distinct recorded event rows stored.
    pub events_found: u64,
    pub events_lost: u64,
    pub events_duplicated: u64,
    /// Rows the agents gave up (buffer full, refused): never the server's to keep.
    pub events_dropped_by_agents: u64,
    /// Rows made but neither acknowledged nor dropped when the agents stopped.
    pub events_unacked_at_exit: u64,
    /// Stored event rows of the recorded agents from runs or rows not in the record.
    pub events_unrecorded: u64,
    pub agents: u64,
    pub record_files: u64,
    /// Record files without their `end` line (the process was killed): their last event
    /// counters may be up to 30 s old.
    pub record_files_without_end: u64,
    pub record_lines_unreadable: u64,
    pub problems: Vec<String>,
}

impl Verdict {
    fn problem(&mut self, what: String) {
        if self.problems.len() < MAX_PROBLEMS_LISTED {
            self.problems.push(what);
        }
    }

    fn bad_count(&self) -> u64 {
        self.rows_lost
            + self.rows_duplicated
            + self.rows_content_mismatched
            + self.uploads_mismatched
            + self.flows_not_final
            + self.events_lost
            + self.events_duplicated
    }

    pub fn summary(&self) -> String {
        format!(
            "verify {}: rows {}/{} lost {} duplicated {} | uploads {}/{} mismatched {} | \
             flows {} not final {} | events {}/{} lost {} duplicated {} (dropped by agents \
             {}, unacked at exit {})",
            if self.ok { "OK" } else { "FAILED" },
            self.rows_found,
            self.rows_expected,
            self.rows_lost,
            self.rows_duplicated,
            self.uploads_checked,
            self.uploads_expected,
            self.uploads_mismatched,
            self.flows_total,
            self.flows_not_final,
            self.events_found,
            self.events_expected,
            self.events_lost,
            self.events_duplicated,
            self.events_dropped_by_agents,
            self.events_unacked_at_exit,
        )
    }
}

/// Runs the check, prints it, writes the report; true when nothing is wrong.
pub fn run(args: &VerifyArgs) -> Result<bool> {
    let record = Record::read(&args.record)?;
    let verdict = check(&record, &args.datastore)?;
    let json = serde_json::to_string_pretty(&verdict)?;
    println!("{}", verdict.summary());
    println!("{json}");
    if let Some(path) = &args.report {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(verdict.ok)
}

/// Everything the record files say, merged.
#[derive(Default)]
pub struct Record {
    agents: BTreeSet<String>,
    flows: BTreeMap<String, FlowRecord>,
    /// (client, artifact) -> run -> the latest counters.
    events: BTreeMap<(String, String), BTreeMap<u32, Tally>>,
    earliest_start_ms: Option<u64>,
    files: u64,
    files_without_end: u64,
    lines_unreadable: u64,
}

#[derive(Default)]
struct FlowRecord {
    client: String,
    /// What the agent sends (None: no agent took the flow).
    artifacts: Option<Vec<ArtifactSent>>,
    files: Vec<FileSent>,
    /// Rows the agent reported when every batch was acknowledged.
    done_rows: Option<u64>,
}

impl Record {
    pub fn read(dir: &Path) -> Result<Self> {
        let mut record = Record::default();
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("reading the record {}", dir.display()))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        paths.sort();
        anyhow::ensure!(
            !paths.is_empty(),
            "the record folder {} holds no *.jsonl (was loadgen run with --record {}?)",
            dir.display(),
            dir.display()
        );
        for path in paths {
            record.read_file(&path)?;
        }
        Ok(record)
    }

    fn read_file(&mut self, path: &Path) -> Result<()> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        self.files += 1;
        let mut ended = false;
        for line in BufReader::new(file).split(b'\n') {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if line.is_empty() {
                continue;
            }
            // A process killed mid-write leaves a torn last line: counted, not fatal.
            let Ok(line) = serde_json::from_slice::<Line>(&line) else {
                self.lines_unreadable += 1;
                continue;
            };
            ended |= matches!(line, Line::End { .. });
            self.take(line);
        }
        if !ended {
            self.files_without_end += 1;
        }
        Ok(())
    }

    fn take(&mut self, line: Line) {
        match line {
            Line::Start { started_ms, .. } => {
                self.earliest_start_ms = Some(
                    self.earliest_start_ms
                        .map_or(started_ms, |t| t.min(started_ms)),
                );
            }
            Line::Agent { client } => {
                self.agents.insert(client);
            }
            Line::Scheduled { client, flow } => {
                self.flows.entry(flow).or_default().client = client;
            }
            Line::Task {
                client,
                flow,
                artifacts,
                files,
                ..
            } => {
                let f = self.flows.entry(flow).or_default();
                f.client = client;
                f.artifacts = Some(artifacts);
                f.files = files;
            }
            Line::FlowDone { client, flow, rows } => {
                let f = self.flows.entry(flow).or_default();
                f.client = client;
                f.done_rows = Some(rows);
            }
            Line::Events {
                client,
                artifact,
                run,
                made,
                acked,
                dropped,
            } => {
                let t = self
                    .events
                    .entry((client, artifact))
                    .or_default()
                    .entry(run)
                    .or_default();
                // Counters only grow: the largest seen is the latest.
                t.made = t.made.max(made);
                t.acked = t.acked.max(acked);
                t.dropped = t.dropped.max(dropped);
            }
            Line::End { .. } => {}
        }
    }
}

/// Checks the datastore at `root` against `record`.
pub fn check(record: &Record, root: &Path) -> Result<Verdict> {
    anyhow::ensure!(
        root.join("clients").is_dir(),
        "{} is not a datastore (no clients/ folder): pass `[datastore] location`",
        root.display()
    );
    let datastore = Datastore::open(root.to_path_buf(), false)
        .with_context(|| format!("opening the datastore {}", root.display()))?;
    let mut v = Verdict {
        agents: record.agents.len() as u64,
        record_files: record.files,
        record_files_without_end: record.files_without_end,
        record_lines_unreadable: record.lines_unreadable,
        ..Default::default()
    };
    let flows = flows_to_check(record, &datastore, &mut v)?;
    for (flow, client) in &flows {
        check_flow(
            &datastore,
            record.flows.get(flow.as_str()),
            client,
            flow,
            &mut v,
        )?;
    }
    for ((client, artifact), runs) in &record.events {
        check_events(&datastore, client, artifact, runs, &mut v)?;
    }
    if v.record_files_without_end > 0 {
        v.problem(format!(
            "{} record file(s) have no end line: a loadgen process did not exit cleanly",
            v.record_files_without_end
        ));
    }
    v.ok = v.bad_count() == 0;
    Ok(v)
}

/// Every flow in the record, and every flow of a recorded agent created since the
/// record began: (flow id, client id).
fn flows_to_check(
    record: &Record,
    datastore: &Datastore,
    v: &mut Verdict,
) -> Result<BTreeMap<String, String>> {
    let mut flows: BTreeMap<String, String> = record
        .flows
        .iter()
        .map(|(flow, f)| (flow.clone(), f.client.clone()))
        .collect();
    let since_ms = record
        .earliest_start_ms
        .unwrap_or(0)
        .saturating_sub(FLOW_CREATE_SLACK_MS);
    for client in &record.agents {
        let Some(dir) = client_dir(datastore, client, v) else {
            continue;
        };
        // Listed even without a collections folder: a hunt recruit its agent never
        // answered has only a queue entry.
        let listed = list_flows(&dir).with_context(|| format!("listing the flows of {client}"))?;
        for flow in listed {
            if flows.contains_key(flow.as_str()) {
                continue;
            }
            let recent = read_status(&dir, &flow).map_or(true, |s| s.create_time_ms >= since_ms);
            if recent {
                flows.insert(flow.as_str().to_string(), client.clone());
            }
        }
    }
    Ok(flows)
}

fn client_dir(datastore: &Datastore, client: &str, v: &mut Verdict) -> Option<ClientDir> {
    match ClientId::parse(client) {
        Ok(id) => Some(datastore.client(&id)),
        Err(e) => {
            v.problem(format!(
                "the record names a client `{client}` that is not an id: {e}"
            ));
            None
        }
    }
}

fn check_flow(
    datastore: &Datastore,
    recorded: Option<&FlowRecord>,
    client: &str,
    flow: &str,
    v: &mut Verdict,
) -> Result<()> {
    v.flows_total += 1;
    let Some(dir) = client_dir(datastore, client, v) else {
        v.flows_not_final += 1;
        return Ok(());
    };
    let Ok(flow_id) = FlowId::parse(flow) else {
        v.flows_not_final += 1;
        v.problem(format!(
            "the record names a flow `{flow}` that is not an id"
        ));
        return Ok(());
    };
    let state = match read_status(&dir, &flow_id) {
        Ok(status) => Some(status.state),
        Err(e) => {
            v.problem(format!("{client}/{flow}: no status: {e}"));
            None
        }
    };
    match state {
        Some(s) if s.is_terminal() => v.flows_final += 1,
        Some(s) => {
            v.flows_not_final += 1;
            v.problem(format!("{client}/{flow}: {}", s.as_str()));
        }
        None => v.flows_not_final += 1,
    }
    match state {
        Some(FlowState::Finished) => v.flows_finished += 1,
        Some(FlowState::Error) => v.flows_error += 1,
        Some(FlowState::Cancelled) => v.flows_cancelled += 1,
        _ => {}
    }
    let Some(recorded) = recorded.filter(|r| r.artifacts.is_some()) else {
        v.flows_never_taken += 1;
        return Ok(());
    };
    if recorded.done_rows.is_none() {
        v.flows_not_done_by_agents += 1;
    }
    // What the agent had acknowledged in full, or the server counted as finished, must
    // all be there; of anything else only duplicates are counted.
    let expect_all = recorded.done_rows.is_some() || state == Some(FlowState::Finished);
    let flow_dir = dir.flow(&flow_id);
    for artifact in recorded.artifacts.iter().flatten() {
        check_result_set(&flow_dir, artifact, expect_all, v)
            .with_context(|| format!("reading {client}/{flow} {}", artifact.name))?;
    }
    if expect_all && !recorded.files.is_empty() {
        check_uploads(&flow_dir, &recorded.files, v)
            .with_context(|| format!("reading the uploads of {client}/{flow}"))?;
    }
    Ok(())
}

fn check_result_set(
    flow: &FlowDir,
    sent: &ArtifactSent,
    expect_all: bool,
    v: &mut Verdict,
) -> Result<()> {
    let name = ArtifactName::parse(&sent.name)?;
    let paths = flow.result_paths(&name);
    let mut seen = vec![0u32; sent.rows as usize];
    // Rows normally arrive in index order: hash them as they come; anything else (a gap
    // filled later) is hashed from the rows kept by index.
    let (mut hasher, mut next, mut in_order) = (Sha256::new(), 0u64, true);
    let mut by_index: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut start = 0u64;
    loop {
        let (total, rows) = resultset::read_rows(&paths, start, MAX_RESULT_PAGE_ROWS)?;
        if rows.is_empty() {
            break;
        }
        start += rows.len() as u64;
        for row in rows {
            match record::row_id(&row).filter(|&id| id < sent.rows) {
                Some(id) => {
                    seen[id as usize] += 1;
                    if seen[id as usize] == 1 {
                        if id == next && in_order {
                            hasher.update(&row);
                            hasher.update(b"\n");
                            next += 1;
                        } else {
                            in_order = false;
                        }
                        by_index.entry(id).or_insert(row);
                    }
                }
                None => v.rows_unexpected += 1,
            }
            // Keep only what an out-of-order set needs.
            if in_order {
                by_index.clear();
            }
        }
        if start >= total {
            break;
        }
    }
    let distinct = seen.iter().filter(|&&n| n > 0).count() as u64;
    let duplicated: u64 = seen.iter().map(|&n| u64::from(n.saturating_sub(1))).sum();
    v.rows_found += distinct;
    v.rows_duplicated += duplicated;
    if duplicated > 0 {
        v.problem(format!(
            "{}/{} {}: {duplicated} row(s) stored twice",
            flow.client_id().as_str(),
            flow.id().as_str(),
            sent.name
        ));
    }
    if !expect_all {
        return Ok(());
    }
    v.rows_expected += sent.rows;
    let lost = sent.rows - distinct;
    v.rows_lost += lost;
    if lost > 0 {
        v.problem(format!(
            "{}/{} {}: {lost} of {} row(s) missing",
            flow.client_id().as_str(),
            flow.id().as_str(),
            sent.name,
            sent.rows
        ));
        return Ok(());
    }
    if !in_order {
        hasher = Sha256::new();
        for row in by_index.values() {
            hasher.update(row);
            hasher.update(b"\n");
        }
    }
    if hex::encode(hasher.finalize()) != sent.sha256 {
        v.rows_content_mismatched += 1;
        v.problem(format!(
            "{}/{} {}: every row is there but the bytes differ from those sent",
            flow.client_id().as_str(),
            flow.id().as_str(),
            sent.name
        ));
    }
    Ok(())
}

fn check_uploads(flow: &FlowDir, files: &[FileSent], v: &mut Verdict) -> Result<()> {
    let (_, listed) = uploads::read_index(flow, 0, u64::MAX)?;
    let shown = format!("{}/{}", flow.client_id().as_str(), flow.id().as_str());
    for file in files {
        v.uploads_expected += 1;
        let records: Vec<_> = listed.iter().filter(|r| r.upload == file.upload).collect();
        let problem = match records.as_slice() {
            [] => {
                v.uploads_missing += 1;
                Some("not listed in uploads.jsonl".to_string())
            }
            [r] if r.error.is_some() => Some(format!("listed with an error: {:?}", r.error)),
            [r] if r.size != file.size || r.sha256 != file.sha256 => Some(format!(
                "listed as {} bytes {}, sent {} bytes {}",
                r.size, r.sha256, file.size, file.sha256
            )),
            [r] => {
                let (size, sha256) = hash_file(&flow.stored_upload_path(&r.stored)?)?;
                (size != file.size || sha256 != file.sha256).then(|| {
                    format!(
                        "stored bytes are {size} bytes {sha256}, sent {} bytes {}",
                        file.size, file.sha256
                    )
                })
            }
            more => Some(format!("listed {} times", more.len())),
        };
        match problem {
            Some(what) => {
                v.uploads_mismatched += 1;
                v.problem(format!("{shown} upload {}: {what}", file.upload));
            }
            None => v.uploads_checked += 1,
        }
    }
    Ok(())
}

fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let (mut hasher, mut size) = (Sha256::new(), 0u64);
    let mut buf = vec![0u8; HASH_CHUNK_BYTES];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok((size, hex::encode(hasher.finalize())));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

fn check_events(
    datastore: &Datastore,
    client: &str,
    artifact: &str,
    runs: &BTreeMap<u32, Tally>,
    v: &mut Verdict,
) -> Result<()> {
    let Some(dir) = client_dir(datastore, client, v) else {
        return Ok(());
    };
    let name = ArtifactName::parse(artifact)?;
    let mut seen: BTreeMap<u32, Vec<u32>> = runs
        .iter()
        .map(|(run, t)| (*run, vec![0u32; t.made as usize]))
        .collect();
    let mut start = 0u64;
    loop {
        let page = monitoring::read_range(&dir, &name, 0, u64::MAX, start, MAX_RESULT_PAGE_ROWS)
            .with_context(|| format!("reading the events of {client} {artifact}"))?;
        if page.items.is_empty() {
            break;
        }
        start += page.items.len() as u64;
        for (_, row) in &page.items {
            let counted = record::event_id(row).and_then(|(run, seq)| {
                let counts = seen.get_mut(&run)?;
                let slot = counts.get_mut(usize::try_from(seq).ok()?)?;
                *slot += 1;
                Some(())
            });
            if counted.is_none() {
                v.events_unrecorded += 1;
            }
        }
        if start >= page.total_rows {
            break;
        }
    }
    for (run, tally) in runs {
        let counts = &seen[run];
        let distinct = counts.iter().filter(|&&n| n > 0).count() as u64;
        let duplicated: u64 = counts.iter().map(|&n| u64::from(n.saturating_sub(1))).sum();
        let lost = tally.acked.saturating_sub(distinct);
        v.events_expected += tally.acked;
        v.events_found += distinct;
        v.events_duplicated += duplicated;
        v.events_lost += lost;
        v.events_dropped_by_agents += tally.dropped;
        v.events_unacked_at_exit += tally.made.saturating_sub(tally.acked + tally.dropped);
        if lost > 0 || duplicated > 0 {
            v.problem(format!(
                "{client} {artifact} run {run}: {} acknowledged, {distinct} stored, {duplicated} \
                 stored twice",
                tally.acked
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Goal: verify counts exactly what is wrong in a datastore — a lost row, a row stored
    //! twice, bytes that differ, a flow not final, an upload that differs, an event lost
    //! and one stored twice — and passes a datastore holding what was sent. Method: write
    //! a datastore with packhunt's own writers and a record by hand, then check.

    use super::*;
    use packhunt::datastore::flow::{write_status, FlowStatusDoc};
    use packhunt::datastore::monitoring::EventStream;
    use packhunt::datastore::resultset::ResultSet;
    use packhunt::datastore::uploads::{Announced, FlowUploads};

    const ARTIFACT: &str = "Linux.Sys.Users";
    const EVENTS: &str = "Generic.Client.Stats";

    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn row(id: u64, text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        record::push_tagged(
            &mut out,
            &format!("\"{}\":{id}", record::ROW_ID_FIELD),
            format!("{{\"name\":\"{text}\"}}").as_bytes(),
        );
        out.push(b'\n');
        out
    }

    fn rows(ids: &[u64], text: &str) -> Vec<u8> {
        ids.iter().flat_map(|&i| row(i, text)).collect()
    }

    fn status(flow: &FlowId, state: FlowState) -> FlowStatusDoc {
        FlowStatusDoc {
            flow_id: flow.clone(),
            state,
            total_rows: 0,
            total_bytes: 0,
            artifacts: vec![],
            errors: vec![],
            create_time_ms: packhunt::clock::now_ms(),
            start_time_ms: None,
            finish_time_ms: None,
            ended_by: None,
            uploaded_files: 0,
            uploaded_bytes: 0,
        }
    }

    /// A flow of `client` in `state` whose result set got `batches`; its record says the
    /// agent sent rows 0..3 of `text` (and had them all acknowledged).
    fn flow(
        ds: &Datastore,
        record: &mut Record,
        client: &ClientId,
        state: FlowState,
        batches: &[Vec<u8>],
        done: bool,
    ) -> FlowId {
        let id = FlowId::random();
        let dir = ds.client(client);
        std::fs::create_dir_all(dir.flow(&id).results_dir()).unwrap();
        write_status(&dir, &status(&id, state)).unwrap();
        let name = ArtifactName::parse(ARTIFACT).unwrap();
        let mut set = ResultSet::open(&dir.flow(&id).result_paths(&name)).unwrap();
        for (seq, batch) in batches.iter().enumerate() {
            set.append_batch(seq as u64, batch).unwrap();
        }
        let sent = rows(&[0, 1, 2], "sent");
        record.take(Line::Task {
            client: client.as_str().into(),
            flow: id.as_str().into(),
            hunt: String::new(),
            artifacts: vec![ArtifactSent {
                name: ARTIFACT.into(),
                rows: 3,
                sha256: hex::encode(Sha256::digest(&sent)),
            }],
            files: vec![],
        });
        if done {
            record.take(Line::FlowDone {
                client: client.as_str().into(),
                flow: id.as_str().into(),
                rows: 3,
            });
        }
        id
    }

    #[test]
    fn counts_what_is_wrong_and_passes_what_is_right() {
        let root = std::env::temp_dir().join(format!("loadgen-verify-{}", std::process::id()));
        let _cleanup = TempDir(root.clone());
        let ds = Datastore::open(root.clone(), false).unwrap();
        let client = ClientId::from_spki(b"an agent");
        let mut record = Record::default();
        record.take(Line::Start {
            run: 7,
            pid: 1,
            role: "both".into(),
            first_agent: 0,
            clients: 1,
            started_ms: packhunt::clock::now_ms() - 1_000,
        });
        record.take(Line::Agent {
            client: client.as_str().into(),
        });
        let sent = |ids: &[u64]| rows(ids, "sent");
        let fine = [sent(&[0, 1]), sent(&[2])];
        flow(&ds, &mut record, &client, FlowState::Finished, &fine, true);

        // A clean datastore passes.
        let v = check(&record, &root).unwrap();
        assert!(v.ok, "{v:?}");
        assert_eq!((v.rows_expected, v.rows_found, v.flows_total), (3, 3, 1));

        // Row 2 never stored, row 1 stored twice (a resend under a new batch number).
        let lossy = [sent(&[0, 1]), sent(&[1])];
        flow(&ds, &mut record, &client, FlowState::Finished, &lossy, true);
        // Every row once, but not the bytes sent.
        flow(
            &ds,
            &mut record,
            &client,
            FlowState::Finished,
            &[rows(&[0, 1, 2], "other")],
            true,
        );
        // Still in progress, the agent not done: not final, its rows not expected.
        flow(
            &ds,
            &mut record,
            &client,
            FlowState::InProgress,
            &[sent(&[0])],
            false,
        );
        // Someone else's row in a result set of ours.
        flow(
            &ds,
            &mut record,
            &client,
            FlowState::Finished,
            &[sent(&[0, 1, 2]), b"{\"x\":1}\n".to_vec()],
            true,
        );

        // Events: rows 0..4 made and acknowledged; 3 never stored, 2 stored twice.
        let dir = ds.client(&client);
        let events = ArtifactName::parse(EVENTS).unwrap();
        let mut stream = EventStream::open(&dir, &events).unwrap();
        let now = packhunt::clock::now_ms();
        let event = |seqs: &[u64]| -> Vec<u8> {
            seqs.iter()
                .flat_map(|s| {
                    let mut out = Vec::new();
                    let fields = format!(
                        "\"{}\":7,\"{}\":{s}",
                        record::EVENT_RUN_FIELD,
                        record::EVENT_SEQ_FIELD
                    );
                    record::push_tagged(&mut out, &fields, b"{\"cpu\":1}");
                    out.push(b'\n');
                    out
                })
                .collect()
        };
        stream.append(0, &event(&[0, 1, 2]), &[now; 3]).unwrap();
        stream.append(1, &event(&[2]), &[now]).unwrap();
        record.take(Line::Events {
            client: client.as_str().into(),
            artifact: EVENTS.into(),
            run: 7,
            made: 5,
            acked: 4,
            dropped: 1,
        });

        // An upload whose stored bytes are not those announced.
        let files_flow = flow(&ds, &mut record, &client, FlowState::Finished, &fine, true);
        let mut uploads = FlowUploads::open(&dir.flow(&files_flow)).unwrap();
        let body = b"the bytes that arrived";
        let meta = uploads
            .begin(&Announced {
                upload: 0,
                artifact: "Generic.Collectors.File".into(),
                path: "/var/log/x.bin".into(),
                size: body.len() as u64,
                sha256: hex::encode(Sha256::digest(body)),
            })
            .unwrap();
        uploads.write_at(0, 0, body).unwrap();
        uploads.complete(&meta).unwrap();
        let announced = |sha256: String| FileSent {
            upload: 0,
            path: "/var/log/x.bin".into(),
            size: body.len() as u64,
            sha256,
        };
        if let Some(f) = record.flows.get_mut(files_flow.as_str()) {
            f.files = vec![
                announced(hex::encode(Sha256::digest(body))),
                FileSent {
                    upload: 1,
                    ..announced(hex::encode(Sha256::digest(b"never sent")))
                },
            ];
        }

        let v = check(&record, &root).unwrap();
        assert!(!v.ok);
        assert_eq!(v.flows_total, 6);
        assert_eq!(v.flows_not_final, 1, "{v:?}");
        assert_eq!(v.flows_not_done_by_agents, 1);
        // 5 flows expected in full (3 rows each); the lossy one has 2 distinct.
        assert_eq!(v.rows_expected, 15);
        assert_eq!(v.rows_lost, 1);
        assert_eq!(v.rows_duplicated, 1);
        assert_eq!(v.rows_content_mismatched, 1);
        assert_eq!(v.rows_unexpected, 1);
        assert_eq!((v.uploads_expected, v.uploads_checked), (2, 1));
        assert_eq!((v.uploads_missing, v.uploads_mismatched), (1, 1));
        assert_eq!((v.events_expected, v.events_found), (4, 3));
        assert_eq!((v.events_lost, v.events_duplicated), (1, 1));
        assert_eq!(v.events_dropped_by_agents, 1);
        assert!(!v.problems.is_empty());
        assert!(v.summary().starts_with("verify FAILED"), "{}", v.summary());
    }
}
