//! fastjson 1.x quirks that real RocketMQ peers depend on (reference §10).
//!
//! * Writing: fastjson writes maps with non-string keys with *bare* keys (`{0:"addr"}`), which
//!   is not JSON; old clients (version < 401) get route data in that form. Since 4.9.4 the name
//!   server's standard form uses fastjson's `BrowserCompatible` feature, which escapes every
//!   character above 0x7F as `\uXXXX` and `/` as `\/`.
//! * Reading: fastjson accepts bare keys, including whole objects used as keys
//!   (`{{"brokerName":"b","queueId":0,"topic":"t"}:5}`). [`quote_bare_keys`] rewrites such text
//!   into standard JSON (an object key becomes a string holding the object's text) so that
//!   serde can read it.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Writes a map with integer keys the fastjson way: `{0:"a",1:"b"}`, compact, in the given order.
pub fn write_bare_key_map<'a>(out: &mut String, entries: impl IntoIterator<Item = (i64, &'a str)>) {
    out.push('{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{key}:");
        out.push_str(&serde_json::to_string(value).expect("a string always serializes"));
    }
    out.push('}');
}

/// Writes a map whose keys are objects the fastjson way: `{{"brokerName":"b",…}:value,…}`,
/// compact, in the given order (Java's `Map<MessageQueue, …>` bodies). Read such text back
/// with [`quote_bare_keys`] and [`object_keys`].
pub fn write_object_key_map<'a, K, V>(
    out: &mut String,
    entries: impl IntoIterator<Item = (&'a K, &'a V)>,
) where
    K: serde::Serialize + 'a,
    V: serde::Serialize + 'a,
{
    out.push('{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key).expect("plain keys serialize"));
        out.push(':');
        out.push_str(&serde_json::to_string(value).expect("plain values serialize"));
    }
    out.push('}');
}

/// Reads a map whose object keys [`quote_bare_keys`] turned into strings holding their JSON:
/// `#[serde(deserialize_with = "fastjson::object_keys::deserialize")]`.
pub mod object_keys {
    use std::collections::BTreeMap;

    use serde::de::{DeserializeOwned, Deserializer, Error};
    use serde::Deserialize;

    pub fn deserialize<'de, D, K, V>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: DeserializeOwned + Ord,
        V: Deserialize<'de>,
    {
        let raw = BTreeMap::<String, V>::deserialize(deserializer)?;
        raw.into_iter()
            .map(|(key, value)| {
                serde_json::from_str(&key)
                    .map(|key| (key, value))
                    .map_err(|e| D::Error::custom(format!("map key {key:?}: {e}")))
            })
            .collect()
    }
}

/// Re-escapes standard compact JSON as fastjson's `BrowserCompatible` feature writes it:
/// characters above 0x7F become `\uXXXX` (UTF-16 code units) and `/` becomes `\/`.
///
/// Outside strings JSON text is ASCII without `/`, so the rewrite only ever touches strings.
pub fn browser_compatible(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + json.len() / 8);
    for c in json.chars() {
        match c {
            '/' => out.push_str("\\/"),
            c if (c as u32) > 0x7F => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04X}");
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Container {
    Object,
    Array,
}

/// Rewrites fastjson-lenient object keys into standard JSON. Text that is already standard comes
/// back borrowed. Malformed input is passed through (the JSON parser reports it afterwards).
pub fn quote_bare_keys(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut stack: Vec<Container> = Vec::new();
    let mut out: Option<String> = None;
    let mut copied_to = 0;
    let mut i = 0;
    // True right after `{` or after `,` inside an object: the next token is a key.
    let mut expect_key = false;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if expect_key && b != b'"' && b != b'}' {
            let end = if b == b'{' {
                skip_value(bytes, i)
            } else {
                bytes[i..]
                    .iter()
                    .position(|&c| c == b':')
                    .map_or(bytes.len(), |p| i + p)
            };
            let key = text[i..end].trim_end();
            let out = out.get_or_insert_with(|| String::with_capacity(text.len() + 16));
            out.push_str(&text[copied_to..i]);
            out.push_str(&serde_json::to_string(key).expect("a string always serializes"));
            copied_to = i + key.len();
            i = end;
            expect_key = false;
            continue;
        }
        expect_key = false;
        match b {
            b'"' => i = skip_string(bytes, i),
            b'{' => {
                stack.push(Container::Object);
                expect_key = true;
                i += 1;
            }
            b'[' => {
                stack.push(Container::Array);
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                i += 1;
            }
            b',' => {
                expect_key = stack.last() == Some(&Container::Object);
                i += 1;
            }
            _ => i += 1,
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut out) => {
            out.push_str(&text[copied_to..]);
            Cow::Owned(out)
        }
    }
}

/// Index just past the string starting at `start` (a `"`), or the end of input.
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Index just past the balanced object or array starting at `start`, or the end of input.
fn skip_value(bytes: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i = skip_string(bytes, i);
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bare_key_maps() {
        let mut out = String::new();
        write_bare_key_map(&mut out, [(0, "10.0.0.1:10911"), (1, "a\"b")]);
        assert_eq!(out, r#"{0:"10.0.0.1:10911",1:"a\"b"}"#);
        let mut empty = String::new();
        write_bare_key_map(&mut empty, []);
        assert_eq!(empty, "{}");
    }

    #[test]
    fn browser_compatible_escapes_non_ascii_and_slash() {
        assert_eq!(
            browser_compatible(r#"{"a":"é/😀"}"#),
            r#"{"a":"\u00E9\/\uD83D\uDE00"}"#
        );
        let escaped = browser_compatible(r#"{"k":"día/x"}"#);
        let v: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(v["k"], "día/x");
    }

    #[test]
    fn quotes_bare_numeric_and_object_keys() {
        let text = r#"{"brokerAddrs":{0:"a:1", 1 :"b:2"},"offsetTable":{{"brokerName":"b","queueId":0,"topic":"t"}:{"x":1}}}"#;
        let fixed = quote_bare_keys(text);
        let v: serde_json::Value = serde_json::from_str(&fixed).unwrap();
        assert_eq!(v["brokerAddrs"]["0"], "a:1");
        assert_eq!(v["brokerAddrs"]["1"], "b:2");
        let (key, value) = v["offsetTable"].as_object().unwrap().iter().next().unwrap();
        let key: serde_json::Value = serde_json::from_str(key).unwrap();
        assert_eq!(key["topic"], "t");
        assert_eq!(value["x"], 1);
    }

    #[test]
    fn standard_json_is_left_alone() {
        let text = r#"{"a":[{"b":"{c:d}"},1,"x,y:z"],"e":{}}"#;
        assert!(matches!(quote_bare_keys(text), Cow::Borrowed(_)));
    }

    proptest! {
        #[test]
        fn never_panics(text in ".{0,64}") {
            let _ = quote_bare_keys(&text);
            let _ = browser_compatible(&text);
        }

        #[test]
        fn standard_json_round_trips(keys in proptest::collection::btree_map("[a-z0-9 {}:,\"]{0,8}", 0i64..100, 0..5)) {
            let text = serde_json::to_string(&keys).unwrap();
            let quoted = quote_bare_keys(&text);
            prop_assert_eq!(quoted.as_ref(), text.as_str());
        }
    }
}
