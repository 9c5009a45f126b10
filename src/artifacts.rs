//! The built-in artifact catalogue, shared by the server API and the agent: which
//! artifacts exist, their parameters with types and defaults, and the one parser that
//! turns a collection request into typed, default-filled parameters.
//!
//! Owns: names, descriptions, parameter definitions, request validation and the JSON
//! shape of `GET /api/v1/artifacts`. Must not: collect anything (that is
//! `agent::artifacts`) or know about sessions, flows or the datastore.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::limits::MAX_GLOBS_PER_PARAMETER_COUNT;

/// A collection request may name at most this many artifacts. The catalogue is far
/// smaller; the cap keeps a hostile request from making us build a huge reply or task.
/// Lives here rather than in `limits.rs` because it is a property of the request format,
/// not an operator knob.
pub const MAX_ARTIFACTS_PER_REQUEST: usize = 32;

/// Longest string or glob parameter value. 4096 is Linux PATH_MAX: no glob that can
/// match a real path is longer, and every parameter value travels in each task frame.
pub const MAX_PARAMETER_VALUE_BYTES: usize = 4096;

/// Longest slice of caller input echoed back in an error message: errors are shown to
/// the caller and logged, and a 1 MiB artifact name must not become a 1 MiB log line.
const MAX_ECHOED_INPUT_CHARS: usize = 200;

const _: () = assert!(MAX_ARTIFACTS_PER_REQUEST >= CATALOGUE.len());

pub const CLIENT_INFO: &str = "Generic.Client.Info";
pub const PSLIST: &str = "Linux.Sys.Pslist";
pub const USERS: &str = "Linux.Sys.Users";
pub const NETSTAT: &str = "Linux.Network.Netstat";
pub const FILES_GLOB: &str = "Generic.Files.Glob";
pub const COLLECTORS_FILE: &str = "Generic.Collectors.File";
pub const CLIENT_STATS: &str = "Generic.Client.Stats";
pub const PROCESS_START: &str = "Linux.Events.ProcessStart";
pub const LOG_TAIL: &str = "Linux.Events.LogTail";

/// One built-in artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactDef {
    /// Invariant: unique within the catalogue.
    pub name: &'static str,
    pub description: &'static str,
    pub kind: ArtifactKind,
    /// Invariant: parameter names are unique within one artifact.
    pub parameters: &'static [ParamDef],
}

/// Collections run once and finish; event artifacts run for as long as the client event
/// table lists them and are never part of a collection request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    Collection,
    Event,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamDef {
    pub name: &'static str,
    pub description: &'static str,
    /// `None` makes the parameter required. Invariant: a default parses as `kind`.
    pub default: Option<&'static str>,
    pub kind: ParamKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    String,
    Bool,
    U64,
    /// An absolute path pattern (`*`, `?`, `[...]`, `**`), expanded by the agent.
    Glob,
    /// One or more globs, each checked like `Glob`. A request gives a JSON array of
    /// strings or one string with one glob per line; the canonical (task) form is the
    /// globs joined by `\n`. At most `MAX_GLOBS_PER_PARAMETER_COUNT`.
    GlobList,
}

/// Why an artifact request or collection failed. Every variant except `Io` is the
/// caller's fault (the API answers 400); `Io` is the endpoint's (the flow records it).
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("no artifacts requested")]
    EmptyRequest,
    #[error("{count} artifacts requested, at most {max} allowed")]
    TooManyArtifacts { count: usize, max: usize },
    #[error("unknown artifact `{0}`")]
    UnknownArtifact(String),
    #[error("artifact `{0}` is requested more than once")]
    DuplicateArtifact(String),
    #[error("`{0}` is an event artifact: set it in the client event table, not a collection")]
    EventArtifact(String),
    #[error("`{0}` is a collection artifact: request it as a collection, not in the event table")]
    CollectionArtifact(String),
    #[error("parameters given for `{0}`, which is not in the artifact list")]
    ParametersForUnrequested(String),
    #[error("artifact `{artifact}` has no parameter `{parameter}`")]
    UnknownParameter { artifact: String, parameter: String },
    #[error("artifact `{artifact}` needs parameter `{parameter}`")]
    MissingParameter { artifact: String, parameter: String },
    #[error("artifact `{artifact}` parameter `{parameter}`: {reason}")]
    BadParameter {
        artifact: String,
        parameter: String,
        reason: String,
    },
    #[error("artifact `{artifact}` cannot run: {what}: {source}")]
    Io {
        artifact: String,
        what: String,
        source: std::io::Error,
    },
}

