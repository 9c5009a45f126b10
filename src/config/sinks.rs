//! `[[sinks]]`, parsed: where each frontend ships the events it ingests. Every key is
//! checked here, once, so a sink that starts has a reachable shape: an http(s) URL it can
//! connect to, an index or table name that cannot inject into a request, event artifacts
//! of the catalogue, and limits within their bounds.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderName, HeaderValue};

use super::file::SinkEntry;
use super::{Checker, ConfigError};
use crate::limits;

/// One `[[sinks]]` entry.
#[derive(Debug, Clone)]
pub struct Sink {
    /// Invariant: 1..=64 of `[A-Za-z0-9_-]`, unique among the sinks (a metric label and a
    /// folder name).
    pub name: String,
    pub kind: SinkKind,
    /// Invariant: not empty, each an event artifact of the catalogue.
    pub artifacts: Vec<String>,
    /// Empty: every client; else only clients carrying one of them.
    pub labels: Vec<String>,
    /// Invariant: at most `limits::MAX_SINK_BATCH_ROWS_COUNT`.
    pub batch_rows: NonZeroUsize,
    /// Invariant: not zero.
    pub batch_age: Duration,
    /// Invariant: at least `limits::MIN_SINK_SPOOL_BYTES`.
    pub spool_bytes: u64,
    /// Parent of the per-frontend spool folders; none = `<datastore.location>/spool`.
    pub spool_dir: Option<PathBuf>,
}

/// What a sink writes to, with what only that kind needs.
#[derive(Debug, Clone)]
pub enum SinkKind {
    /// Elasticsearch / OpenSearch `_bulk` into `index`.
    Elastic { http: HttpTarget, index: String },
    /// ClickHouse's HTTP interface, `INSERT INTO table FORMAT JSONEachRow`.
    ClickHouse { http: HttpTarget, table: String },
    /// JSON batches POSTed to the URL.
    Webhook { http: HttpTarget },
    /// JSONL lines appended to `path`, rotated at `max_file_bytes`.
    File {
        path: PathBuf,
        max_file_bytes: u64,
        /// Invariant: at least 1.
        max_files: u32,
    },
}

impl SinkKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Elastic { .. } => "elastic",
            Self::ClickHouse { .. } => "clickhouse",
            Self::Webhook { .. } => "webhook",
            Self::File { .. } => "file",
        }
    }
}

/// Where an HTTP sink sends, and the headers every request carries.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    pub url: HttpUrl,
    /// The configured `headers`, then `Authorization: Basic` from username/password.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Trusted roots for `https://`; none = the system's bundle.
    pub ca_file: Option<PathBuf>,
}

/// An `http://` or `https://` URL split the way a request needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Starts with `/`; never ends with `/` unless it is just `/`. No query.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err("must start with http:// or https://".into());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("put credentials in `username`/`password`, not in the URL".into());
        }
        if path.contains(['?', '#', ' ']) {
            return Err("must not carry a query, a fragment or spaces".into());
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                let port = p.parse::<u16>().map_err(|_| format!("bad port `{p}`"))?;
                (h, port)
            }
            _ => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("has no host".into());
        }
        let trimmed = path.trim_end_matches('/');
        let path = if trimmed.is_empty() { "/" } else { trimmed };
        Ok(Self {
            tls,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// `path` then `suffix` (which starts with `/` or `?`).
    pub fn path_with(&self, suffix: &str) -> String {
        match self.path.as_str() {
            "/" if suffix.starts_with('/') => suffix.to_string(),
            base => format!("{base}{suffix}"),
        }
    }
}

pub(super) fn parse_sinks(
    check: &Checker<'_>,
    entries: &[SinkEntry],
) -> Result<Vec<Sink>, ConfigError> {
    let mut names = std::collections::HashSet::new();
    let mut sinks = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let key = |k: &str| format!("sinks[{i}].{k}");
        let sink = parse_sink(check, entry, &key)?;
        if !names.insert(sink.name.clone()) {
            return Err(check.invalid(
                &key("name"),
                format!("`{}` is used by two sinks", sink.name),
            ));
        }
        sinks.push(sink);
    }
    Ok(sinks)
}

