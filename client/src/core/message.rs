//! Messages as applications see them: `Message` to send, `MessageExt` received (every field
//! decoded and owned) or `MessageView` received (read in place, fields decoded on demand: the
//! bulk consumer's choice).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::protocol::message::{
    self, encode_properties, find_property, parse_properties, property, DecodedRecord, RecordView,
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
        split_keys(self.properties.get(property::KEYS).map(String::as_str))
    }

    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }
}

fn split_keys(keys: Option<&str>) -> Vec<&str> {
    keys.map(|k| k.split(' ').filter(|k| !k.is_empty()).collect())
        .unwrap_or_default()
}

/// A received message read in place from the pull response's buffer: the fixed fields are
/// decoded, body, topic and properties stay where they arrived (no allocation per message),
/// properties are looked up when asked for and the message ids formatted when asked for. Every
/// accessor gives what the same-named field of [`MessageExt`] holds for the same record;
/// [`MessageView::to_message_ext`] is that `MessageExt`.
#[derive(Debug, Clone)]
pub struct MessageView {
    record: RecordView,
}

impl MessageView {
    pub fn new(record: RecordView) -> MessageView {
        MessageView { record }
    }

    /// The stored record (every field of the CommitLog layout).
    pub fn record(&self) -> &RecordView {
        &self.record
    }

    pub fn topic(&self) -> &str {
        self.record.topic()
    }

    pub fn queue_id(&self) -> i32 {
        self.record.queue_id
    }

    pub fn queue_offset(&self) -> i64 {
        self.record.queue_offset
    }

    pub fn commit_log_offset(&self) -> i64 {
        self.record.physical_offset
    }

    /// The body, sharing the response's buffer.
    pub fn body(&self) -> Bytes {
        self.record.body()
    }

    pub fn body_bytes(&self) -> usize {
        self.record.body_bytes()
    }

    pub fn born_timestamp(&self) -> i64 {
        self.record.born_timestamp
    }

    pub fn store_timestamp(&self) -> i64 {
        self.record.store_timestamp
    }

    pub fn store_host(&self) -> SocketAddr {
        self.record.store_host
    }

    pub fn reconsume_times(&self) -> i32 {
        self.record.reconsume_times
    }

    /// A property by name, found in the wire string (the last duplicate wins, empty values
    /// do not count: as in the map of `MessageExt::properties`).
    pub fn property(&self, name: &str) -> Option<&str> {
        // The map never holds an empty name; the wire string may.
        if name.is_empty() {
            return None;
        }
        find_property(self.record.properties(), name)
    }

    /// All properties, parsed now.
    pub fn properties(&self) -> BTreeMap<String, String> {
        parse_properties(self.record.properties())
    }

    pub fn tags(&self) -> Option<&str> {
        self.property(property::TAGS)
    }

    pub fn keys(&self) -> Vec<&str> {
        split_keys(self.property(property::KEYS))
    }