impl ArtifactError {
    /// True when the request was wrong (HTTP 400), false when the endpoint failed.
    pub fn is_caller_fault(&self) -> bool {
        !matches!(self, ArtifactError::Io { .. })
    }
}

/// A collection request after parsing: artifact name and its parameters with defaults
/// filled, every value in its canonical string form (`"true"`, `"10000"`).
pub type ResolvedRequest = Vec<(String, BTreeMap<String, String>)>;

/// Whether a requested artifact uploads files: `Generic.Collectors.File` always,
/// `Generic.Files.Glob` when its `upload` parameter is true. The server takes file chunks
/// for a flow only under such an artifact.
pub fn may_upload(name: &str, parameters: &BTreeMap<String, String>) -> bool {
    match name {
        COLLECTORS_FILE => true,
        FILES_GLOB => parameters.get("upload").is_some_and(|v| v == "true"),
        _ => false,
    }
}

pub fn catalogue() -> &'static [ArtifactDef] {
    CATALOGUE
}

pub fn find(name: &str) -> Option<&'static ArtifactDef> {
    CATALOGUE.iter().find(|def| def.name == name)
}

/// Parses a collection request (`{"artifacts":[…],"parameters":{artifact:{param:value}}}`)
/// into the artifacts in request order, each with every parameter filled in.
pub fn validate_request(
    artifacts: &[String],
    parameters: &BTreeMap<String, BTreeMap<String, Value>>,
) -> Result<ResolvedRequest, ArtifactError> {
    if artifacts.is_empty() {
        return Err(ArtifactError::EmptyRequest);
    }
    if artifacts.len() > MAX_ARTIFACTS_PER_REQUEST {
        return Err(ArtifactError::TooManyArtifacts {
            count: artifacts.len(),
            max: MAX_ARTIFACTS_PER_REQUEST,
        });
    }
    let mut seen = BTreeSet::new();
    let mut defs = Vec::with_capacity(artifacts.len());
    for name in artifacts {
        let def = find_collectable(name)?;
        if !seen.insert(def.name) {
            return Err(ArtifactError::DuplicateArtifact(def.name.to_string()));
        }
        defs.push(def);
    }
    if let Some(stray) = parameters.keys().find(|name| !seen.contains(name.as_str())) {
        return Err(ArtifactError::ParametersForUnrequested(echo(stray)));
    }
    let empty = BTreeMap::new();
    let mut resolved = Vec::with_capacity(defs.len());
    for def in defs {
        let given = parameters.get(def.name).unwrap_or(&empty);
        resolved.push((def.name.to_string(), resolve_json_params(def, given)?));
    }
    Ok(resolved)
}

/// Parses one artifact's parameters as JSON values (the shape of a collection request's
/// `parameters` entry) into canonical strings with defaults filled. The client event
/// table uses it too, so an event artifact's parameters are typed the same way.
pub fn resolve_json_params(
    def: &ArtifactDef,
    given: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, String>, ArtifactError> {
    let mut as_strings = BTreeMap::new();
    for (param_name, value) in given {
        let param = lookup_param(def, param_name)?;
        as_strings.insert(
            param.name.to_string(),
            json_to_param_string(def, param, value)?,
        );
    }
    resolve_params(def, &as_strings)
}

/// The collectable artifact called `name`: unknown and event artifacts are errors.
pub fn find_collectable(name: &str) -> Result<&'static ArtifactDef, ArtifactError> {
    let def = find(name).ok_or_else(|| ArtifactError::UnknownArtifact(echo(name)))?;
    match def.kind {
        ArtifactKind::Collection => Ok(def),
        ArtifactKind::Event => Err(ArtifactError::EventArtifact(def.name.to_string())),
    }
}

