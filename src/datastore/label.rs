//! The one rule for a client label, shared by the labels API, hunt conditions and the
//! client event table's `by_label` keys.
//!
//! Owns [`Label`]: short words of letters, digits and `-_.:`, nothing that needs escaping
//! in a search (`label:NAME`), a path or a log line. It must not decide which client
//! carries which label (that is `labels.json`, written by the master's API).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{shown, DatastoreError};
use crate::limits::MAX_LABEL_CHARS;

/// What a label may be, as the error states it. Spelled out (not formatted) so the error
/// stays a `&'static str`; the assertion keeps it true to the limit.
const LABEL_RULE: &str = "1-64 characters of letters, digits and -_.:";
const _: () = assert!(MAX_LABEL_CHARS == 64);

/// A validated client label. Invariant: 1..=`MAX_LABEL_CHARS` characters, each an ASCII
/// letter, digit or one of `-_.:`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Label(String);

impl Label {
    pub fn parse(raw: &str) -> Result<Self, DatastoreError> {
        let ok = !raw.is_empty()
            && raw.chars().count() <= MAX_LABEL_CHARS
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
        if !ok {
            return Err(DatastoreError::BadName {
                kind: "label",
                shown: shown(raw),
                reason: LABEL_RULE,
            });
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Label {
    type Error = DatastoreError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<Label> for String {
    fn from(label: Label) -> String {
        label.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the label rule accepts the words operators use and refuses everything that
    // would need escaping. Method: a table of both.
    #[test]
    fn accepts_words_and_refuses_the_rest() {
        for good in ["web", "prod-eu:1", "a.b_c", &"x".repeat(MAX_LABEL_CHARS)] {
            assert_eq!(Label::parse(good).unwrap().as_str(), good);
        }
        let long = "x".repeat(MAX_LABEL_CHARS + 1);
        for bad in ["", "a b", "a/b", "é", "label\n", &long] {
            let err = Label::parse(bad).unwrap_err();
            assert!(err.to_string().contains(LABEL_RULE), "{bad:?}: {err}");
        }
        let parsed: Label = serde_json::from_str("\"web\"").unwrap();
        assert_eq!(parsed.as_str(), "web");
        assert!(serde_json::from_str::<Label>("\"a b\"").is_err());
    }
}
