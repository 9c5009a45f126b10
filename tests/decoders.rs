//! Goal: every decoder of untrusted input (agent frames and the messages agents send,
//! JSONL result batches, upload paths, the client event table, config files) answers
//! anything with a value or a clear error: never a panic, never a path outside the
//! client's folder. Method: proptest, `DEFAULT_PROPERTY_TEST_CASES_COUNT` cases each
//! (`PROPTEST_CASES` overrides), over raw bytes and over inputs shaped like the real
//! thing, so that the checks past the first parse are reached too. The API's JSON bodies
//! are tested beside their private types (`src/api/routes/decoder_props.rs`,
//! `src/api/hunts/decoder_props.rs`).

use std::path::{Component, Path};

use bytes::Bytes;
use proptest::prelude::*;

use packhunt::datastore::path::sanitise_upload_path;
use packhunt::datastore::Datastore;
use packhunt::ids::{ClientId, FlowId};
use packhunt::protocol::framing::{self, FrameDecoder, FrameError};
use packhunt::protocol::pb;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(packhunt::limits::DEFAULT_PROPERTY_TEST_CASES_COUNT);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Paths as agents on any OS might send them, hostile ones included.
fn agent_path() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just("".to_string()),
        Just("C:".to_string()),
        Just("\\\\?\\".to_string()),
        Just("\\\\?\\UNC\\".to_string()),
        Just("//./".to_string()),
        Just("\0".to_string()),
        Just("...".to_string()),
        "[a-zA-Z0-9._-]{1,12}",
        "\\PC{1,8}",
        "[.]{1,4}[^/\\\\]{0,3}",
        ".{1,300}",
    ];
    let separator = prop_oneof![Just("/"), Just("\\"), Just("//"), Just("")];
    prop::collection::vec((part, separator), 0..40).prop_map(|parts| {
        parts
            .into_iter()
            .flat_map(|(p, s)| [p, s.to_string()])
            .collect::<String>()
    })
}

fn plain_relative(path: &Path) -> bool {
    path.components().all(|c| matches!(c, Component::Normal(_)))
        && !path.as_os_str().is_empty()
        && !path.is_absolute()
}

/// A result batch's rows: mostly JSON objects, some not, with and without newlines.
fn jsonl_batch() -> impl Strategy<Value = Vec<u8>> {
    let row = prop_oneof![
        Just(b"{}".to_vec()),
        Just(b"{\"a\":1,\"b\":[1,2,{\"c\":null}]}".to_vec()),
        Just(b"[1,2]".to_vec()),
        Just(b"{\"a\":".to_vec()),
        Just(b"{\"a\":\"\xff\"}".to_vec()),
        Just(b"{} {}".to_vec()),
        Just(Vec::new()),
        "\\PC{0,20}".prop_map(|s| format!("{{\"k\":{}}}", serde_json::json!(s)).into_bytes()),
        prop::collection::vec(any::<u8>(), 0..24),
    ];
    let end = prop_oneof![
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(Vec::new())
    ];
    prop::collection::vec((row, end), 0..12).prop_map(|rows| {
        rows.into_iter()
            .flat_map(|(r, e)| [r, e])
            .flatten()
            .collect()
    })
}

/// An upload message with hostile field values.
fn upload() -> impl Strategy<Value = pb::Upload> {
    let text = prop_oneof![
        "\\PC{0,40}",
        Just("F.0123456789abcdef".to_string()),
        Just("Linux.Sys.Pslist".to_string()),
        agent_path(),
    ];
    let bytes = prop::collection::vec(any::<u8>(), 0..64);
    (text.clone(), text, bytes, any::<u64>(), 0u8..5).prop_map(|(a, b, data, n, kind)| {
        use pb::upload::Kind;
        let kind = match kind {
            0 => Kind::Result(pb::ResultBatch {
                flow_id: a,
                artifact: b,
                seq: n,
                jsonl: data.into(),
                ..Default::default()
            }),
            1 => Kind::File(pb::FileChunk {
                flow_id: a,
                path: b,
                offset: n,
                data: data.into(),
                ..Default::default()
            }),
            2 => Kind::Info(pb::ClientInfo {
                hostname: a,
                os: b,
                version: String::from_utf8_lossy(&data).into_owned(),
            }),
            3 => Kind::Status(pb::FlowStatus {
                flow_id: a,
                errors: vec![b],
                limit_hit: String::from_utf8_lossy(&data).into_owned(),
                ..Default::default()
            }),
            _ => Kind::Events(pb::EventBatch {
                artifact: a,
                jsonl: data.into(),
                ..Default::default()
            }),
        };
        pb::Upload { kind: Some(kind) }
    })
}