    /// The producer's id (`UNIQ_KEY`), else the offset id.
    pub fn msg_id(&self) -> Cow<'_, str> {
        match self.property(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX) {
            Some(id) => Cow::Borrowed(id),
            None => Cow::Owned(self.offset_msg_id()),
        }
    }

    /// Broker address + CommitLog offset, in hex (VIEW_MESSAGE_BY_ID), formatted now.
    pub fn offset_msg_id(&self) -> String {
        message::offset_msg_id(self.record.store_host, self.record.physical_offset)
    }

    /// The message with every field decoded and owned.
    pub fn to_message_ext(&self) -> MessageExt {
        MessageExt::from_record(self.record.to_decoded())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Records back to back as a pull body carries them: with and without `UNIQ_KEY`, with
    /// duplicate and empty properties, a compressed-flag body (handed over as stored, by both
    /// decodes), an IPv6 store host, and a batch's records.
    pub(crate) fn pull_body() -> Bytes {
        use crate::protocol::message::{body_crc, sys_flag, RecordRef};
        let with_id = encode_properties([
            ("TAGS", "TagA"),
            ("KEYS", "k1  k2"),
            ("UNIQ_KEY", "7F0000010001"),
            ("color", "red"),
            ("color", "blue"),
            ("empty", ""),
        ]);
        let without_id = encode_properties([("TAGS", "TagB"), ("\u{1}x", "y")]);
        let cases: [(&str, i32, &str); 5] = [
            (&with_id, 0, "127.0.0.1:10911"),
            (&without_id, 0, "127.0.0.1:10911"),
            ("", sys_flag::COMPRESSED, "10.0.0.1:10911"),
            ("TAGS\u{1}TagA\u{2}", 0, "[::1]:10911"),
            (&with_id, 0, "[::1]:10911"),
        ];
        let mut body = Vec::new();
        for (i, (properties, flag, store_host)) in cases.into_iter().enumerate() {
            let payload = vec![b'a' + i as u8; 100 * i];
            let record = RecordRef {
                queue_id: 3,
                flag: 1,
                queue_offset: 40 + i as i64,
                physical_offset: 1000 * i as i64,
                sys_flag: flag,
                born_timestamp: 1_700_000_000_000 + i as i64,
                born_host: "10.0.0.9:5555".parse().unwrap(),
                store_timestamp: 1_700_000_000_500 + i as i64,
                store_host: store_host.parse().unwrap(),
                reconsume_times: i as i32,
                prepared_transaction_offset: 0,
                body: &payload,
                topic: "TopicTest",
                properties,
            };
            record.encode(body_crc(&payload), &mut body);
        }
        Bytes::from(body)
    }

    /// Every accessor of the in-place view gives what the eager decode's field holds.
    #[test]
    fn a_view_reads_what_the_eager_decode_holds() {
        use crate::protocol::message::{decode_records, record_views};
        let body = pull_body();
        let eager: Vec<MessageExt> = decode_records(&body, true)
            .unwrap()
            .into_iter()
            .map(MessageExt::from_record)
            .collect();
        let views: Vec<MessageView> = record_views(&body, true)
            .map(|r| MessageView::new(r.unwrap()))
            .collect();
        assert_eq!(views.len(), 5);
        for (view, ext) in views.iter().zip(&eager) {
            assert_eq!(view.topic(), ext.topic);
            assert_eq!(view.queue_id(), ext.queue_id);
            assert_eq!(view.queue_offset(), ext.queue_offset);
            assert_eq!(view.commit_log_offset(), ext.commit_log_offset);
            assert_eq!(view.body(), ext.body);
            assert_eq!(view.body_bytes(), ext.body.len());
            assert_eq!(view.properties(), ext.properties);
            assert_eq!(view.born_timestamp(), ext.born_timestamp);
            assert_eq!(view.store_timestamp(), ext.store_timestamp);
            assert_eq!(view.store_host(), ext.store_host);
            assert_eq!(view.reconsume_times(), ext.reconsume_times);
            assert_eq!(view.msg_id(), ext.msg_id);
            assert_eq!(view.offset_msg_id(), ext.offset_msg_id);
            assert_eq!(view.tags(), ext.tags());
            assert_eq!(view.keys(), ext.keys());
            for name in [
                "TAGS", "KEYS", "UNIQ_KEY", "color", "empty", "", "x", "missing",
            ] {
                assert_eq!(view.property(name), ext.property(name), "property {name:?}");
            }
            let again = view.to_message_ext();
            assert_eq!(
                (
                    again.msg_id,
                    again.offset_msg_id,
                    again.properties,
                    again.body
                ),
                (
                    ext.msg_id.clone(),
                    ext.offset_msg_id.clone(),
                    ext.properties.clone(),
                    ext.body.clone()
                )
            );
        }
        // Spot checks against the records as written, not only against the other decode.
        assert_eq!(views[0].msg_id(), "7F0000010001");
        assert_eq!(views[0].property("color"), Some("blue"));
        assert_eq!(views[0].keys(), ["k1", "k2"]);
        assert_eq!(views[1].msg_id(), views[1].offset_msg_id());
        assert_eq!(views[1].offset_msg_id(), "7F00000100002A9F00000000000003E8");
        assert_eq!(
            views[2].record().sys_flag & crate::protocol::message::sys_flag::COMPRESSED,
            crate::protocol::message::sys_flag::COMPRESSED
        );
        assert_eq!(views[2].body(), vec![b'c'; 200]);
        assert!(views[3].store_host().is_ipv6());
        assert_eq!(views[4].offset_msg_id().len(), 56);
    }

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
