//! Binary "ROCKETMQ" header (serialize type 1), used by Java and rocketmq-rust clients started
//! with `rocketmq.serialize.type=ROCKETMQ`.
//!
//! | order | size | field |
//! |---|---|---|
//! | 1 | 2 | code (signed short) |
//! | 2 | 1 | language code |
//! | 3 | 2 | version (short) |
//! | 4 | 4 | opaque |
//! | 5 | 4 | flag |
//! | 6 | 4 + n | remark: int length, UTF-8 bytes; length 0 = null |
//! | 7 | 4 + m | extFields: int byte length m, then entries (u16 key length, key, i32 value length, value) |
//!
//! Java turns zero-length keys and values into null, which is the same as absent; so do we.

use bytes::{Buf, BufMut, BytesMut};

use super::codes::LanguageCode;
use super::command::{RemotingCommand, SerializeType};
use super::error::CommandDecodeError;
use super::ext_fields::{ExtFields, EXT_FIELDS_MAX};

/// Bytes of the fixed part: code 2 + language 1 + version 2 + opaque 4 + flag 4 + two lengths.
pub const FIXED_BYTES: usize = 2 + 1 + 2 + 4 + 4 + 4 + 4;

/// Appends the binary header of `command` to `dst`.
pub fn encode(command: &RemotingCommand, dst: &mut BytesMut) {
    // Codes and versions above i16::MAX cannot be expressed in this layout (reference §3.2);
    // none of the codes Thruster sends is that large.
    debug_assert!(i16::try_from(command.code).is_ok());
    dst.put_i16(command.code as i16);
    dst.put_u8(command.language.code());
    dst.put_i16(command.version as i16);
    dst.put_i32(command.opaque);
    dst.put_i32(command.flag);
    match &command.remark {
        Some(remark) if !remark.is_empty() => {
            dst.put_u32(remark.len() as u32);
            dst.put_slice(remark.as_bytes());
        }
        _ => dst.put_u32(0),
    }
    let length_at = dst.len();
    dst.put_u32(0);
    for (key, value) in command.ext_fields.iter() {
        dst.put_u16(key.len() as u16);
        dst.put_slice(key.as_bytes());
        dst.put_u32(value.len() as u32);
        dst.put_slice(value.as_bytes());
    }
    let ext_bytes = (dst.len() - length_at - 4) as u32;
    dst[length_at..length_at + 4].copy_from_slice(&ext_bytes.to_be_bytes());
}

/// Parses a binary header. The returned command has an empty body.
pub fn decode(mut header: &[u8]) -> Result<RemotingCommand, CommandDecodeError> {
    if header.len() < FIXED_BYTES {
        return Err(malformed(format!(
            "{} bytes, the fixed part alone is {FIXED_BYTES}",
            header.len()
        )));
    }
    let code = i32::from(header.get_i16());
    let language = LanguageCode::from_code(header.get_u8());
    let version = i32::from(header.get_i16());
    let opaque = header.get_i32();
    let flag = header.get_i32();
    let remark_bytes = take_length(&mut header, "remark")?;
    let remark = if remark_bytes == 0 {
        None
    } else {
        Some(take_string(&mut header, remark_bytes, "remark")?)
    };
    let ext_bytes = take_length(&mut header, "extFields")?;
    if ext_bytes > header.len() {
        return Err(malformed(format!(
            "extFields length {ext_bytes} exceeds the {} bytes left",
            header.len()
        )));
    }
    let mut ext = &header[..ext_bytes];
    let mut ext_fields = ExtFields::new();
    let mut seen = 0usize;
    while ext.has_remaining() {
        seen += 1;
        if seen > EXT_FIELDS_MAX {
            return Err(malformed(format!("more than {EXT_FIELDS_MAX} extFields")));
        }
        if ext.len() < 2 {
            return Err(malformed("truncated extFields key length".into()));
        }
        let key_bytes = usize::from(ext.get_u16());
        let key = take_string(&mut ext, key_bytes, "extFields key")?;
        let value_bytes = take_length(&mut ext, "extFields value")?;
        let value = take_string(&mut ext, value_bytes, "extFields value")?;
        if !key.is_empty() && !value.is_empty() {
            ext_fields.insert(key, value);
        }
    }
    Ok(RemotingCommand {
        code,
        language,
        version,
        opaque,
        flag,
        remark,
        ext_fields,
        body: bytes::Bytes::new(),
        serialize_type: SerializeType::RocketMq,
    })
}

fn malformed(what: String) -> CommandDecodeError {
    CommandDecodeError::Binary(what)
}

fn take_length(buf: &mut &[u8], what: &str) -> Result<usize, CommandDecodeError> {
    if buf.len() < 4 {
        return Err(malformed(format!("truncated {what} length")));
    }
    let length = buf.get_i32();
    usize::try_from(length).map_err(|_| malformed(format!("negative {what} length {length}")))
}

fn take_string(buf: &mut &[u8], length: usize, what: &str) -> Result<String, CommandDecodeError> {
    if length > buf.len() {
        return Err(malformed(format!(
            "{what} length {length} exceeds the {} bytes left",
            buf.len()
        )));
    }
    let (bytes, rest) = buf.split_at(length);
    *buf = rest;
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed(format!("{what} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_with_more_than_the_field_limit_are_refused() {
        let mut command = RemotingCommand::bare_request(10);
        for i in 0..EXT_FIELDS_MAX {
            command.ext_fields.insert(format!("k{i}"), "v");
        }
        let mut wire = BytesMut::new();
        encode(&command, &mut wire);
        assert_eq!(decode(&wire).unwrap().ext_fields.len(), EXT_FIELDS_MAX);
        command.ext_fields.insert("one", "more");
        let mut wire = BytesMut::new();
        encode(&command, &mut wire);
        let error = decode(&wire).unwrap_err().to_string();
        assert!(error.contains("extFields"), "{error}");
    }

    #[test]
    fn layout_is_byte_exact() {
        let mut command = RemotingCommand::bare_request(310).with_opaque(7);
        command.language = LanguageCode::Java;
        command.version = 409;
        command.remark = Some("r".into());
        command.ext_fields.insert("a", "pg");
        let mut dst = BytesMut::new();
        encode(&command, &mut dst);
        let expected: &[u8] = &[
            0x01, 0x36, // code 310
            0x00, // JAVA
            0x01, 0x99, // version 409
            0, 0, 0, 7, // opaque
            0, 0, 0, 0, // flag
            0, 0, 0, 1, b'r', // remark
            0, 0, 0, 9, // ext bytes
            0, 1, b'a', 0, 0, 0, 2, b'p', b'g',
        ];
        assert_eq!(&dst[..], expected);
        let mut decoded = decode(&dst).unwrap();
        decoded.serialize_type = SerializeType::RocketMq;
        command.serialize_type = SerializeType::RocketMq;
        assert_eq!(decoded, command);
    }

    #[test]
    fn bad_lengths_are_errors_not_panics() {
        let mut dst = BytesMut::new();
        encode(&RemotingCommand::bare_request(10), &mut dst);
        for cut in 0..dst.len() {
            assert!(decode(&dst[..cut]).is_err(), "cut at {cut}");
        }
        let mut negative = dst.clone();
        negative[13..17].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(decode(&negative).is_err());
    }
}
