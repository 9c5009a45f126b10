//! Goal: no hunt, hunt-stop or labels body, however malformed, panics its decoder; each
//! is accepted or refused with a 400 saying what is wrong. Method: proptest over raw bytes
//! and JSON trees (`routes::decoder_props`' strategies).

use proptest::prelude::*;

use super::*;
use crate::api::routes::decoder_props::{config, explained, json_value};

fn decode_hunt(body: &[u8]) -> Result<(), ApiError> {
    let body: HuntBody =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
    requested_artifacts(&body.artifacts, &body.parameters)?;
    check_labels(&body.condition.labels)
}

fn decode_labels(body: &[u8]) -> Result<(), ApiError> {
    let body: LabelsBody =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
    check_labels(&body.add)?;
    check_labels(&body.remove)
}

fn decode_stop(body: &[u8]) -> Result<(), ApiError> {
    if body.is_empty() {
        return Ok(());
    }
    serde_json::from_slice::<Option<StopBody>>(body)
        .map(|_| ())
        .map_err(|e| ApiError::BadRequest(format!("body: {e}")))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn hunt_label_and_stop_bodies_of_any_bytes_are_decided(
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        for decode in [decode_hunt, decode_labels, decode_stop] {
            if let Err(e) = decode(&body) {
                prop_assert!(explained(&e), "{e:?}");
            }
        }
    }

    #[test]
    fn hunt_label_and_stop_bodies_of_any_json_are_decided(value in json_value()) {
        let body = serde_json::to_vec(&value).unwrap();
        for decode in [decode_hunt, decode_labels, decode_stop] {
            if let Err(e) = decode(&body) {
                prop_assert!(explained(&e), "{e:?}");
            }
        }
    }

    #[test]
    fn labels_accepted_are_labels(add in prop::collection::vec("\\PC{0,80}", 0..8)) {
        let body = serde_json::to_vec(&serde_json::json!({ "add": add })).unwrap();
        if decode_labels(&body).is_ok() {
            for label in &add {
                prop_assert!(crate::datastore::Label::parse(label).is_ok());
            }
        }
    }
}