/// The event artifact called `name`: unknown and collection artifacts are errors.
pub fn find_event(name: &str) -> Result<&'static ArtifactDef, ArtifactError> {
    let def = find(name).ok_or_else(|| ArtifactError::UnknownArtifact(echo(name)))?;
    match def.kind {
        ArtifactKind::Event => Ok(def),
        ArtifactKind::Collection => Err(ArtifactError::CollectionArtifact(def.name.to_string())),
    }
}

/// Checks string parameters against `def` and fills in defaults. The agent runs this on
/// what a task carries: the server validated it already, but the agent must not trust a
/// peer's parsing (an older server, a replayed task) to decide how much disk it walks.
pub fn resolve_params(
    def: &ArtifactDef,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ArtifactError> {
    for name in given.keys() {
        lookup_param(def, name)?;
    }
    let mut resolved = BTreeMap::new();
    for param in def.parameters {
        let raw = match (given.get(param.name), param.default) {
            (Some(value), _) => value.as_str(),
            (None, Some(default)) => default,
            (None, None) => {
                return Err(ArtifactError::MissingParameter {
                    artifact: def.name.to_string(),
                    parameter: param.name.to_string(),
                })
            }
        };
        let canonical = param
            .kind
            .parse_str(raw)
            .map_err(|reason| bad(def, param, reason))?;
        resolved.insert(param.name.to_string(), canonical);
    }
    Ok(resolved)
}

impl ParamKind {
    /// The name `GET /api/v1/artifacts` shows as a parameter's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamKind::String => "string",
            ParamKind::Bool => "bool",
            ParamKind::U64 => "u64",
            ParamKind::Glob => "glob",
            ParamKind::GlobList => "glob_list",
        }
    }

    /// Parses a string-form value into its canonical string, or says why it is wrong.
    pub fn parse_str(self, raw: &str) -> Result<String, String> {
        match self {
            ParamKind::Bool => match raw {
                "true" | "false" => Ok(raw.to_string()),
                _ => Err("must be true or false".to_string()),
            },
            // `u64::from_str` accepts a leading `+`; a decimal string is digits only.
            ParamKind::U64 if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) => {
                Err("must be a non-negative integer".to_string())
            }
            ParamKind::U64 => raw
                .parse::<u64>()
                .map(|n| n.to_string())
                .map_err(|_| format!("must be at most {}", u64::MAX)),
            ParamKind::String => check_text(raw).map(|()| raw.to_string()),
            ParamKind::Glob => check_glob(raw).map(|()| raw.to_string()),
            ParamKind::GlobList => parse_glob_list(raw).map(|globs| globs.join("\n")),
        }
    }
}

/// The globs of a `GlobList` value (one per line; blank lines and a `\r` before the
/// newline are ignored, so a pasted Windows-edited list works), each checked.
pub fn parse_glob_list(raw: &str) -> Result<Vec<&str>, String> {
    let globs: Vec<&str> = raw
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.trim().is_empty())
        .collect();
    if globs.is_empty() {
        return Err("needs at least one absolute glob".to_string());
    }
    if globs.len() > MAX_GLOBS_PER_PARAMETER_COUNT {
        return Err(format!(
            "{} globs given, at most {MAX_GLOBS_PER_PARAMETER_COUNT} allowed",
            globs.len()
        ));
    }
    for (index, glob) in globs.iter().enumerate() {
        check_glob(glob)
            .map_err(|reason| format!("glob {} `{}`: {reason}", index + 1, echo(glob)))?;
    }
    Ok(globs)
}

impl ArtifactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Collection => "collection",
            ArtifactKind::Event => "event",
        }
    }
}

/// The body of `GET /api/v1/artifacts`.
pub fn catalogue_json() -> Value {
    let items: Vec<Value> = CATALOGUE.iter().map(artifact_json).collect();
    json!({ "items": items })
}

