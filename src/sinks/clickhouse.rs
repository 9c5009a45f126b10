//! `clickhouse`: each batch is one `INSERT INTO <table> FORMAT JSONEachRow` over
//! ClickHouse's HTTP interface (as old as 18.16, Debian's package). The table's engine
//! is the operator's (docs/events/sinks.md gives a ReplacingMergeTree ordered by `id`, so
//! a retried batch counts once); the row travels as a JSON string column, which any
//! schema can parse later with `JSONExtract*` / `visitParam*`.

use super::delivery::{outcome_of, Deliver, Outcome};
use super::http::HttpClient;
use super::record::SpoolEvent;

pub struct ClickHouse {
    /// Invariant: `table` or `db.table` of identifiers (config checks it): safe in a query.
    pub table: String,
    pub client: HttpClient,
}

impl ClickHouse {
    fn query_suffix(&self) -> String {
        format!(
            "/?query=INSERT%20INTO%20{}%20FORMAT%20JSONEachRow",
            self.table
        )
    }
}

impl Deliver for ClickHouse {
    fn deliver(&mut self, events: &[SpoolEvent]) -> Outcome {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            id: &'a str,
            client_id: &'a str,
            artifact: &'a str,
            time_ms: u64,
            row: String,
        }
        let mut body = Vec::with_capacity(events.len() * 256);
        for e in events {
            let line = Line {
                id: &e.id,
                client_id: &e.client_id,
                artifact: &e.artifact,
                time_ms: e.time_ms,
                row: e.row.to_string(),
            };
            if serde_json::to_writer(&mut body, &line).is_err() {
                return Outcome::retry("cannot encode the batch", None);
            }
            body.push(b'\n');
        }
        match self
            .client
            .post(&self.query_suffix(), "application/x-ndjson", body)
        {
            Ok(answer) => outcome_of(&answer, events.len()),
            Err(e) => Outcome::retry(e, None),
        }
    }
}
