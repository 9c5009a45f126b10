//! serde adapters for the id newtypes (`#[serde(with = ...)]`), so documents read from
//! disk come back as validated ids, never raw strings. `ids.rs` has no serde on purpose
//! (it is shared with code that must not depend on document formats).

macro_rules! id_serde {
    ($module:ident, $ty:ty) => {
        pub(crate) mod $module {
            use serde::{Deserialize, Deserializer, Serializer};

            pub(crate) fn serialize<S: Serializer>(id: &$ty, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(id.as_str())
            }

            pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let raw = String::deserialize(d)?;
                <$ty>::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_serde!(client_id, crate::ids::ClientId);
id_serde!(flow_id, crate::ids::FlowId);
id_serde!(hunt_id, crate::ids::HuntId);