fn artifact_json(def: &ArtifactDef) -> Value {
    let parameters: Vec<Value> = def
        .parameters
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "description": p.description,
                "default": p.default,
                "type": p.kind.as_str(),
            })
        })
        .collect();
    json!({
        "name": def.name,
        "description": def.description,
        "kind": def.kind.as_str(),
        "parameters": parameters,
    })
}

fn lookup_param(def: &ArtifactDef, name: &str) -> Result<&'static ParamDef, ArtifactError> {
    def.parameters
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ArtifactError::UnknownParameter {
            artifact: def.name.to_string(),
            parameter: echo(name),
        })
}

/// JSON value -> string form. Bool and u64 take either their JSON type or its string,
/// because scripts and HTML forms send both; strings and globs take only strings.
fn json_to_param_string(
    def: &ArtifactDef,
    param: &ParamDef,
    value: &Value,
) -> Result<String, ArtifactError> {
    let raw = match (param.kind, value) {
        (_, Value::String(s)) => s.clone(),
        (ParamKind::Bool, Value::Bool(b)) => b.to_string(),
        (ParamKind::GlobList, Value::Array(items)) => {
            glob_array_to_lines(items).map_err(|reason| bad(def, param, reason))?
        }
        (ParamKind::U64, Value::Number(n)) => match n.as_u64() {
            Some(n) => n.to_string(),
            None => return Err(bad(def, param, "must be a non-negative integer".into())),
        },
        (kind, _) => return Err(bad(def, param, format!("must be a {}", kind.as_str()))),
    };
    param
        .kind
        .parse_str(&raw)
        .map_err(|reason| bad(def, param, reason))
}

/// A JSON array of glob strings -> the one-per-line form. An item with a newline would
/// silently become two globs, so it is refused instead.
fn glob_array_to_lines(items: &[Value]) -> Result<String, String> {
    if items.len() > MAX_GLOBS_PER_PARAMETER_COUNT {
        return Err(format!(
            "{} globs given, at most {MAX_GLOBS_PER_PARAMETER_COUNT} allowed",
            items.len()
        ));
    }
    let mut lines = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let Value::String(glob) = item else {
            return Err(format!("item {} must be a string", index + 1));
        };
        if glob.contains(['\n', '\r']) {
            return Err(format!("item {} contains a line break", index + 1));
        }
        lines.push(glob.as_str());
    }
    Ok(lines.join("\n"))
}

fn check_text(raw: &str) -> Result<(), String> {
    if raw.len() > MAX_PARAMETER_VALUE_BYTES {
        return Err(format!("longer than {MAX_PARAMETER_VALUE_BYTES} bytes"));
    }
    if raw.contains('\0') {
        return Err("contains a NUL byte".to_string());
    }
    Ok(())
}

/// Server-side sanity for a glob: the agent's expander is the full parser, but the
/// mistakes an analyst actually makes (relative path, unclosed `[`) are cheaper to
/// report at request time than as a failed flow minutes later.
fn check_glob(raw: &str) -> Result<(), String> {
    check_text(raw)?;
    if !raw.starts_with('/') {
        return Err("must be an absolute path pattern".to_string());
    }
    let mut rest = raw;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let members = rest.strip_prefix(['!', '^']).unwrap_or(rest);
        // Same rule as the agent's expander: a class ends at the first `]` after at least
        // one member, so `[]]` matches `]` and `[]` never closes.
        let close = members.char_indices().skip(1).find(|&(_, c)| c == ']');
        match close {
            Some((at, _)) if !members[..at].contains('/') => rest = &members[at + 1..],
            _ => return Err("unclosed `[` in the pattern".to_string()),
        }
    }
    Ok(())
}

fn bad(def: &ArtifactDef, param: &ParamDef, reason: String) -> ArtifactError {
    ArtifactError::BadParameter {
        artifact: def.name.to_string(),
        parameter: param.name.to_string(),
        reason,
    }
}

