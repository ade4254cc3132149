//! Messages as applications see them: `Message` to send, `MessageExt` received.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::protocol::message::{
    self, encode_properties, parse_properties, property, DecodedRecord,
};

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub body: Bytes,
    pub tags: Option<String>,
    /// Index keys (QUERY_MESSAGE finds the message by any of them).
    pub keys: Vec<String>,
    /// User properties (names must not clash with RocketMQ's own).
    pub properties: BTreeMap<String, String>,
    /// RocketMQ delay level (1..=18); 0 = none.
    pub delay_level: i32,
    pub flag: i32,
}

impl Message {
    pub fn new(topic: impl Into<String>, body: impl Into<Bytes>) -> Message {
        Message {
            topic: topic.into(),
            body: body.into(),
            tags: None,
            keys: Vec::new(),
            properties: BTreeMap::new(),
            delay_level: 0,
            flag: 0,
        }
    }

    pub fn with_tags(mut self, tags: impl Into<String>) -> Message {
        self.tags = Some(tags.into());
        self
    }

    pub fn with_key(mut self, key: impl Into<String>) -> Message {
        self.keys.push(key.into());
        self
    }

    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Message {
        self.properties.insert(name.into(), value.into());
        self
    }

    /// A property the message carries (user or RocketMQ's own set with `with_property`).
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }

    pub fn with_delay_level(mut self, level: i32) -> Message {
        self.delay_level = level;
        self
    }

    /// The wire properties string, with the message id and `WAIT=true`.
    pub fn properties_string(&self, uniq_key: &str) -> String {
        let keys = self.keys.join(" ");
        let delay = self.delay_level.to_string();
        let mut pairs: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if !keys.is_empty() {
            pairs.push((property::KEYS, &keys));
        }
        if let Some(tags) = &self.tags {
            pairs.push((property::TAGS, tags));
        }
        if self.delay_level > 0 {
            pairs.push((property::DELAY, &delay));
        }
        pairs.push((property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX, uniq_key));
        pairs.push((property::WAIT, "true"));
        encode_properties(pairs)
    }
}

/// A received message: the stored record and what is derived from it.
#[derive(Debug, Clone)]
pub struct MessageExt {
    pub topic: String,
    pub queue_id: i32,
    pub queue_offset: i64,
    pub commit_log_offset: i64,
    pub body: Bytes,
    pub properties: BTreeMap<String, String>,
    pub born_timestamp: i64,
    pub store_timestamp: i64,
    pub store_host: SocketAddr,
    pub reconsume_times: i32,
    /// The producer's id (`UNIQ_KEY`), else the offset id.
    pub msg_id: String,
    /// Broker address + CommitLog offset, in hex (VIEW_MESSAGE_BY_ID).
    pub offset_msg_id: String,
}

impl MessageExt {
    pub fn from_record(record: DecodedRecord) -> MessageExt {
        let properties = parse_properties(&record.properties);
        let offset_msg_id = message::offset_msg_id(record.store_host, record.physical_offset);
        let msg_id = properties
            .get(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX)
            .cloned()
            .unwrap_or_else(|| offset_msg_id.clone());
        MessageExt {
            topic: record.topic,
            queue_id: record.queue_id,
            queue_offset: record.queue_offset,
            commit_log_offset: record.physical_offset,
            body: record.body,
            properties,
            born_timestamp: record.born_timestamp,
            store_timestamp: record.store_timestamp,
            store_host: record.store_host,
            reconsume_times: record.reconsume_times,
            msg_id,
            offset_msg_id,
        }
    }

    pub fn tags(&self) -> Option<&str> {
        self.properties.get(property::TAGS).map(String::as_str)
    }

    pub fn keys(&self) -> Vec<&str> {
        self.properties
            .get(property::KEYS)
            .map(|k| k.split(' ').filter(|k| !k.is_empty()).collect())
            .unwrap_or_default()
    }

    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::find_property;

    #[test]
    fn properties_carry_keys_tags_delay_and_the_id() {
        let message = Message::new("T", "b")
            .with_tags("TagA")
            .with_key("k1")
            .with_key("k2")
            .with_property("color", "red")
            .with_delay_level(3);
        let text = message.properties_string("ID1");
        assert_eq!(find_property(&text, "KEYS"), Some("k1 k2"));
        assert_eq!(find_property(&text, "TAGS"), Some("TagA"));
        assert_eq!(find_property(&text, "DELAY"), Some("3"));
        assert_eq!(find_property(&text, "UNIQ_KEY"), Some("ID1"));
        assert_eq!(find_property(&text, "color"), Some("red"));
        assert_eq!(find_property(&text, "WAIT"), Some("true"));
        let plain = Message::new("T", "b").properties_string("ID2");
        assert_eq!(find_property(&plain, "DELAY"), None);
        assert_eq!(find_property(&plain, "KEYS"), None);
    }
}