fn parse_sink(
    check: &Checker<'_>,
    e: &SinkEntry,
    key: &dyn Fn(&str) -> String,
) -> Result<Sink, ConfigError> {
    let name_ok = (1..=64).contains(&e.name.len())
        && e.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(check.invalid(&key("name"), "must be 1 to 64 letters, digits, `-` or `_`"));
    }
    if e.artifacts.is_empty() {
        return Err(check.invalid(
            &key("artifacts"),
            "list at least one event artifact (e.g. [\"Linux.Events.ProcessStart\"])",
        ));
    }
    for (j, artifact) in e.artifacts.iter().enumerate() {
        if crate::artifacts::find_event(artifact).is_err() {
            let events: Vec<&str> = crate::artifacts::catalogue()
                .iter()
                .filter(|a| a.kind == crate::artifacts::ArtifactKind::Event)
                .map(|a| a.name)
                .collect();
            let shown: String = artifact.chars().take(100).collect();
            return Err(check.invalid(
                &key(&format!("artifacts[{j}]")),
                format!(
                    "`{shown}` is not an event artifact of the catalogue ({})",
                    events.join(", ")
                ),
            ));
        }
    }
    if e.labels.iter().any(|l| l.is_empty()) {
        return Err(check.invalid(&key("labels"), "a label cannot be empty"));
    }
    let batch_rows = e
        .batch_rows
        .unwrap_or(limits::DEFAULT_SINK_BATCH_ROWS_COUNT);
    let batch_rows = NonZeroUsize::new(batch_rows)
        .filter(|n| n.get() <= limits::MAX_SINK_BATCH_ROWS_COUNT)
        .ok_or_else(|| {
            check.invalid(
                &key("batch_rows"),
                format!("must be 1..={}", limits::MAX_SINK_BATCH_ROWS_COUNT),
            )
        })?;
    let batch_age = match e.batch_age_ms {
        None => limits::DEFAULT_SINK_BATCH_AGE,
        Some(ms) => check.non_zero_ms(&key("batch_age_ms"), ms)?,
    };
    let spool_bytes = e.spool_bytes.unwrap_or(limits::DEFAULT_SINK_SPOOL_BYTES);
    if spool_bytes < limits::MIN_SINK_SPOOL_BYTES {
        return Err(check.invalid(
            &key("spool_bytes"),
            format!("must be at least {}", limits::MIN_SINK_SPOOL_BYTES),
        ));
    }
    Ok(Sink {
        name: e.name.clone(),
        kind: parse_kind(check, e, key)?,
        artifacts: e.artifacts.clone(),
        labels: e.labels.clone(),
        batch_rows,
        batch_age,
        spool_bytes,
        spool_dir: e.spool_dir.clone(),
    })
}

fn parse_kind(
    check: &Checker<'_>,
    e: &SinkEntry,
    key: &dyn Fn(&str) -> String,
) -> Result<SinkKind, ConfigError> {
    // Keys that belong to other kinds are refused: a `table` on an elastic sink is a
    // mistake the operator wants to hear about, not a silent no-op.
    let only = |present: bool, k: &str, kinds: &str| -> Result<(), ConfigError> {
        if present {
            return Err(check.invalid(&key(k), format!("applies only to {kinds} sinks")));
        }
        Ok(())
    };
    let is_file = e.kind == "file";
    only(!is_file && e.path.is_some(), "path", "file")?;
    only(
        !is_file && e.max_file_bytes.is_some(),
        "max_file_bytes",
        "file",
    )?;
    only(!is_file && e.max_files.is_some(), "max_files", "file")?;
    only(e.kind != "elastic" && e.index.is_some(), "index", "elastic")?;
    only(
        e.kind != "clickhouse" && e.table.is_some(),
        "table",
        "clickhouse",
    )?;
    let http = || parse_http(check, e, key);
    match e.kind.as_str() {
        "elastic" => {
            let index = e.index.clone().unwrap_or_else(|| "packhunt-events".into());
            check_index(&index).map_err(|m| check.invalid(&key("index"), m))?;
            Ok(SinkKind::Elastic {
                http: http()?,
                index,
            })
        }
        "clickhouse" => {
            let table = e.table.clone().unwrap_or_else(|| "packhunt_events".into());
            check_table(&table).map_err(|m| check.invalid(&key("table"), m))?;
            Ok(SinkKind::ClickHouse {
                http: http()?,
                table,
            })
        }
        "webhook" => Ok(SinkKind::Webhook { http: http()? }),
        "file" => parse_file(check, e, key),
        other => Err(check.invalid(
            &key("kind"),
            format!(
                "`{}` is not one of elastic, clickhouse, webhook, file",
                other.chars().take(40).collect::<String>()
            ),
        )),
    }
}