fn echo(input: &str) -> String {
    input.chars().take(MAX_ECHOED_INPUT_CHARS).collect()
}

/// Catalogue defaults are strings (as a task carries them); these are the `limits.rs`
/// values written out, and a test checks the two agree.
const DEFAULT_COLLECTED_FILE_MAX_BYTES_TEXT: &str = "104857600";
const DEFAULT_COLLECTED_TOTAL_MAX_BYTES_TEXT: &str = "524288000";

// A const, not a static, so the compile-time assertion above can count it.
const CATALOGUE: &[ArtifactDef] = &[
    ArtifactDef {
        name: CLIENT_INFO,
        description: "Host facts: hostname, OS, kernel release, architecture, boot time, \
                      uptime and agent version.",
        kind: ArtifactKind::Collection,
        parameters: &[],
    },
    ArtifactDef {
        name: PSLIST,
        description: "Running processes from /proc: pid, parent, name, executable, command \
                      line, user, state, resident memory and start time.",
        kind: ArtifactKind::Collection,
        parameters: &[],
    },
    ArtifactDef {
        name: USERS,
        description: "Local accounts from /etc/passwd.",
        kind: ArtifactKind::Collection,
        parameters: &[],
    },
    ArtifactDef {
        name: NETSTAT,
        description: "TCP sockets (IPv4 and IPv6) from /proc/net: addresses, ports, state, \
                      owner uid and inode.",
        kind: ArtifactKind::Collection,
        parameters: &[],
    },
    ArtifactDef {
        name: FILES_GLOB,
        description: "Files matching a glob: path, size, mode, mtime, and optionally SHA-256.",
        kind: ArtifactKind::Collection,
        parameters: &[
            ParamDef {
                name: "pattern",
                description: "Absolute path pattern; `*`, `?`, `[...]` match within one \
                              path segment, `**` matches any number of directories.",
                default: Some("/etc/*.conf"),
                kind: ParamKind::Glob,
            },
            ParamDef {
                name: "hash",
                description: "Also compute the SHA-256 of each regular file.",
                default: Some("false"),
                kind: ParamKind::Bool,
            },
            ParamDef {
                name: "max_results",
                description: "Stop after this many matches.",
                default: Some("10000"),
                kind: ParamKind::U64,
            },
            ParamDef {
                name: "upload",
                description: "Also upload each matching regular file (up to 100 MiB each and \
                              500 MiB in all, as Generic.Collectors.File's defaults); its row \
                              then gains `upload`, `sha256`, `truncated` and `file_size`, and \
                              `size` is the bytes uploaded. Directories and special files are \
                              listed but never uploaded.",
                default: Some("false"),
                kind: ParamKind::Bool,
            },
        ],
    },
    ArtifactDef {
        name: COLLECTORS_FILE,
        description: "Uploads the files matching one or more globs: each regular file is \
                      copied as it is read (the SHA-256 is of exactly the bytes uploaded) and \
                      gets a row with path, size, file_size, mtime, sha256, truncated and its \
                      upload number. Directories, devices, FIFOs and sockets are skipped; a \
                      file that cannot be read is a row with an `error`.",
        kind: ArtifactKind::Collection,
        parameters: &[
            ParamDef {
                name: "globs",
                description: "Absolute path patterns, one per line (or a JSON array): `*`, \
                              `?`, `[...]` match within one path segment, `**` any number of \
                              directories (symlinked directories are not entered). At most \
                              64 globs; a file matched twice is uploaded once.",
                default: None,
                kind: ParamKind::GlobList,
            },
            ParamDef {
                name: "max_file_bytes",
                description: "Upload at most this many bytes of each file (its start); a \
                              longer file's row says `truncated`. Default 100 MiB.",
                default: Some(DEFAULT_COLLECTED_FILE_MAX_BYTES_TEXT),
                kind: ParamKind::U64,
            },
            ParamDef {
                name: "max_total_bytes",
                description: "Stop adding files once the uploads of this artifact would pass \
                              this many bytes; the first file left out gets an `error` row. \
                              Default 500 MiB. The collection's own max_upload_bytes also \
                              applies.",
                default: Some(DEFAULT_COLLECTED_TOTAL_MAX_BYTES_TEXT),
                kind: ParamKind::U64,
            },
        ],
    },
    ArtifactDef {
        name: CLIENT_STATS,
        description: "Agent CPU and memory use, sampled periodically.",
        kind: ArtifactKind::Event,
        parameters: &[ParamDef {
            name: "period_s",
            description: "Seconds between samples.",
            default: Some("10"),
            kind: ParamKind::U64,
        }],
    },
    ArtifactDef {
        name: PROCESS_START,
        description: "One row for each process started on the endpoint.",
        kind: ArtifactKind::Event,
        parameters: &[],
    },
    ArtifactDef {
        name: LOG_TAIL,
        description: "One row for each new line of a text log, from the end of the file when \
                      the query starts; follows rotation by rename and by truncation.",
        kind: ArtifactKind::Event,
        parameters: &[ParamDef {
            name: "path",
            description: "Absolute path of the log, e.g. /var/log/auth.log.",
            default: None,
            kind: ParamKind::String,
        }],
    },
];

