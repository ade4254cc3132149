//! JSON header (serialize type 0), shaped as fastjson writes it.
//!
//! A Java broker emits `{"code":0,"extFields":{...},"flag":1,"language":"JAVA","opaque":42,
//! "serializeTypeCurrentRPC":"JSON","version":409}`: bean properties in alphabetical order,
//! nulls omitted, compact. We write exactly that shape (rocketmq-rust requires
//! `serializeTypeCurrentRPC`; the C++ client requires every ext value to be a JSON string).
//!
//! Reading is lenient, as real peers differ: Go omits `serializeTypeCurrentRPC` and sends an
//! empty remark; the C++ 2.x client writes some ext values as JSON numbers and ends the header
//! with a newline; fastjson accepts unquoted keys. Unknown properties are ignored.

use bytes::{BufMut, BytesMut};
use serde::Deserialize;
use serde_json::Value;

use super::codes::LanguageCode;
use super::command::{RemotingCommand, SerializeType};
use super::error::CommandDecodeError;
use super::ext_fields::{ExtFields, EXT_FIELDS_MAX};
use super::fastjson;

#[derive(Deserialize)]
struct WireHeader {
    #[serde(default)]
    code: i32,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    version: i32,
    #[serde(default)]
    opaque: i32,
    #[serde(default)]
    flag: i32,
    #[serde(default)]
    remark: Option<String>,
    #[serde(default, rename = "extFields")]
    ext_fields: Option<WireExtFields>,
}

/// `extFields` read straight into `ExtFields`, without an intermediate JSON map (this runs for
/// every request). Values that are not strings (the C++ client's numbers, booleans) become
/// their JSON text; nulls are dropped; the last duplicate wins, as in Java's `HashMap`.
struct WireExtFields(ExtFields);

impl<'de> Deserialize<'de> for WireExtFields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = WireExtFields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an extFields object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut fields = ExtFields::new();
                let mut seen = 0usize;
                while let Some((key, value)) = map.next_entry::<String, ExtText>()? {
                    seen += 1;
                    if seen > EXT_FIELDS_MAX {
                        return Err(serde::de::Error::custom(format!(
                            "more than {EXT_FIELDS_MAX} extFields"
                        )));
                    }
                    if let Some(value) = value.0 {
                        fields.insert(key, value);
                    }
                }
                Ok(WireExtFields(fields))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// One `extFields` value as text (`None` for null).
struct ExtText(Option<String>);

