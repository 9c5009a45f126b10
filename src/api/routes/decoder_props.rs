//! Goal: no collection request body, however malformed, panics its decoder; each one is
//! either accepted or refused with a 400 that says what is wrong. Method: proptest over
//! raw bytes and over JSON trees built from the body's own keys and the catalogue's
//! artifact and parameter names (so the checks past serde are reached too). The
//! strategies here serve the other API decoders' tests as well.

use proptest::prelude::*;
use serde_json::Value;

use super::*;

/// The project's property-test settings (`limits::property_test_config`).
pub(crate) fn config() -> ProptestConfig {
    crate::limits::property_test_config()
}

/// Keys the API bodies use, the catalogue's names, and a few of anything.
fn key() -> impl Strategy<Value = String> {
    let mut known: Vec<String> = [
        "artifacts",
        "parameters",
        "timeout_s",
        "max_rows",
        "max_upload_bytes",
        "condition",
        "labels",
        "add",
        "remove",
        "expires_ms",
        "cancel_flows",
        "all",
        "by_label",
        "name",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for artifact in crate::artifacts::catalogue() {
        known.push(artifact.name.to_string());
        known.extend(artifact.parameters.iter().map(|p| p.name.to_string()));
    }
    prop_oneof![
        4 => prop::sample::select(known),
        1 => "\\PC{0,12}",
    ]
}

/// JSON trees up to 4 levels deep, leaves biased towards the values the bodies hold.
pub(crate) fn json_value() -> impl Strategy<Value = Value> {
    let names: Vec<String> = crate::artifacts::catalogue()
        .iter()
        .map(|a| a.name.to_string())
        .collect();
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (0u64..100).prop_map(Value::from),
        prop::sample::select(names).prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
        "[a-z0-9_./*-]{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A refusal says what is wrong (never an empty message).
pub(crate) fn explained(e: &ApiError) -> bool {
    matches!(e, ApiError::BadRequest(m) if !m.is_empty()) || matches!(e, ApiError::Datastore(_))
}

fn decode(body: &[u8]) -> Result<Vec<ArtifactRequestDoc>, ApiError> {
    let body: CollectionBody =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
    requested_artifacts(&body.artifacts, &body.parameters)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn collection_bodies_of_any_bytes_are_decided(body in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = decode(&body) {
            prop_assert!(explained(&e), "{e:?}");
        }
    }

    #[test]
    fn collection_bodies_of_any_json_are_decided(value in json_value()) {
        let body = serde_json::to_vec(&value).unwrap();
        match decode(&body) {
            Ok(artifacts) => {
                // Accepted: only catalogue artifacts that a collection may run.
                for a in &artifacts {
                    prop_assert!(crate::artifacts::find_collectable(a.name.as_str()).is_ok());
                }
            }
            Err(e) => prop_assert!(explained(&e), "{e:?}"),
        }
    }

    #[test]
    fn collection_bodies_shaped_like_requests_are_decided(
        artifacts in prop::collection::vec(json_value(), 0..4),
        parameters in json_value(),
        timeout in json_value(),
    ) {
        let body = serde_json::json!({
            "artifacts": artifacts,
            "parameters": parameters,
            "timeout_s": timeout,
        });
        if let Err(e) = decode(&serde_json::to_vec(&body).unwrap()) {
            prop_assert!(explained(&e), "{e:?}");
        }
    }
}
