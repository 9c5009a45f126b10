//! The task's limits, enforced once more as a flow's outputs are queued: the server
//! refuses a batch that takes the flow past `max_rows` and a file past `max_upload_bytes`,
//! so what the agent sends must already fit, whatever the artifacts did.
//!
//! Owns: cutting rows over all artifacts in request order and dropping files beyond the
//! quota, and which limit the flow's status names. Must not: touch storage.

use crate::agent::collected::ArtifactOutput;
use crate::agent::outbox::layout::first_rows;
use crate::limits::FlowLimits;

pub const MAX_ROWS: &str = "max_rows";
pub const MAX_UPLOAD_BYTES: &str = "max_upload_bytes";
pub const TIMEOUT_S: &str = "timeout_s";

/// What trimming decided beyond the rows it cut.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// The limit the flow's status names ("" for none): `timeout_s` when any artifact hit
    /// it (it makes the flow an error), else the first limit hit, in artifact order.
    pub limit_hit: &'static str,
    /// Upload numbers of the files beyond the quota: not sent. Files keep the numbers the
    /// runner gave them (position over all the flow's uploads), so rows still name them.
    pub dropped_files: Vec<u32>,
}

/// Cuts the rows of `outputs` to `limits.max_rows` over all artifacts in order, and picks
/// the files beyond `limits.max_upload_bytes` (in upload order, each that does not fit).
pub fn trim(outputs: &mut [ArtifactOutput], limits: &FlowLimits) -> Trimmed {
    let mut hit: Vec<&'static str> = outputs.iter().filter_map(|o| o.limit_hit).collect();
    if limits.max_rows > 0 {
        let mut left = limits.max_rows;
        for output in outputs.iter_mut() {
            let rows = count_rows(output);
            if rows <= left {
                left -= rows;
                continue;
            }
            let keep = first_rows(&output.jsonl, left);
            output.jsonl = output.jsonl.slice(..keep);
            output.rows = left;
            output.limit_hit.get_or_insert(MAX_ROWS);
            hit.push(MAX_ROWS);
            left = 0;
        }
    }
    let mut dropped_files = Vec::new();
    if limits.max_upload_bytes > 0 {
        let mut used = 0u64;
        let mut n = 0u32;
        for output in outputs.iter_mut() {
            for file in &output.uploads {
                if used.saturating_add(file.size) <= limits.max_upload_bytes {
                    used += file.size;
                } else {
                    dropped_files.push(n);
                    output.limit_hit.get_or_insert(MAX_UPLOAD_BYTES);
                    hit.push(MAX_UPLOAD_BYTES);
                }
                n += 1;
            }
        }
    }
    let limit_hit = if hit.contains(&TIMEOUT_S) {
        TIMEOUT_S
    } else {
        hit.first().copied().unwrap_or("")
    };
    Trimmed {
        limit_hit,
        dropped_files,
    }
}

/// Rows of an output as its JSONL holds them (an artifact's own count may disagree).
fn count_rows(output: &ArtifactOutput) -> u64 {
    output.jsonl.iter().filter(|&&b| b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::collected::{CollectedFile, FileSource};

    fn output(name: &str, rows: usize, files: &[u64]) -> ArtifactOutput {
        let jsonl: Vec<u8> = (0..rows)
            .flat_map(|i| format!("{{\"i\":{i}}}\n").into_bytes())
            .collect();
        ArtifactOutput {
            name: name.into(),
            jsonl: jsonl.into(),
            rows: rows as u64,
            uploads: files
                .iter()
                .map(|&size| CollectedFile {
                    path: format!("/f{size}"),
                    size,
                    sha256: [0; 32],
                    truncated: false,
                    source: FileSource::Synthetic { seed: size },
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn rows_are_cut_over_all_artifacts_in_order() {
        let mut outs = vec![
            output("A", 3, &[]),
            output("B", 4, &[]),
            output("C", 2, &[]),
        ];
        let limits = FlowLimits {
            max_rows: 5,
            ..Default::default()
        };
        assert_eq!(trim(&mut outs, &limits).limit_hit, MAX_ROWS);
        let kept: Vec<u64> = outs.iter().map(|o| o.rows).collect();
        assert_eq!(kept, vec![3, 2, 0]);
        assert_eq!(outs[1].jsonl.as_ref(), b"{\"i\":0}\n{\"i\":1}\n");
        assert!(outs[2].jsonl.is_empty());
        assert_eq!(outs[0].limit_hit, None);
    }

    #[test]
    fn files_beyond_the_quota_are_dropped_and_a_timeout_wins() {
        let mut outs = vec![output("A", 1, &[60, 50]), output("B", 1, &[30])];
        outs[1].limit_hit = Some(TIMEOUT_S);
        let limits = FlowLimits {
            max_upload_bytes: 100,
            ..Default::default()
        };
        let trimmed = trim(&mut outs, &limits);
        assert_eq!(trimmed.limit_hit, TIMEOUT_S);
        assert_eq!(trimmed.dropped_files, vec![1], "60 + 30 fit, 50 does not");
        assert_eq!(outs[0].limit_hit, Some(MAX_UPLOAD_BYTES));
        let mut fits = vec![output("A", 2, &[10])];
        assert_eq!(trim(&mut fits, &limits), Trimmed::default());
    }
}
