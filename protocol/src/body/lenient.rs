//! Field readers for what other clients write differently from Java: the C++ client 2.x
//! sends enums as ordinals (`"messageModel":1`) and `subVersion` as a string.

use serde::de::{self, Deserializer, Visitor};

/// An enum field: its Java name, or an ordinal into `names` (mapped to the name).
fn name_or_ordinal<'de, D: Deserializer<'de>>(
    deserializer: D,
    names: &'static [&'static str],
) -> Result<String, D::Error> {
    struct V(&'static [&'static str]);
    impl Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "an enum name or ordinal of {:?}", self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            self.0
                .get(v as usize)
                .map(|n| (*n).to_owned())
                .ok_or_else(|| E::custom(format!("ordinal {v} out of range of {:?}", self.0)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(format!("negative ordinal {v}"))),
            }
        }
    }
    deserializer.deserialize_any(V(names))
}

/// Java `ConsumeType` (declaration order = ordinals).
pub const CONSUME_TYPES: &[&str] = &["CONSUME_ACTIVELY", "CONSUME_PASSIVELY", "CONSUME_POP"];
/// Java `MessageModel`.
pub const MESSAGE_MODELS: &[&str] = &["BROADCASTING", "CLUSTERING"];
/// Java `ConsumeFromWhere`.
pub const CONSUME_FROM_WHERE: &[&str] = &[
    "CONSUME_FROM_LAST_OFFSET",
    "CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST",
    "CONSUME_FROM_MIN_OFFSET",
    "CONSUME_FROM_MAX_OFFSET",
    "CONSUME_FROM_FIRST_OFFSET",
    "CONSUME_FROM_TIMESTAMP",
];

pub fn consume_type<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    name_or_ordinal(d, CONSUME_TYPES)
}

pub fn message_model<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    name_or_ordinal(d, MESSAGE_MODELS)
}

pub fn consume_from_where<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    name_or_ordinal(d, CONSUME_FROM_WHERE)
}

/// An integer written as a number or as a decimal string.
pub fn i64_or_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an integer or a decimal string")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(E::custom)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
            v.trim().parse().map_err(E::custom)
        }
    }
    deserializer.deserialize_any(V)
}