#[cfg(test)]
mod tests {
    //! Goal: every documented request error is produced, valid requests come back with
    //! defaults filled and values canonical, and the catalogue is self-consistent.
    //! Method: call `validate_request` with hand-built requests and match error variants.

    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn params(
        artifact: &str,
        pairs: &[(&str, Value)],
    ) -> BTreeMap<String, BTreeMap<String, Value>> {
        let inner = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        BTreeMap::from([(artifact.to_string(), inner)])
    }

    #[test]
    fn valid_request_fills_defaults_in_request_order() {
        let request = names(&[FILES_GLOB, CLIENT_INFO]);
        let given = params(
            FILES_GLOB,
            &[("hash", json!(true)), ("max_results", json!("25"))],
        );
        let resolved = validate_request(&request, &given).unwrap();
        assert_eq!(resolved.len(), 2);
        assert_eq!(resolved[0].0, FILES_GLOB);
        assert_eq!(resolved[0].1["pattern"], "/etc/*.conf");
        assert_eq!(resolved[0].1["hash"], "true");
        assert_eq!(resolved[0].1["max_results"], "25");
        assert_eq!(resolved[1], (CLIENT_INFO.to_string(), BTreeMap::new()));
    }

    #[test]
    fn bool_and_u64_accept_json_and_string_forms() {
        for (hash, max) in [(json!(false), json!(7)), (json!("false"), json!("0007"))] {
            let given = params(FILES_GLOB, &[("hash", hash), ("max_results", max)]);
            let resolved = validate_request(&names(&[FILES_GLOB]), &given).unwrap();
            assert_eq!(resolved[0].1["hash"], "false");
            assert_eq!(resolved[0].1["max_results"], "7");
        }
    }

    #[test]
    fn empty_and_oversized_requests_are_refused() {
        let none = BTreeMap::new();
        assert!(matches!(
            validate_request(&[], &none),
            Err(ArtifactError::EmptyRequest)
        ));
        let many = vec![CLIENT_INFO.to_string(); MAX_ARTIFACTS_PER_REQUEST + 1];
        let err = validate_request(&many, &none).unwrap_err();
        assert!(matches!(
            err,
            ArtifactError::TooManyArtifacts { count: 33, max: 32 }
        ));
    }

    #[test]
    fn unknown_duplicate_and_event_artifacts_are_refused() {
        let none = BTreeMap::new();
        let err = validate_request(&names(&["Linux.Nope"]), &none).unwrap_err();
        assert!(err.to_string().contains("Linux.Nope"), "{err}");
        let err = validate_request(&names(&[PSLIST, USERS, PSLIST]), &none).unwrap_err();
        assert!(matches!(err, ArtifactError::DuplicateArtifact(ref n) if n == PSLIST));
        let err = validate_request(&names(&[CLIENT_STATS]), &none).unwrap_err();
        assert!(err.to_string().contains("is an event artifact"), "{err}");
        assert!(err.is_caller_fault());
    }