proptest! {
    #![proptest_config(config())]

    // ---- Agent frames and messages ---------------------------------------------------------

    #[test]
    fn any_upload_body_decodes_or_is_refused(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let max = packhunt::limits::DEFAULT_MAX_UPLOAD_BYTES;
        match framing::decode_single::<pb::Upload>(Bytes::from(body.clone()), max) {
            Ok(_) => {}
            Err(FrameError::TooLarge { claimed_bytes, .. }) => prop_assert!(claimed_bytes > max),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        // The agent's reading of server frames, fed in arbitrary chunks.
        let mut decoder = FrameDecoder::new(256);
        for chunk in body.chunks(7) {
            decoder.extend(chunk);
            while let Ok(Some(_)) = decoder.next_message::<pb::ServerMessage>() {}
        }
    }

    #[test]
    fn uploads_round_trip_and_every_cut_is_refused(msg in upload(), cut in any::<prop::sample::Index>()) {
        let frame = framing::encode(&msg);
        let max = frame.len() as u64;
        let back = framing::decode_single::<pb::Upload>(frame.clone(), max).unwrap();
        prop_assert_eq!(&back, &msg);
        let at = cut.index(frame.len());
        let short = framing::decode_single::<pb::Upload>(frame.slice(..at), max);
        prop_assert!(short.is_err(), "a frame cut at {} of {} was accepted", at, frame.len());
        let mut long = frame.to_vec();
        long.push(0);
        prop_assert!(framing::decode_single::<pb::Upload>(Bytes::from(long), max + 1).is_err());
        // Streamed in pieces, the same message comes out once.
        let mut decoder = FrameDecoder::new(frame.len());
        decoder.extend(&frame[..at]);
        let early = decoder.next_message::<pb::Upload>().unwrap();
        prop_assert!(early.is_none() || at == frame.len());
        decoder.extend(&frame[at..]);
        let whole = decoder.next_message::<pb::Upload>().unwrap();
        prop_assert_eq!(whole.as_ref().or(early.as_ref()), Some(&msg));
    }

    #[test]
    fn ids_and_names_from_agents_parse_or_are_refused(text in "\\PC{0,80}") {
        if let Ok(id) = FlowId::parse(&text) {
            prop_assert_eq!(id.as_str(), text.as_str());
            prop_assert!(!text.contains(['/', '\\', '\0']) && text != ".." && text != ".");
        }
        if let Ok(id) = ClientId::parse(&text) {
            prop_assert!(!text.contains(['/', '\\', '\0']) && text != ".." && text != ".");
            prop_assert_eq!(id.as_str(), text.as_str());
        }
        if let Ok(name) = packhunt::datastore::ArtifactName::parse(&text) {
            prop_assert!(!name.as_str().contains(['/', '\\', '\0']));
            prop_assert!(name.as_str() != ".." && name.as_str() != ".");
        }
    }

    // ---- JSONL result batches --------------------------------------------------------------

    #[test]
    fn jsonl_batches_are_indexed_row_for_row_or_refused_whole(
        batch in jsonl_batch(),
        base in 0u64..1_000_000,
        prefix in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut index = prefix.clone();
        match packhunt::datastore::jsonl::validate_and_index(&batch, base, &mut index) {
            Ok(rows) => {
                prop_assert_eq!(index.len(), prefix.len() + rows as usize * 8);
                let text = std::str::from_utf8(&batch).expect("accepted batches are UTF-8");
                prop_assert!(text.ends_with('\n'));
                let lines: Vec<&str> = text[..text.len() - 1].split('\n').collect();
                prop_assert_eq!(lines.len() as u64, rows);
                let mut offset = base;
                for (i, line) in lines.iter().enumerate() {
                    let value: serde_json::Value = serde_json::from_str(line)
                        .map_err(|e| TestCaseError::fail(format!("row {i}: {e}")))?;
                    prop_assert!(value.is_object(), "row {} is not an object", i);
                    let at = prefix.len() + i * 8;
                    let recorded = u64::from_le_bytes(index[at..at + 8].try_into().unwrap());
                    prop_assert_eq!(recorded, offset);
                    offset += line.len() as u64 + 1;
                }
            }
            Err(e) => {
                prop_assert_eq!(&index, &prefix, "a refused batch leaves the index as it was");
                prop_assert!(e.line >= 1);
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn jsonl_of_any_bytes_is_decided(batch in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut index = Vec::new();
        if let Ok(rows) = packhunt::datastore::jsonl::validate_and_index(&batch, 0, &mut index) {
            prop_assert_eq!(index.len() as u64, rows * 8);
        }
    }

    // ---- Upload paths ----------------------------------------------------------------------

    #[test]
    fn upload_paths_stay_inside_the_flows_uploads(path in agent_path()) {
        match sanitise_upload_path(&path) {
            Ok(relative) => {
                prop_assert!(plain_relative(&relative), "{:?} from {:?}", relative, path);
                let text = relative.to_str().expect("sanitised paths are UTF-8");
                prop_assert!(!text.contains('\0'));
                prop_assert!(!text.contains('\\'));
                for component in relative.components() {
                    let c = component.as_os_str();
                    prop_assert!(c != ".." && c != "." && !c.is_empty());
                }
                prop_assert!(text.len() <= packhunt::limits::MAX_UPLOAD_RELATIVE_BYTES);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn stored_and_agent_paths_resolve_under_the_client_folder(
        path in agent_path(),
        stored in agent_path(),
    ) {
        let root = tempfile::tempdir().unwrap();
        let ds = Datastore::open(root.path().to_path_buf(), false).unwrap();
        let client = ds.client(&ClientId::parse("C.0123456789abcdef").unwrap());
        let flow = client.flow(&FlowId::parse("F.0123456789ABCDEF").unwrap());
        let uploads = flow.uploads_dir();
        if let Ok(p) = flow.upload_path(&path) {
            prop_assert!(p.starts_with(&uploads) && p != uploads, "{:?}", p);
            prop_assert!(plain_relative(p.strip_prefix(&uploads).unwrap()));
        }
        if let Ok(p) = flow.stored_upload_path(&stored) {
            prop_assert!(p.starts_with(&uploads) && p != uploads, "{:?}", p);
            prop_assert!(plain_relative(p.strip_prefix(&uploads).unwrap()));
            prop_assert!(p.starts_with(client.path()));
        }
    }

    // ---- Client event table ----------------------------------------------------------------

    #[test]
    fn event_tables_of_any_bytes_are_decided(body in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = packhunt::events::table::EventTable::parse(&body) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn event_tables_shaped_like_tables_are_decided(
        names in prop::collection::vec(event_entry(), 0..6),
        labels in prop::collection::btree_map("\\PC{0,70}", prop::collection::vec(event_entry(), 0..3), 0..4),
    ) {
        let body = serde_json::json!({ "all": names, "by_label": labels });
        let body = serde_json::to_vec(&body).unwrap();
        if let Err(e) = packhunt::events::table::EventTable::parse(&body) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    // ---- Config files ----------------------------------------------------------------------

    #[test]
    fn config_files_of_any_text_load_or_name_what_is_wrong(text in config_text()) {
        let dir = tempfile::tempdir().unwrap();
        let server = dir.path().join("server.config.toml");
        std::fs::write(&server, &text).unwrap();
        if let Err(e) = packhunt::config::ServerConfig::load(&server) {
            prop_assert!(e.to_string().contains("server.config.toml"), "{}", e);
        }
        let client = dir.path().join("client.config.toml");
        std::fs::write(&client, &text).unwrap();
        if let Err(e) = packhunt::config::ClientConfig::load(&client) {
            prop_assert!(e.to_string().contains("client.config.toml"), "{}", e);
        }
    }

    #[test]
    fn a_valid_config_with_one_value_changed_loads_or_names_it(
        key in prop::sample::select(generated_keys()),
        value in toml_value(),
    ) {
        let (dir, text) = generated();
        let edited = set_value(&text, &key, &value);
        let server = dir.path().join("server.config.toml");
        std::fs::write(&server, &edited).unwrap();
        if let Err(e) = packhunt::config::ServerConfig::load(&server) {
            prop_assert!(e.to_string().contains("server.config.toml"), "{}", e);
        }
    }
}

fn event_entry() -> impl Strategy<Value = serde_json::Value> {
    let names: Vec<String> = packhunt::artifacts::catalogue()
        .iter()
        .map(|a| a.name.to_string())
        .chain(["Linux.Nope".to_string(), String::new()])
        .collect();
    let param = prop_oneof![
        Just(serde_json::json!(1)),
        Just(serde_json::json!("10")),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(null)),
        Just(serde_json::json!([1])),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
    ];
    (
        prop::sample::select(names),
        prop::collection::btree_map("period_s|globs|\\PC{0,6}", param, 0..3),
    )
        .prop_map(|(name, parameters)| serde_json::json!({"name": name, "parameters": parameters}))
}

/// TOML-ish text: fragments of real config syntax, mixed with noise.
fn config_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("[frontend]".to_string()),
        Just("[gui]".to_string()),
        Just("[tls]".to_string()),
        Just("[datastore]".to_string()),
        Just("[limits]".to_string()),
        Just("[client]".to_string()),
        Just("[[users]]".to_string()),
        Just("[[minions]]".to_string()),
        Just("server_urls = [\"https://127.0.0.1:8000/\"]".to_string()),
        Just("location = \"../../etc\"".to_string()),
        Just("port = 99999999999".to_string()),
        Just("max_connections = 0".to_string()),
        Just("enrolment_secret = \"x\"".to_string()),
        "[a-z_]{1,20} = [0-9]{1,20}",
        "[a-z_]{1,20} = \"\\PC{0,20}\"",
        "\\PC{0,40}",
    ];
    prop::collection::vec(line, 0..20).prop_map(|lines| lines.join("\n"))
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551615".to_string()),
        Just("9223372036854775807".to_string()),
        Just("true".to_string()),
        Just("\"\"".to_string()),
        Just("\"::\"".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("1e400".to_string()),
        "[0-9]{1,12}",
        "\"\\PC{0,30}\"".prop_map(|s| s.replace('\\', "\\\\")),
    ]
}

/// A generated deployment's server config (generated once, copied per case).
fn generated() -> (tempfile::TempDir, String) {
    use std::sync::OnceLock;
    static TEXT: OnceLock<String> = OnceLock::new();
    let text = TEXT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = packhunt::config::generate::GenerateOptions::new(dir.path());
        opts.admin_password = Some("pw".into());
        let generated = packhunt::config::generate::generate(&opts).unwrap();
        std::fs::read_to_string(generated.server_config_path).unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    (dir, text.clone())
}

/// Every `key = value` line's key in the generated config.
fn generated_keys() -> Vec<String> {
    let (_dir, text) = generated();
    let mut keys: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.trim().to_string()))
        .filter(|k| !k.is_empty() && !k.starts_with('#') && !k.contains(' '))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The text with the first `key = ...` line's value replaced.
fn set_value(text: &str, key: &str, value: &str) -> String {
    let mut done = false;
    text.lines()
        .map(|line| {
            if !done && line.split_once(" = ").is_some_and(|(k, _)| k.trim() == key) {
                done = true;
                format!("{key} = {value}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