fn parse_file(
    check: &Checker<'_>,
    e: &SinkEntry,
    key: &dyn Fn(&str) -> String,
) -> Result<SinkKind, ConfigError> {
    for (present, k) in [
        (e.url.is_some(), "url"),
        (!e.headers.is_empty(), "headers"),
        (e.username.is_some() || e.password.is_some(), "username"),
        (e.ca_file.is_some(), "ca_file"),
    ] {
        if present {
            return Err(check.invalid(&key(k), "a file sink has `path`, not HTTP keys"));
        }
    }
    let path = e
        .path
        .clone()
        .ok_or_else(|| check.invalid(&key("path"), "a file sink needs the file to write"))?;
    let max_file_bytes = e.max_file_bytes.unwrap_or(limits::DEFAULT_SINK_FILE_BYTES);
    if max_file_bytes < limits::MIN_SINK_FILE_BYTES {
        return Err(check.invalid(
            &key("max_file_bytes"),
            format!("must be at least {}", limits::MIN_SINK_FILE_BYTES),
        ));
    }
    let max_files = e.max_files.unwrap_or(limits::DEFAULT_SINK_FILE_COUNT);
    if max_files == 0 {
        return Err(check.invalid(&key("max_files"), "must be at least 1"));
    }
    Ok(SinkKind::File {
        path,
        max_file_bytes,
        max_files,
    })
}

fn parse_http(
    check: &Checker<'_>,
    e: &SinkEntry,
    key: &dyn Fn(&str) -> String,
) -> Result<HttpTarget, ConfigError> {
    let text = e
        .url
        .as_deref()
        .ok_or_else(|| check.invalid(&key("url"), "an HTTP sink needs its endpoint"))?;
    let url = HttpUrl::parse(text).map_err(|m| check.invalid(&key("url"), m))?;
    let mut headers = Vec::with_capacity(e.headers.len() + 1);
    for (name, value) in &e.headers {
        let k = key(&format!("headers.{name}"));
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| check.invalid(&k, "not an HTTP header name"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| check.invalid(&k, "not an HTTP header value"))?;
        headers.push((name, value));
    }
    match (&e.username, &e.password) {
        (None, None) => {}
        (Some(user), Some(password)) => {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let value = HeaderValue::from_str(&format!("Basic {token}"))
                .map_err(|_| check.invalid(&key("username"), "not usable in a header"))?;
            headers.push((http::header::AUTHORIZATION, value));
        }
        _ => return Err(check.invalid(&key("password"), "`username` and `password` go together")),
    }
    if e.ca_file.is_some() && !url.tls {
        return Err(check.invalid(&key("ca_file"), "applies only to an https:// url"));
    }
    Ok(HttpTarget {
        url,
        headers,
        ca_file: e.ca_file.clone(),
    })
}

/// Elasticsearch's index name rules: lowercase, no `\ / * ? " < > | , #` or space, not
/// starting with `-`, `_` or `+`, at most 255 bytes.
fn check_index(index: &str) -> Result<(), String> {
    let ok = !index.is_empty()
        && index.len() <= 255
        && !index.starts_with(['-', '_', '+'])
        && index != "."
        && index != ".."
        && index.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if ok {
        Ok(())
    } else {
        Err(
            "must be lowercase letters, digits, `-`, `_` or `.`, not starting with `-` or `_`"
                .into(),
        )
    }
}

/// `table` or `database.table`, each an identifier: the name goes into the INSERT query.
fn check_table(table: &str) -> Result<(), String> {
    let ident = |s: &str| {
        let mut bytes = s.bytes();
        matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && s.len() <= 128
    };
    let ok = match table.split_once('.') {
        Some((db, t)) => ident(db) && ident(t),
        None => ident(table),
    };
    if ok {
        Ok(())
    } else {
        Err("must be `table` or `database.table`, each letters, digits and `_`".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_what_a_request_needs() {
        let u = HttpUrl::parse("http://127.0.0.1:8123").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (false, "127.0.0.1", 8123, "/")
        );
        let u = HttpUrl::parse("https://es.example/prefix/").unwrap();
        assert_eq!((u.tls, u.port, u.path.as_str()), (true, 443, "/prefix"));
        assert_eq!(u.path_with("/_bulk"), "/prefix/_bulk");
        let u = HttpUrl::parse("http://[::1]:9200").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9200));
        assert_eq!(u.path_with("/_bulk"), "/_bulk");
        for bad in [
            "ftp://x",
            "http://",
            "http://u:p@x/",
            "http://x/?a=b",
            "http://x:99999",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_that_would_inject_are_refused() {
        assert!(check_table("db.events").is_ok());
        assert!(check_table("events; DROP TABLE x").is_err());
        assert!(check_table("a.b.c").is_err());
        assert!(check_index("packhunt-events").is_ok());
        assert!(check_index("Events").is_err());
        assert!(check_index("_x").is_err());
    }
}