impl<'de> Deserialize<'de> for ExtText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> serde::de::Visitor<'de> for Text {
            type Value = ExtText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an extFields value")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ExtText, E> {
                Ok(ExtText(Some(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<ExtText, E> {
                Ok(ExtText(Some(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ExtText, E> {
                Ok(ExtText(Some(v.to_string())))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ExtText, E> {
                Ok(ExtText(Some(v.to_string())))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ExtText, E> {
                Ok(ExtText(Some(Value::from(v).to_string())))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<ExtText, E> {
                Ok(ExtText(Some(v.to_string())))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<ExtText, E> {
                Ok(ExtText(None))
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<ExtText, E> {
                Ok(ExtText(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<ExtText, A::Error> {
                let value = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
                Ok(ExtText(Some(value.to_string())))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ExtText, A::Error> {
                let value = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(ExtText(Some(value.to_string())))
            }
        }
        deserializer.deserialize_any(Text)
    }
}

/// Appends the JSON header of `command` to `dst`.
pub fn encode(command: &RemotingCommand, dst: &mut BytesMut) {
    dst.put_slice(b"{\"code\":");
    put_int(dst, i64::from(command.code));
    if !command.ext_fields.is_empty() {
        dst.put_slice(b",\"extFields\":{");
        for (i, (key, value)) in command.ext_fields.iter().enumerate() {
            if i > 0 {
                dst.put_u8(b',');
            }
            put_string(dst, key);
            dst.put_u8(b':');
            put_string(dst, value);
        }
        dst.put_u8(b'}');
    }
    dst.put_slice(b",\"flag\":");
    put_int(dst, i64::from(command.flag));
    dst.put_slice(b",\"language\":");
    put_string(dst, command.language.name());
    dst.put_slice(b",\"opaque\":");
    put_int(dst, i64::from(command.opaque));
    if let Some(remark) = &command.remark {
        dst.put_slice(b",\"remark\":");
        put_string(dst, remark);
    }
    dst.put_slice(b",\"serializeTypeCurrentRPC\":\"JSON\",\"version\":");
    put_int(dst, i64::from(command.version));
    dst.put_u8(b'}');
}

/// Parses a JSON header. The returned command has an empty body.
pub fn decode(header: &[u8]) -> Result<RemotingCommand, CommandDecodeError> {
    let wire: WireHeader = match serde_json::from_slice(header) {
        Ok(wire) => wire,
        Err(strict_error) => {
            // fastjson-lenient second chance (bare keys); report the strict error if it fails.
            let text = std::str::from_utf8(header)
                .map_err(|e| CommandDecodeError::Json(format!("header is not UTF-8: {e}")))?;
            let normalized = fastjson::quote_bare_keys(text);
            serde_json::from_str(&normalized)
                .map_err(|_| CommandDecodeError::Json(strict_error.to_string()))?
        }
    };
    let ext_fields = wire.ext_fields.map(|w| w.0).unwrap_or_default();
    Ok(RemotingCommand {
        code: wire.code,
        language: wire
            .language
            .as_deref()
            .map(LanguageCode::from_name)
            .unwrap_or_default(),
        version: wire.version,
        opaque: wire.opaque,
        flag: wire.flag,
        remark: wire.remark,
        ext_fields,
        body: bytes::Bytes::new(),
        serialize_type: SerializeType::Json,
    })
}

fn put_int(dst: &mut BytesMut, value: i64) {
    let mut buffer = itoa_buffer();
    dst.put_slice(format_int(&mut buffer, value));
}

fn itoa_buffer() -> [u8; 20] {
    [0; 20]
}

/// Formats without allocating: this runs for every response header.
fn format_int(buffer: &mut [u8; 20], value: i64) -> &[u8] {
    let negative = value < 0;
    let mut magnitude = value.unsigned_abs();
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if negative {
        at -= 1;
        buffer[at] = b'-';
    }
    &buffer[at..]
}

fn put_string(dst: &mut BytesMut, value: &str) {
    // serde_json escapes quotes, backslashes and control characters (\u0001, \u0002 appear in
    // properties strings) exactly as fastjson does; writing into BytesMut cannot fail.
    serde_json::to_writer(dst.writer(), value).expect("writing JSON into memory cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::request_code;

    fn encoded(command: &RemotingCommand) -> String {
        let mut dst = BytesMut::new();
        encode(command, &mut dst);
        String::from_utf8(dst.to_vec()).unwrap()
    }

    #[test]
    fn response_header_has_the_java_broker_shape() {
        let request = RemotingCommand::bare_request(request_code::SEND_MESSAGE_V2).with_opaque(42);
        let mut response = request.success();
        response.ext_fields.insert("queueId", "1");
        assert_eq!(
            encoded(&response),
            r#"{"code":0,"extFields":{"queueId":"1"},"flag":1,"language":"JAVA","opaque":42,"serializeTypeCurrentRPC":"JSON","version":409}"#
        );
        let error = request.error(17, "no \"topic\"\u{1}");
        assert_eq!(
            encoded(&error),
            r#"{"code":17,"flag":1,"language":"JAVA","opaque":42,"remark":"no \"topic\"\u0001","serializeTypeCurrentRPC":"JSON","version":409}"#
        );
    }

    #[test]
    fn headers_with_more_than_the_field_limit_are_refused() {
        let at_limit: String = (0..EXT_FIELDS_MAX)
            .map(|i| format!("\"k{i}\":\"v\""))
            .collect::<Vec<_>>()
            .join(",");
        let ok = format!(r#"{{"code":10,"extFields":{{{at_limit}}}}}"#);
        assert_eq!(
            decode(ok.as_bytes()).unwrap().ext_fields.len(),
            EXT_FIELDS_MAX
        );
        let over = format!(r#"{{"code":10,"extFields":{{{at_limit},"one":"more"}}}}"#);
        let error = decode(over.as_bytes()).unwrap_err().to_string();
        assert!(error.contains("extFields"), "{error}");
        // 100 000 fields (the header that once held a shard 15 s) are refused quickly.
        let many: String = (0..100_000)
            .map(|i| format!("\"k{i}\":\"v\""))
            .collect::<Vec<_>>()
            .join(",");
        let huge = format!(r#"{{"code":10,"extFields":{{{many}}}}}"#);
        assert!(decode(huge.as_bytes()).is_err());
    }

    #[test]
    fn integers_format_like_java() {
        let mut b = itoa_buffer();
        assert_eq!(format_int(&mut b, 0), b"0");
        assert_eq!(format_int(&mut b, -1), b"-1");
        assert_eq!(format_int(&mut b, i64::MIN), b"-9223372036854775808");
        assert_eq!(format_int(&mut b, 2147483647), b"2147483647");
    }

    #[test]
    fn lenient_reading() {
        // Go: no serializeTypeCurrentRPC, empty remark.
        let go = br#"{"code":34,"language":"GO","version":317,"opaque":3,"flag":0,"remark":"","extFields":{}}"#;
        let c = decode(go).unwrap();
        assert_eq!(
            (c.code, c.language, c.version, c.opaque),
            (34, LanguageCode::Go, 317, 3)
        );
        assert_eq!(c.remark.as_deref(), Some(""));
        // Bare keys, null and numeric ext values, unknown language and properties.
        let odd =
            br#"{code:11,"language":"KLINGON","extFields":{"a":1,"b":true,"c":null},"x":[1]}"#;
        let c = decode(odd).unwrap();
        assert_eq!(c.code, 11);
        assert_eq!(c.language, LanguageCode::Other);
        assert_eq!(c.ext_fields.get("a"), Some("1"));
        assert_eq!(c.ext_fields.get("b"), Some("true"));
        assert_eq!(c.ext_fields.get("c"), None);
        // Floats, nested values and duplicates (the last wins, as in Java's HashMap).
        let more = br#"{"code":1,"extFields":{"f":1.5,"n":{"x":[1,"y"]},"d":"1","d":"2"}}"#;
        let c = decode(more).unwrap();
        assert_eq!(c.ext_fields.get("f"), Some("1.5"));
        assert_eq!(c.ext_fields.get("n"), Some(r#"{"x":[1,"y"]}"#));
        assert_eq!(c.ext_fields.get("d"), Some("2"));
        assert_eq!(c.ext_fields.len(), 3);
        assert!(decode(br#"{"code":1,"extFields":[1]}"#).is_err());
        // Not an object at all.
        assert!(decode(b"[1,2]").is_err());
        assert!(decode(b"\xff\xfe").is_err());
        assert!(decode(b"").is_err());
    }
}
