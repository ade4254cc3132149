//! SEND_BATCH_MESSAGE (320) body: client-encoded messages, concatenated.
//!
//! | size | field |
//! |---|---|
//! | 4 | TOTALSIZE of this entry, these 4 bytes included |
//! | 4 | MAGICCODE (client writes 0, ignored) |
//! | 4 | BODYCRC (client writes 0, ignored: the broker computes it) |
//! | 4 | FLAG |
//! | 4 | BODY length |
//! | n | BODY |
//! | 2 | PROPERTIES length (signed short) |
//! | m | PROPERTIES string (each entry has its own `UNIQ_KEY`) |

use bytes::{Buf, BufMut, Bytes};
use thiserror::Error;

/// Fixed bytes of one entry besides body and properties.
const ENTRY_FIXED_BYTES: usize = 4 + 4 + 4 + 4 + 4 + 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEntry {
    pub flag: i32,
    pub body: Bytes,
    pub properties: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed batch entry {index} at byte {at}: {reason}")]
pub struct BatchError {
    pub index: usize,
    pub at: usize,
    pub reason: &'static str,
}

/// Appends one entry.
pub fn encode_entry(entry: &BatchEntry, dst: &mut impl BufMut) {
    let total = ENTRY_FIXED_BYTES + entry.body.len() + entry.properties.len();
    dst.put_i32(total as i32);
    dst.put_i32(0);
    dst.put_i32(0);
    dst.put_i32(entry.flag);
    dst.put_i32(entry.body.len() as i32);
    dst.put_slice(&entry.body);
    dst.put_i16(entry.properties.len() as i16);
    dst.put_slice(entry.properties.as_bytes());
}

/// Splits a batch body into its entries; bodies are views of `body`, not copies. At most
/// `max_entries` are accepted.
pub fn decode_batch(body: &Bytes, max_entries: usize) -> Result<Vec<BatchEntry>, BatchError> {
    let mut entries = Vec::new();
    let mut at = 0usize;
    while at < body.len() {
        let index = entries.len();
        let error = |reason| BatchError { index, at, reason };
        if index >= max_entries {
            return Err(error("too many entries"));
        }
        let mut buf = &body[at..];
        if buf.len() < ENTRY_FIXED_BYTES {
            return Err(error("truncated header"));
        }
        let total = buf.get_i32();
        if total < ENTRY_FIXED_BYTES as i32 || total as usize > body.len() - at {
            return Err(error("total size out of range"));
        }
        buf.advance(8); // magic and CRC: ignored
        let flag = buf.get_i32();
        let body_len = buf.get_i32();
        if body_len < 0 || body_len as usize > total as usize - ENTRY_FIXED_BYTES {
            return Err(error("body length out of range"));
        }
        let body_start = at + 20;
        let entry_body = body.slice(body_start..body_start + body_len as usize);
        let mut rest = &body[body_start + body_len as usize..at + total as usize];
        let props_len = rest.get_i16();
        if props_len < 0 || props_len as usize != rest.len() {
            return Err(error("properties length does not match the total size"));
        }
        let properties = std::str::from_utf8(rest)
            .map_err(|_| error("properties are not UTF-8"))?
            .to_owned();
        entries.push(BatchEntry {
            flag,
            body: entry_body,
            properties,
        });
        at += total as usize;
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn entries_round_trip() {
        let entries = vec![
            BatchEntry {
                flag: 3,
                body: Bytes::from_static(b"hello"),
                properties: "UNIQ_KEY\u{1}A\u{2}".into(),
            },
            BatchEntry {
                flag: 0,
                body: Bytes::new(),
                properties: String::new(),
            },
        ];
        let mut out = Vec::new();
        for e in &entries {
            encode_entry(e, &mut out);
        }
        let decoded = decode_batch(&Bytes::from(out), 16).unwrap();
        assert_eq!(decoded, entries);
    }

    #[test]
    fn limits_and_damage_are_errors() {
        let mut out = Vec::new();
        for _ in 0..3 {
            encode_entry(
                &BatchEntry {
                    flag: 0,
                    body: Bytes::from_static(b"x"),
                    properties: String::new(),
                },
                &mut out,
            );
        }
        let body = Bytes::from(out);
        assert_eq!(decode_batch(&body, 2).unwrap_err().index, 2);
        assert!(decode_batch(&body.slice(..body.len() - 1), 8).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_batch(&Bytes::from(data), 64);
        }
    }
}