    #[test]
    fn parameters_for_missing_artifact_and_unknown_parameter_are_refused() {
        let given = params(FILES_GLOB, &[("pattern", json!("/tmp/*"))]);
        let err = validate_request(&names(&[PSLIST]), &given).unwrap_err();
        assert!(matches!(err, ArtifactError::ParametersForUnrequested(ref n) if n == FILES_GLOB));
        let given = params(FILES_GLOB, &[("colour", json!("red"))]);
        let err = validate_request(&names(&[FILES_GLOB]), &given).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(FILES_GLOB) && text.contains("colour"),
            "{text}"
        );
    }

    #[test]
    fn wrongly_typed_values_are_refused() {
        let cases = [
            ("hash", json!("yes")),
            ("hash", json!(1)),
            ("max_results", json!(-1)),
            ("max_results", json!(1.5)),
            ("max_results", json!("+5")),
            ("max_results", json!("")),
            ("max_results", json!("18446744073709551616")),
            ("max_results", json!(true)),
            ("pattern", json!(5)),
            ("pattern", json!("etc/*.conf")),
            ("pattern", json!("/etc/[ab.conf")),
            (
                "pattern",
                json!(format!("/{}", "a".repeat(MAX_PARAMETER_VALUE_BYTES))),
            ),
        ];
        for (name, value) in cases {
            let given = params(FILES_GLOB, &[(name, value.clone())]);
            let err = validate_request(&names(&[FILES_GLOB]), &given).unwrap_err();
            let named = matches!(err, ArtifactError::BadParameter { ref parameter, .. }
                if parameter == name);
            assert!(named, "{name}={value}: {err}");
        }
    }

    #[test]
    fn event_lookup_refuses_collections_and_types_json_parameters() {
        let def = find_event(CLIENT_STATS).unwrap();
        let given = BTreeMap::from([("period_s".to_string(), json!(30))]);
        assert_eq!(resolve_json_params(def, &given).unwrap()["period_s"], "30");
        assert_eq!(
            resolve_json_params(def, &BTreeMap::new()).unwrap()["period_s"],
            "10"
        );
        let err = find_event(PSLIST).unwrap_err();
        assert!(matches!(err, ArtifactError::CollectionArtifact(ref n) if n == PSLIST));
        assert!(matches!(
            find_event("Linux.Nope"),
            Err(ArtifactError::UnknownArtifact(_))
        ));
    }

    #[test]
    fn resolve_params_checks_agent_side_strings() {
        let def = find(FILES_GLOB).unwrap();
        let given = BTreeMap::from([("max_results".to_string(), "x".to_string())]);
        assert!(matches!(
            resolve_params(def, &given),
            Err(ArtifactError::BadParameter { .. })
        ));
        let given = BTreeMap::from([("nope".to_string(), "1".to_string())]);
        assert!(matches!(
            resolve_params(def, &given),
            Err(ArtifactError::UnknownParameter { .. })
        ));
    }

    #[test]
    fn glob_lists_take_arrays_and_lines_and_check_each_glob() {
        let request = names(&[COLLECTORS_FILE]);
        let resolve = |value: Value| {
            let given = params(COLLECTORS_FILE, &[("globs", value)]);
            validate_request(&request, &given).map(|r| r[0].1.clone())
        };
        let from_array = resolve(json!(["/var/log/*.log", "/etc/passwd"])).unwrap();
        assert_eq!(from_array["globs"], "/var/log/*.log\n/etc/passwd");
        let from_lines = resolve(json!("/var/log/*.log\r\n\n/etc/passwd\n")).unwrap();
        assert_eq!(from_lines["globs"], from_array["globs"]);
        assert_eq!(from_array["max_file_bytes"], "104857600");
        assert_eq!(
            from_array["max_file_bytes"],
            crate::limits::DEFAULT_COLLECTED_FILE_MAX_BYTES.to_string()
        );
        assert_eq!(
            from_array["max_total_bytes"],
            crate::limits::DEFAULT_COLLECTED_TOTAL_MAX_BYTES.to_string()
        );
        let too_many: Vec<String> = (0..=MAX_GLOBS_PER_PARAMETER_COUNT)
            .map(|i| format!("/tmp/{i}"))
            .collect();
        let refused = [
            json!([]),
            json!(""),
            json!("\n \n"),
            json!(["relative/*"]),
            json!(["/ok/*", "/tmp/[ab"]),
            json!("/ok/*\nrelative"),
            json!(["/a\n/b"]),
            json!([5]),
            json!(5),
            json!(too_many),
            json!(too_many.join("\n")),
        ];
        for value in refused {
            let err = resolve(value.clone()).unwrap_err();
            let named = matches!(err, ArtifactError::BadParameter { ref parameter, .. }
                if parameter == "globs");
            assert!(named, "{value}: {err}");
        }
        // Required: a file collector without globs is a mistake, not "collect nothing".
        let err = validate_request(&request, &BTreeMap::new()).unwrap_err();
        assert!(
            matches!(err, ArtifactError::MissingParameter { .. }),
            "{err}"
        );
        // The agent re-checks the canonical string form a task carries.
        let def = find(COLLECTORS_FILE).unwrap();
        let given = BTreeMap::from([("globs".to_string(), "/a/*\nb".to_string())]);
        assert!(resolve_params(def, &given).is_err());
    }

    #[test]
    fn glob_upload_flag_decides_may_upload() {
        let request = names(&[FILES_GLOB]);
        let given = params(FILES_GLOB, &[("upload", json!(true))]);
        let resolved = validate_request(&request, &given).unwrap();
        assert!(may_upload(FILES_GLOB, &resolved[0].1));
        let resolved = validate_request(&request, &BTreeMap::new()).unwrap();
        assert_eq!(resolved[0].1["upload"], "false");
        assert!(!may_upload(FILES_GLOB, &resolved[0].1));
    }

    #[test]
    fn catalogue_is_consistent_and_serialises() {
        let mut seen = BTreeSet::new();
        for def in catalogue() {
            assert!(seen.insert(def.name), "duplicate {}", def.name);
            // Every default must itself be a valid value, or a default request would fail;
            // a required parameter must be given.
            let required: BTreeMap<String, String> = def
                .parameters
                .iter()
                .filter(|p| p.default.is_none())
                .map(|p| (p.name.to_string(), "/var/log/auth.log".to_string()))
                .collect();
            resolve_params(def, &required).unwrap();
            if !required.is_empty() {
                assert!(matches!(
                    resolve_params(def, &BTreeMap::new()),
                    Err(ArtifactError::MissingParameter { .. })
                ));
            }
        }
        let body = catalogue_json();
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), catalogue().len());
        let glob = items.iter().find(|i| i["name"] == FILES_GLOB).unwrap();
        assert_eq!(glob["kind"], "collection");
        assert_eq!(glob["parameters"][0]["name"], "pattern");
        assert_eq!(glob["parameters"][0]["type"], "glob");
        assert_eq!(glob["parameters"][0]["default"], "/etc/*.conf");
        let stats = items.iter().find(|i| i["name"] == CLIENT_STATS).unwrap();
        assert_eq!(stats["kind"], "event");
        let tail = items.iter().find(|i| i["name"] == LOG_TAIL).unwrap();
        assert_eq!(tail["kind"], "event");
        assert_eq!(tail["parameters"][0]["name"], "path");
        assert_eq!(tail["parameters"][0]["default"], Value::Null);
        assert!(find_event(LOG_TAIL).is_ok());
        let files = items.iter().find(|i| i["name"] == COLLECTORS_FILE).unwrap();
        assert_eq!(files["kind"], "collection");
        assert_eq!(files["parameters"][0]["name"], "globs");
        assert_eq!(files["parameters"][0]["type"], "glob_list");
        assert_eq!(files["parameters"][0]["default"], Value::Null);
    }
}
