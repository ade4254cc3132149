//! Offset tables a master hands its slaves (and admin tools): GET_ALL_CONSUMER_OFFSET answers
//! `ConsumerOffsetSerializeWrapper`, GET_ALL_DELAY_OFFSET `DelayOffsetSerializeWrapper`.
//!
//! ```json
//! {"offsetTable":{"TopicA@GroupA":{"0":12,"1":7}},"dataVersion":{...}}   // consumer offsets
//! {"offsetTable":{"1":340,"3":12},"dataVersion":{...}}                    // delay level -> offset
//! ```
//! Java writes the integer keys bare (`{0:12}`); both forms are read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::DataVersion;

/// `ConsumerOffsetSerializeWrapper`: `topic@group` -> queue id -> next offset to consume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerOffsetSerializeWrapper {
    pub offset_table: BTreeMap<String, BTreeMap<i32, i64>>,
    pub data_version: DataVersion,
}

/// `DelayOffsetSerializeWrapper`: delay level (1-based) -> offset of its schedule queue
/// delivered up to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DelayOffsetSerializeWrapper {
    pub offset_table: BTreeMap<i32, i64>,
    pub data_version: DataVersion,
}

/// The `topic@group` key of an offset table entry, split back (the group never holds `@`,
/// a topic may).
pub fn split_topic_group(key: &str) -> Option<(&str, &str)> {
    key.rsplit_once('@')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{decode_lenient, encode};

    #[test]
    fn consumer_offsets_round_trip_and_read_java_bare_keys() {
        let mut wrapper = ConsumerOffsetSerializeWrapper::default();
        wrapper
            .offset_table
            .insert("T@G".into(), BTreeMap::from([(0, 12), (3, 7)]));
        let back: ConsumerOffsetSerializeWrapper =
            decode_lenient("offsets", &encode(&wrapper)).unwrap();
        assert_eq!(back, wrapper);
        let java =
            br#"{"offsetTable":{"T@G":{0:12,3:7}},"dataVersion":{"counter":2,"timestamp":5}}"#;
        let read: ConsumerOffsetSerializeWrapper = decode_lenient("offsets", java).unwrap();
        assert_eq!(read.offset_table, wrapper.offset_table);
        assert_eq!(read.data_version.counter, 2);
    }

    #[test]
    fn delay_offsets_round_trip_and_read_java_bare_keys() {
        let wrapper = DelayOffsetSerializeWrapper {
            offset_table: BTreeMap::from([(1, 340), (3, 12)]),
            data_version: DataVersion::default(),
        };
        let back: DelayOffsetSerializeWrapper = decode_lenient("delay", &encode(&wrapper)).unwrap();
        assert_eq!(back, wrapper);
        let read: DelayOffsetSerializeWrapper =
            decode_lenient("delay", br#"{"offsetTable":{1:340,3:12}}"#).unwrap();
        assert_eq!(read.offset_table, wrapper.offset_table);
    }

    #[test]
    fn topic_group_keys_split_at_the_last_at() {
        assert_eq!(split_topic_group("T@G"), Some(("T", "G")));
        assert_eq!(split_topic_group("a@b@G"), Some(("a@b", "G")));
        assert_eq!(split_topic_group("nokey"), None);
    }
}
