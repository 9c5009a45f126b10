//! `webhook`: each batch POSTed as `{"sink": NAME, "events": [{id, client_id, artifact,
//! time_ms, row}, ...]}`. The receiver deduplicates a retried batch by event id.

use super::delivery::{outcome_of, Deliver, Outcome};
use super::http::HttpClient;
use super::record::SpoolEvent;

pub struct Webhook {
    pub name: String,
    pub client: HttpClient,
}

impl Deliver for Webhook {
    fn deliver(&mut self, events: &[SpoolEvent]) -> Outcome {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            sink: &'a str,
            events: &'a [SpoolEvent],
        }
        let body = Body {
            sink: &self.name,
            events,
        };
        let body = match serde_json::to_vec(&body) {
            Ok(b) => b,
            Err(e) => return Outcome::retry(format!("cannot encode the batch: {e}"), None),
        };
        match self.client.post("", "application/json", body) {
            Ok(answer) => outcome_of(&answer, events.len()),
            Err(e) => Outcome::retry(e, None),
        }
    }
}
