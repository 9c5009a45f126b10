//! The client search grammar, parsed once per request into terms the index matches
//! without allocating.
//!
//! A search is words separated by spaces; every word must match (AND):
//! - `label:NAME`: the client carries label NAME (exactly; labels are case-sensitive words);
//! - `os:NAME`: the client's OS is NAME (ignoring case, as hunt conditions compare it);
//! - `host:TEXT`: the hostname contains TEXT (ignoring case);
//! - any other word: the hostname contains it (ignoring case), or, when it starts with
//!   `C.`, the client id starts with it (hex digits in either case).
//!
//! A word with another `field:` prefix is refused (400), so a typo does not silently
//! match nothing. This module owns the grammar only; presence (`connected=`) and paging
//! are the index's.

use crate::limits::{MAX_CLIENT_SEARCH_CHARS, MAX_CLIENT_SEARCH_TERMS_COUNT};

/// Why a search was refused; the API answers 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("`search` is longer than {max_chars} characters")]
    TooLong { max_chars: usize },
    #[error("`search` has more than {max_terms} terms")]
    TooManyTerms { max_terms: usize },
    #[error("`{field}:` in `search` needs a value")]
    EmptyValue { field: &'static str },
    #[error("unknown search field `{shown}:` (use label:, os:, host: or a plain word)")]
    UnknownField { shown: String },
}

/// One search word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// A plain word. Invariant: `lower` is lowercase and not empty.
    Word {
        lower: String,
        id_prefix: Option<IdPrefix>,
    },
    /// `host:`. Invariant: lowercase and not empty.
    Host(String),
    /// `label:`, as typed.
    Label(String),
    /// `os:`. Invariant: lowercase and not empty.
    Os(String),
}

/// The leading hex digits of a client id (`C.` + 16 hex digits = one u64).
/// Invariant: `digits <= 16` and `value < 16^digits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdPrefix {
    value: u64,
    digits: u32,
}

impl IdPrefix {
    /// `C.`, `c.0A1`, ...: a word that can only be the start of a client id.
    fn parse(word: &str) -> Option<Self> {
        let hex = word
            .get(..2)
            .filter(|p| p.eq_ignore_ascii_case("c."))
            .map(|_| &word[2..])?;
        if hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let value = if hex.is_empty() {
            0
        } else {
            u64::from_str_radix(hex, 16).ok()?
        };
        Some(Self {
            value,
            digits: hex.len() as u32,
        })
    }

    /// Whether the id whose 16 hex digits are `id` starts with this prefix.
    pub fn matches(&self, id: u64) -> bool {
        self.digits == 0 || id >> (64 - 4 * self.digits) == self.value
    }
}

/// A parsed search plus the presence filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub terms: Vec<Term>,
    /// `connected=true` / `false`; `None` lists both.
    pub connected: Option<bool>,
}

impl Query {
    pub fn parse(search: &str, connected: Option<bool>) -> Result<Self, SearchError> {
        if search.chars().count() > MAX_CLIENT_SEARCH_CHARS {
            return Err(SearchError::TooLong {
                max_chars: MAX_CLIENT_SEARCH_CHARS,
            });
        }
        let mut terms = Vec::new();
        for word in search.split_whitespace() {
            if terms.len() == MAX_CLIENT_SEARCH_TERMS_COUNT {
                return Err(SearchError::TooManyTerms {
                    max_terms: MAX_CLIENT_SEARCH_TERMS_COUNT,
                });
            }
            terms.push(Term::parse(word)?);
        }
        Ok(Self { terms, connected })
    }

    /// Lists every client: no term, no presence filter.
    pub fn is_everything(&self) -> bool {
        self.terms.is_empty() && self.connected.is_none()
    }
}

impl Term {
    fn parse(word: &str) -> Result<Self, SearchError> {
        let Some((field, value)) = word.split_once(':') else {
            return Ok(Self::word(word));
        };
        // `C.` words never hold a colon, so any `x:` is a field or a mistake.
        let named = |field: &'static str| {
            if value.is_empty() {
                Err(SearchError::EmptyValue { field })
            } else {
                Ok(value)
            }
        };
        match field.to_ascii_lowercase().as_str() {
            "label" => Ok(Self::Label(named("label")?.to_string())),
            "os" => Ok(Self::Os(named("os")?.to_lowercase())),
            "host" => Ok(Self::Host(named("host")?.to_lowercase())),
            _ => Err(SearchError::UnknownField {
                shown: field.chars().take(32).collect(),
            }),
        }
    }

    fn word(word: &str) -> Self {
        Self::Word {
            lower: word.to_lowercase(),
            id_prefix: IdPrefix::parse(word),
        }
    }
}

/// Whether `hay` contains `needle_lower` ignoring case. ASCII hostnames (nearly all) are
/// compared in place; others are lowercased first.
pub fn contains_folded(hay: &str, needle_lower: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle_lower.as_bytes());
    if n.is_empty() {
        return true;
    }
    if !hay.is_ascii() || !needle_lower.is_ascii() {
        return hay.to_lowercase().contains(needle_lower);
    }
    if n.len() > h.len() {
        return false;
    }
    let first = n[0];
    (0..=h.len() - n.len()).any(|i| {
        h[i].to_ascii_lowercase() == first
            && h[i + 1..i + n.len()]
                .iter()
                .zip(&n[1..])
                .all(|(a, b)| a.to_ascii_lowercase() == *b)
    })
}

#[cfg(test)]
mod tests {
    //! Goal: the grammar as docs/gui/client-index.md states it, and refusals that say why.

    use super::*;

    #[test]
    fn words_fields_and_id_prefixes() {
        let q = Query::parse("  Web label:prod OS:Linux host:EU c.0A ", Some(true)).unwrap();
        assert_eq!(q.connected, Some(true));
        assert_eq!(
            q.terms,
            vec![
                Term::Word {
                    lower: "web".into(),
                    id_prefix: None
                },
                Term::Label("prod".into()),
                Term::Os("linux".into()),
                Term::Host("eu".into()),
                Term::Word {
                    lower: "c.0a".into(),
                    id_prefix: Some(IdPrefix {
                        value: 0xa,
                        digits: 2
                    })
                },
            ]
        );
        assert!(Query::parse("", None).unwrap().is_everything());
        assert!(!Query::parse("", Some(false)).unwrap().is_everything());
    }

    #[test]
    fn id_prefixes_match_by_their_leading_digits() {
        let id = 0x0123_4567_89ab_cdef_u64;
        for (word, hit) in [
            ("C.", true),
            ("C.0", true),
            ("C.0123456789ABCDEF", true),
            ("c.01234567", true),
            ("C.1", false),
            ("C.0123456789abcdee", false),
        ] {
            let prefix = IdPrefix::parse(word).unwrap();
            assert_eq!(prefix.matches(id), hit, "{word}");
        }
        for not_an_id in ["C", "C.xyz", "C.0123456789abcdef0", "web"] {
            assert_eq!(IdPrefix::parse(not_an_id), None, "{not_an_id}");
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(
            Query::parse("label:", None),
            Err(SearchError::EmptyValue { field: "label" })
        );
        assert!(matches!(
            Query::parse("owner:bob", None),
            Err(SearchError::UnknownField { shown }) if shown == "owner"
        ));
        let many = vec!["a"; MAX_CLIENT_SEARCH_TERMS_COUNT + 1].join(" ");
        assert!(matches!(
            Query::parse(&many, None),
            Err(SearchError::TooManyTerms { .. })
        ));
        let long = "a".repeat(MAX_CLIENT_SEARCH_CHARS + 1);
        assert!(matches!(
            Query::parse(&long, None),
            Err(SearchError::TooLong { .. })
        ));
    }

    #[test]
    fn substring_ignores_case_for_ascii_and_beyond() {
        assert!(contains_folded("Web-01.EU", "eu"));
        assert!(contains_folded("web-01", "web-01"));
        assert!(!contains_folded("web", "web-0"));
        assert!(contains_folded("anything", ""));
        assert!(contains_folded("ÉTÉ-host", "été"));
        assert!(!contains_folded("db", "été"));
    }
}
