//! Stored message records (the CommitLog layout, which is also what pull, query and view
//! responses carry), message properties, and message ids.
//!
//! Record layout (big-endian; IPv4 hosts shown, an IPv6 host is 16 + 4 bytes instead of 4 + 4):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | TOTALSIZE, including itself |
//! | 4 | 4 | MAGICCODE: `0xDAA320A7` (V1, 1-byte topic length); BLANK `0xCBD43194` ends a segment |
//! | 8 | 4 | BODYCRC: CRC32 of BODY & 0x7FFFFFFF |
//! | 12 | 4 | QUEUEID |
//! | 16 | 4 | FLAG |
//! | 20 | 8 | QUEUEOFFSET |
//! | 28 | 8 | PHYSICALOFFSET |
//! | 36 | 4 | SYSFLAG |
//! | 40 | 8 | BORNTIMESTAMP |
//! | 48 | 8 / 20 | BORNHOST: address + 4-byte port |
//! | 56 | 8 | STORETIMESTAMP |
//! | 64 | 8 / 20 | STOREHOSTADDRESS |
//! | 72 | 4 | RECONSUMETIMES |
//! | 76 | 8 | PREPARED TRANSACTION OFFSET |
//! | 84 | 4 | BODY length n |
//! | 88 | n | BODY |
//! | 88+n | 1 | TOPIC length t (V1; read as a signed byte by Java, so t <= 127) |
//! | .. | t | TOPIC |
//! | .. | 2 | PROPERTIES length p (signed short, p <= 32767) |
//! | .. | p | PROPERTIES |
//!
//! TOTALSIZE = 91 + n + t + p for IPv4 hosts and V1. Thruster writes V1 only (topics are
//! limited to 127 bytes), and IPv4 hosts whenever the address is IPv4 (C++ clients assume it).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

use bytes::{Buf, BufMut, Bytes};
use thiserror::Error;

pub const MAGIC_V1: i32 = 0xDAA3_20A7_u32 as i32;
pub const MAGIC_V2: i32 = 0xDAA3_20AB_u32 as i32;
/// End-of-segment filler: TOTALSIZE reaches exactly the end of the file.
pub const MAGIC_BLANK: i32 = 0xCBD4_3194_u32 as i32;
/// Size of a BLANK record as written (TOTALSIZE + MAGICCODE); the rest of the file stays zero.
pub const BLANK_BYTES: usize = 8;
/// Fixed part of a V1 record with IPv4 hosts (without body, topic and properties).
pub const FIXED_BYTES_V4: usize = 91;
/// Topic length limit of the V1 layout.
pub const TOPIC_MAX_BYTES: usize = 127;
/// Properties length limit (signed short).
pub const PROPERTIES_MAX_BYTES: usize = 32767;

/// Message `sysFlag` bits.
pub mod sys_flag {
    pub const COMPRESSED: i32 = 0x1;
    pub const MULTI_TAGS: i32 = 0x2;
    pub const TRANSACTION_NOT_TYPE: i32 = 0x0;
    pub const TRANSACTION_PREPARED: i32 = 0x4;
    pub const TRANSACTION_COMMIT: i32 = 0x8;
    pub const TRANSACTION_ROLLBACK: i32 = 0xC;
    pub const TRANSACTION_MASK: i32 = 0xC;
    pub const BORNHOST_V6: i32 = 0x10;
    pub const STOREHOST_V6: i32 = 0x20;

    pub fn transaction_type(sys_flag: i32) -> i32 {
        sys_flag & TRANSACTION_MASK
    }
}

/// Property names (`MessageConst`).
pub mod property {
    pub const KEYS: &str = "KEYS";
    pub const TAGS: &str = "TAGS";
    pub const WAIT: &str = "WAIT";
    pub const DELAY: &str = "DELAY";
    pub const RETRY_TOPIC: &str = "RETRY_TOPIC";
    pub const REAL_TOPIC: &str = "REAL_TOPIC";
    pub const REAL_QID: &str = "REAL_QID";
    pub const TRANSACTION_PREPARED: &str = "TRAN_MSG";
    pub const PRODUCER_GROUP: &str = "PGROUP";
    pub const MIN_OFFSET: &str = "MIN_OFFSET";
    pub const MAX_OFFSET: &str = "MAX_OFFSET";
    pub const ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";
    pub const RECONSUME_TIME: &str = "RECONSUME_TIME";
    pub const MAX_RECONSUME_TIMES: &str = "MAX_RECONSUME_TIMES";
    pub const UNIQ_CLIENT_MESSAGE_ID_KEYIDX: &str = "UNIQ_KEY";
    pub const TRANSACTION_ID: &str = "__transactionId__";
    pub const TRANSACTION_CHECK_TIMES: &str = "TRANSACTION_CHECK_TIMES";
    pub const CHECK_IMMUNITY_TIME_IN_SECONDS: &str = "CHECK_IMMUNITY_TIME_IN_SECONDS";
    pub const TRANSACTION_PREPARED_QUEUE_OFFSET: &str = "TRAN_PREPARED_QUEUE_OFFSET";
    pub const CORRELATION_ID: &str = "CORRELATION_ID";
    pub const MESSAGE_REPLY_TO_CLIENT: &str = "REPLY_TO_CLIENT";
    pub const MESSAGE_TTL: &str = "TTL";
    pub const REPLY_MESSAGE_ARRIVE_TIME: &str = "ARRIVE_TIME";
    pub const PUSH_REPLY_TIME: &str = "PUSH_REPLY_TIME";
    pub const MESSAGE_TYPE: &str = "MSG_TYPE";
    pub const TIMER_DELIVER_MS: &str = "TIMER_DELIVER_MS";
    pub const TIMER_DELAY_SEC: &str = "TIMER_DELAY_SEC";
    pub const TIMER_DELAY_MS: &str = "TIMER_DELAY_MS";
    pub const CLUSTER: &str = "CLUSTER";
    pub const MSG_REGION: &str = "MSG_REGION";
    pub const TRACE_SWITCH: &str = "TRACE_ON";
}

pub const NAME_VALUE_SEPARATOR: char = '\u{1}';
pub const PROPERTY_SEPARATOR: char = '\u{2}';

/// Parses a properties string: pairs split on `\u{2}`, then on the first `\u{1}`; pieces with
/// an empty name or value are skipped; later duplicates win (Java `string2messageProperties`).
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for pair in text.split(PROPERTY_SEPARATOR) {
        if let Some((name, value)) = pair.split_once(NAME_VALUE_SEPARATOR) {
            if !name.is_empty() && !value.is_empty() {
                map.insert(name.to_owned(), value.to_owned());
            }
        }
    }
    map
}

/// Looks one property up without building a map (the hot path needs only TAGS and KEYS).
pub fn find_property<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    property_pairs(text)
        .filter(|(n, value)| *n == name && !value.is_empty())
        .last() // the last duplicate wins
        .map(|(_, value)| value)
}

/// The (name, value) pairs of a properties string, in order (for one pass over all of them).
pub fn property_pairs(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split(PROPERTY_SEPARATOR)
        .filter_map(|pair| pair.split_once(NAME_VALUE_SEPARATOR))
}

/// Builds a properties string, with the separator after every pair as Java writes it.
pub fn encode_properties<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        out.push_str(name);
        out.push(NAME_VALUE_SEPARATOR);
        out.push_str(value);
        out.push(PROPERTY_SEPARATOR);
    }
    out
}

/// Java `String.hashCode()`: over UTF-16 code units with wrapping arithmetic. Tag codes in
/// ConsumeQueue entries and IndexFile key hashes are this value.
pub fn java_string_hash(text: &str) -> i32 {
    let step = |h: i32, unit: i32| h.wrapping_mul(31).wrapping_add(unit);
    // ASCII (tags, keys, ids: the common case) is one UTF-16 unit per byte; the store hashes
    // a key or two per message, and the byte loop is several times cheaper than encode_utf16.
    if text.is_ascii() {
        // Four bytes a step: h*31^4 + b0*31^3 + b1*31^2 + b2*31 + b3 is the same sum under
        // wrapping arithmetic, with a quarter of the dependent multiplies (index keys of 40+
        // bytes made this hash 4 % of the store bench).
        let mut quads = text.as_bytes().chunks_exact(4);
        let mut h = 0i32;
        for q in &mut quads {
            let [b0, b1, b2, b3] = [q[0], q[1], q[2], q[3]].map(i32::from);
            h = h
                .wrapping_mul(31 * 31 * 31 * 31)
                .wrapping_add(b0.wrapping_mul(31 * 31 * 31))
                .wrapping_add(b1 * (31 * 31))
                .wrapping_add(b2 * 31)
                .wrapping_add(b3);
        }
        return quads
            .remainder()
            .iter()
            .fold(h, |h, &b| step(h, i32::from(b)));
    }
    text.encode_utf16()
        .fold(0, |h, unit| step(h, i32::from(unit)))
}

/// The ConsumeQueue tag code of a TAGS value (a message without tags has code 0), which
/// subscriptions match by the same code.
pub fn tag_code(tags: &str) -> i64 {
    i64::from(java_string_hash(tags))
}

/// BODYCRC: CRC32 (IEEE) & 0x7FFFFFFF.
pub fn body_crc(body: &[u8]) -> i32 {
    (crc32fast::hash(body) & 0x7FFF_FFFF) as i32
}

/// Converts an IPv4-mapped IPv6 address to IPv4 (C++ clients can only decode IPv4 hosts).
pub fn canonical_host(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

fn host_bytes(addr: &SocketAddr) -> usize {
    if addr.is_ipv4() {
        8
    } else {
        20
    }
}

fn put_host(dst: &mut impl BufMut, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => dst.put_slice(&ip.octets()),
        IpAddr::V6(ip) => dst.put_slice(&ip.octets()),
    }
    dst.put_i32(i32::from(addr.port()));
}

/// A record to be written, borrowing its variable parts. The store fills in QUEUEOFFSET,
/// PHYSICALOFFSET and STORETIMESTAMP at append time.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub queue_id: i32,
    pub flag: i32,
    pub queue_offset: i64,
    pub physical_offset: i64,
    /// As sent by the producer; the host bits are recomputed from the addresses.
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub born_host: SocketAddr,
    pub store_timestamp: i64,
    pub store_host: SocketAddr,
    pub reconsume_times: i32,
    pub prepared_transaction_offset: i64,
    pub body: &'a [u8],
    pub topic: &'a str,
    pub properties: &'a str,
}

/// A record that cannot be written.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RecordLimitError {
    #[error("topic of {0} bytes exceeds {TOPIC_MAX_BYTES}")]
    TopicTooLong(usize),
    #[error("properties of {0} bytes exceed the 32KB limit")]
    PropertiesTooLong(usize),
    /// A stored record never holds a NUL in its topic or properties: recovery reads one as the
    /// zeros of a write that never landed (see [`DecodedRecord::looks_torn`]).
    #[error("the {0} contains a NUL character")]
    NulCharacter(&'static str),
}

impl RecordRef<'_> {
    /// Checks the limits of the V1 layout.
    pub fn check_limits(&self) -> Result<(), RecordLimitError> {
        if self.topic.len() > TOPIC_MAX_BYTES || self.topic.is_empty() {
            return Err(RecordLimitError::TopicTooLong(self.topic.len()));
        }
        if self.properties.len() > PROPERTIES_MAX_BYTES {
            return Err(RecordLimitError::PropertiesTooLong(self.properties.len()));
        }
        if self.topic.contains('\0') {
            return Err(RecordLimitError::NulCharacter("topic"));
        }
        if self.properties.contains('\0') {
            return Err(RecordLimitError::NulCharacter("properties"));
        }
        Ok(())
    }

    /// TOTALSIZE of this record.
    pub fn encoded_len(&self) -> usize {
        FIXED_BYTES_V4 - 16
            + host_bytes(&self.born_host)
            + host_bytes(&self.store_host)
            + self.body.len()
            + self.topic.len()
            + self.properties.len()
    }

    fn effective_sys_flag(&self) -> i32 {
        let mut flag = self.sys_flag & !(sys_flag::BORNHOST_V6 | sys_flag::STOREHOST_V6);
        if self.born_host.is_ipv6() {
            flag |= sys_flag::BORNHOST_V6;
        }
        if self.store_host.is_ipv6() {
            flag |= sys_flag::STOREHOST_V6;
        }
        flag
    }

    /// Writes the record. `body_crc` is passed in so callers can compute it once (and outside
    /// any critical section). Limits must have been checked.
    pub fn encode(&self, body_crc: i32, dst: &mut impl BufMut) {
        debug_assert!(self.check_limits().is_ok());
        debug_assert_eq!(body_crc, self::body_crc(self.body));
        dst.put_i32(self.encoded_len() as i32);
        dst.put_i32(MAGIC_V1);
        dst.put_i32(body_crc);
        dst.put_i32(self.queue_id);
        dst.put_i32(self.flag);
        dst.put_i64(self.queue_offset);
        dst.put_i64(self.physical_offset);
        dst.put_i32(self.effective_sys_flag());
        dst.put_i64(self.born_timestamp);
        put_host(dst, &self.born_host);
        dst.put_i64(self.store_timestamp);
        put_host(dst, &self.store_host);
        dst.put_i32(self.reconsume_times);
        dst.put_i64(self.prepared_transaction_offset);
        dst.put_i32(self.body.len() as i32);
        dst.put_slice(self.body);
        dst.put_u8(self.topic.len() as u8);
        dst.put_slice(self.topic.as_bytes());
        dst.put_i16(self.properties.len() as i16);
        dst.put_slice(self.properties.as_bytes());
    }
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("bad magic code {0:#010x}")]
    BadMagic(u32),
    #[error("TOTALSIZE {total} disagrees with the computed size {computed}")]
    SizeMismatch { total: usize, computed: usize },
    #[error("body CRC {stored:#x} does not match the computed {computed:#x}")]
    CrcMismatch { stored: i32, computed: i32 },
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("negative length")]
    NegativeLength,
}

/// A decoded record; variable parts share the input buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    pub total_size: usize,
    pub magic: i32,
    pub body_crc: i32,
    pub queue_id: i32,
    pub flag: i32,
    pub queue_offset: i64,
    pub physical_offset: i64,
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub born_host: SocketAddr,
    pub store_timestamp: i64,
    pub store_host: SocketAddr,
    pub reconsume_times: i32,
    pub prepared_transaction_offset: i64,
    pub body: Bytes,
    pub topic: String,
    pub properties: String,
}

/// What the first 8 bytes at a position say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordStart {
    Message { total_size: usize },
    Blank { total_size: usize },
}

/// Reads TOTALSIZE and MAGICCODE at the start of `bytes`.
pub fn peek_record(bytes: &[u8]) -> Result<RecordStart, RecordError> {
    if bytes.len() < 8 {
        return Err(RecordError::Truncated {
            needed: 8,
            available: bytes.len(),
        });
    }
    let total = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let magic = i32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let total_size = usize::try_from(total).map_err(|_| RecordError::NegativeLength)?;
    match magic {
        MAGIC_V1 | MAGIC_V2 => Ok(RecordStart::Message { total_size }),
        MAGIC_BLANK => Ok(RecordStart::Blank { total_size }),
        other => Err(RecordError::BadMagic(other as u32)),
    }
}

fn take_host(buf: &mut &[u8], v6: bool) -> SocketAddr {
    let ip = if v6 {
        let mut octets = [0u8; 16];
        buf.copy_to_slice(&mut octets);
        IpAddr::V6(Ipv6Addr::from(octets))
    } else {
        let mut octets = [0u8; 4];
        buf.copy_to_slice(&mut octets);
        IpAddr::V4(Ipv4Addr::from(octets))
    };
    SocketAddr::new(ip, buf.get_i32() as u16)
}

/// A validated record read in place: the fixed fields decoded, the body, topic and
/// properties left where they are in the shared buffer (no copy, no allocation; a consumer
/// that needs only some of them pays for those). [`decode_record`] is this plus owned strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView {
    pub magic: i32,
    pub body_crc: i32,
    pub queue_id: i32,
    pub flag: i32,
    pub queue_offset: i64,
    pub physical_offset: i64,
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub born_host: SocketAddr,
    pub store_timestamp: i64,
    pub store_host: SocketAddr,
    pub reconsume_times: i32,
    pub prepared_transaction_offset: i64,
    /// The whole record (TOTALSIZE bytes).
    record: Bytes,
    body: Range<usize>,
    topic: Range<usize>,
    properties: Range<usize>,
}

impl RecordView {
    /// Decodes and validates the record at the start of `bytes` (which may hold more after
    /// it). Checks magic, the length arithmetic, that topic and properties are UTF-8 and, if
    /// `check_crc`, the body CRC; never panics.
    pub fn decode(bytes: &Bytes, check_crc: bool) -> Result<RecordView, RecordError> {
        let RecordStart::Message { total_size } = peek_record(bytes)? else {
            return Err(RecordError::BadMagic(MAGIC_BLANK as u32));
        };
        if total_size > bytes.len() {
            return Err(RecordError::Truncated {
                needed: total_size,
                available: bytes.len(),
            });
        }
        let record = &bytes[..total_size];
        let short = |needed: usize| RecordError::Truncated {
            needed,
            available: total_size,
        };
        if total_size < 48 {
            return Err(short(48));
        }
        let mut buf = &record[4..];
        let magic = buf.get_i32();
        let body_crc = buf.get_i32();
        let queue_id = buf.get_i32();
        let flag = buf.get_i32();
        let queue_offset = buf.get_i64();
        let physical_offset = buf.get_i64();
        let sys_flag = buf.get_i32();
        let born_timestamp = buf.get_i64();
        let born_v6 = sys_flag & sys_flag::BORNHOST_V6 != 0;
        let store_v6 = sys_flag & sys_flag::STOREHOST_V6 != 0;
        let hosts = if born_v6 { 20 } else { 8 } + if store_v6 { 20 } else { 8 };
        // Fixed fields after BORNTIMESTAMP: hosts + store ts 8 + reconsume 4 + prepared 8 + body len 4.
        let fixed_rest = hosts + 8 + 4 + 8 + 4;
        if buf.len() < fixed_rest {
            return Err(short(48 + fixed_rest));
        }
        let born_host = take_host(&mut buf, born_v6);
        let store_timestamp = buf.get_i64();
        let store_host = take_host(&mut buf, store_v6);
        let reconsume_times = buf.get_i32();
        let prepared_transaction_offset = buf.get_i64();
        let body_len = usize::try_from(buf.get_i32()).map_err(|_| RecordError::NegativeLength)?;
        let topic_len_bytes = if magic == MAGIC_V2 { 2 } else { 1 };
        if buf.len() < body_len + topic_len_bytes {
            return Err(short(total_size - buf.len() + body_len + topic_len_bytes));
        }
        let body_start = total_size - buf.len();
        buf.advance(body_len);
        let topic_len = if magic == MAGIC_V2 {
            usize::from(buf.get_u16())
        } else {
            usize::from(buf.get_u8())
        };
        if buf.len() < topic_len + 2 {
            return Err(short(total_size - buf.len() + topic_len + 2));
        }
        let topic_start = total_size - buf.len();
        std::str::from_utf8(&buf[..topic_len]).map_err(|_| RecordError::NotUtf8("topic"))?;
        buf.advance(topic_len);
        let properties_len =
            usize::try_from(buf.get_i16()).map_err(|_| RecordError::NegativeLength)?;
        if buf.len() < properties_len {
            return Err(short(total_size - buf.len() + properties_len));
        }
        let properties_start = total_size - buf.len();
        std::str::from_utf8(&buf[..properties_len])
            .map_err(|_| RecordError::NotUtf8("properties"))?;
        buf.advance(properties_len);
        if !buf.is_empty() {
            return Err(RecordError::SizeMismatch {
                total: total_size,
                computed: total_size - buf.len(),
            });
        }
        let body = body_start..body_start + body_len;
        if check_crc {
            let computed = self::body_crc(&record[body.clone()]);
            if computed != body_crc {
                return Err(RecordError::CrcMismatch {
                    stored: body_crc,
                    computed,
                });
            }
        }
        Ok(RecordView {
            magic,
            body_crc,
            queue_id,
            flag,
            queue_offset,
            physical_offset,
            sys_flag,
            born_timestamp,
            born_host,
            store_timestamp,
            store_host,
            reconsume_times,
            prepared_transaction_offset,
            record: bytes.slice(..total_size),
            body,
            topic: topic_start..topic_start + topic_len,
            properties: properties_start..properties_start + properties_len,
        })
    }

    /// TOTALSIZE.
    pub fn total_size(&self) -> usize {
        self.record.len()
    }

    /// The body, sharing the record's buffer.
    pub fn body(&self) -> Bytes {
        self.record.slice(self.body.clone())
    }

    pub fn body_bytes(&self) -> usize {
        self.body.len()
    }

    pub fn topic(&self) -> &str {
        self.text(&self.topic)
    }

    /// The properties string (see [`find_property`] and [`parse_properties`]).
    pub fn properties(&self) -> &str {
        self.text(&self.properties)
    }

    /// Checked UTF-8 when decoded, so the check here cannot fail (it is kept instead of an
    /// unchecked conversion; for ASCII it is a few nanoseconds).
    fn text(&self, range: &Range<usize>) -> &str {
        std::str::from_utf8(&self.record[range.clone()]).unwrap_or_default()
    }

    /// The record with owned topic and properties.
    pub fn to_decoded(&self) -> DecodedRecord {
        DecodedRecord {
            total_size: self.total_size(),
            magic: self.magic,
            body_crc: self.body_crc,
            queue_id: self.queue_id,
            flag: self.flag,
            queue_offset: self.queue_offset,
            physical_offset: self.physical_offset,
            sys_flag: self.sys_flag,
            born_timestamp: self.born_timestamp,
            born_host: self.born_host,
            store_timestamp: self.store_timestamp,
            store_host: self.store_host,
            reconsume_times: self.reconsume_times,
            prepared_transaction_offset: self.prepared_transaction_offset,
            body: self.body(),
            topic: self.topic().to_owned(),
            properties: self.properties().to_owned(),
        }
    }
}

/// Decodes and validates the record at the start of `bytes` (which may hold more after it),
/// with owned topic and properties: [`RecordView::decode`] then [`RecordView::to_decoded`].
pub fn decode_record(bytes: &Bytes, check_crc: bool) -> Result<DecodedRecord, RecordError> {
    RecordView::decode(bytes, check_crc).map(|view| view.to_decoded())
}

impl DecodedRecord {
    /// Whether this record looks like one whose end never reached the disk: files read zeros
    /// where a write did not land, and a record whose first part landed can still pass the
    /// size, position and body-CRC checks (the CRC covers the body only) with zeros for its
    /// topic or properties. `RecordRef::check_limits` keeps stored records free of NULs there,
    /// so zeros in either mean a torn record. (Found by the store's model test: a record split
    /// across two chunk writes, only the first written before a crash.)
    pub fn looks_torn(&self) -> bool {
        self.topic.is_empty() || self.topic.contains('\0') || self.properties.contains('\0')
    }
}

/// Decodes every record of a pull/query body (records back to back).
pub fn decode_records(body: &Bytes, check_crc: bool) -> Result<Vec<DecodedRecord>, RecordError> {
    record_views(body, check_crc)
        .map(|view| view.map(|view| view.to_decoded()))
        .collect()
}

/// The records of a pull/query body (records back to back), each read in place; stops after
/// the first error.
pub fn record_views(
    body: &Bytes,
    check_crc: bool,
) -> impl Iterator<Item = Result<RecordView, RecordError>> + '_ {
    let mut at = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at >= body.len() {
            return None;
        }
        let view = RecordView::decode(&body.slice(at..), check_crc);
        match &view {
            Ok(view) => at += view.total_size(),
            Err(_) => failed = true,
        }
        Some(view)
    })
}

/// offsetMsgId: store host address + port (4 bytes) + commitlog offset (8 bytes), uppercase hex.
pub fn offset_msg_id(store_host: SocketAddr, physical_offset: i64) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut raw = [0u8; 28];
    let mut dst = &mut raw[..];
    put_host(&mut dst, &store_host);
    dst.put_i64(physical_offset);
    let unused = dst.len();
    let raw_len = raw.len() - unused;
    let mut out = String::with_capacity(raw_len * 2);
    for byte in &raw[..raw_len] {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xF)]));
    }
    out
}

/// Decodes an offsetMsgId into (store host, commitlog offset). 32 hex chars = IPv4, 56 = IPv6.
pub fn decode_offset_msg_id(id: &str) -> Option<(SocketAddr, i64)> {
    if !(id.len() == 32 || id.len() == 56) || !id.is_ascii() {
        return None;
    }
    let raw: Option<Vec<u8>> = (0..id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&id[i..i + 2], 16).ok())
        .collect();
    let raw = raw?;
    let mut buf = &raw[..];
    let host = take_host(&mut buf, raw.len() == 28);
    Some((host, buf.get_i64()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample<'a>(body: &'a [u8], topic: &'a str, properties: &'a str, v6: bool) -> RecordRef<'a> {
        let born: SocketAddr = if v6 {
            "[::1]:5555".parse().unwrap()
        } else {
            "10.0.0.9:5555".parse().unwrap()
        };
        RecordRef {
            queue_id: 3,
            flag: 7,
            queue_offset: 42,
            physical_offset: 1 << 40,
            sys_flag: sys_flag::COMPRESSED,
            born_timestamp: 1_700_000_000_000,
            born_host: born,
            store_timestamp: 1_700_000_000_500,
            store_host: "127.0.0.1:10911".parse().unwrap(),
            reconsume_times: 2,
            prepared_transaction_offset: 0,
            body,
            topic,
            properties,
        }
    }

    fn encoded(record: &RecordRef) -> Bytes {
        let mut out = Vec::new();
        record.encode(body_crc(record.body), &mut out);
        assert_eq!(out.len(), record.encoded_len());
        Bytes::from(out)
    }

    #[test]
    fn fixed_positions_match_the_reference_layout() {
        let props = encode_properties([("TAGS", "TagA"), ("UNIQ_KEY", "ABC")]);
        let record = sample(b"hello", "TopicTest", &props, false);
        let bytes = encoded(&record);
        assert_eq!(bytes.len(), 91 + 5 + 9 + props.len());
        assert_eq!(&bytes[4..8], &MAGIC_V1.to_be_bytes());
        assert_eq!(&bytes[20..28], &42i64.to_be_bytes());
        assert_eq!(&bytes[28..36], &(1i64 << 40).to_be_bytes());
        assert_eq!(&bytes[48..52], &[10, 0, 0, 9]);
        assert_eq!(&bytes[64..68], &[127, 0, 0, 1]);
        assert_eq!(&bytes[84..88], &5i32.to_be_bytes());
        assert_eq!(&bytes[88..93], b"hello");
        assert_eq!(bytes[93], 9);
    }

    #[test]
    fn round_trip_ipv4_and_ipv6() {
        for v6 in [false, true] {
            let record = sample(b"body", "T", "KEYS\u{1}a b\u{2}", v6);
            let decoded = decode_record(&encoded(&record), true).unwrap();
            assert_eq!(decoded.born_host, record.born_host);
            assert_eq!(decoded.sys_flag & sys_flag::BORNHOST_V6 != 0, v6);
            assert_eq!(
                decoded.sys_flag & sys_flag::COMPRESSED,
                sys_flag::COMPRESSED
            );
            assert_eq!(
                (decoded.queue_offset, decoded.physical_offset),
                (42, 1 << 40)
            );
            assert_eq!(&decoded.body[..], b"body");
            assert_eq!(decoded.topic, "T");
            assert_eq!(decoded.properties, "KEYS\u{1}a b\u{2}");
        }
    }

    #[test]
    fn corruption_is_detected() {
        let bytes = encoded(&sample(b"payload", "T", "", false));
        let mut flipped = bytes.to_vec();
        flipped[90] ^= 1; // inside the body
        assert!(matches!(
            decode_record(&Bytes::from(flipped.clone()), true),
            Err(RecordError::CrcMismatch { .. })
        ));
        assert!(decode_record(&Bytes::from(flipped), false).is_ok());
        for cut in 0..bytes.len() {
            assert!(decode_record(&bytes.slice(..cut), true).is_err());
        }
        let mut bad_magic = bytes.to_vec();
        bad_magic[5] = 0;
        assert!(matches!(
            decode_record(&Bytes::from(bad_magic), true),
            Err(RecordError::BadMagic(_))
        ));
        let mut bad_size = bytes.to_vec();
        bad_size[3] -= 1;
        assert!(decode_record(&Bytes::from(bad_size), true).is_err());
    }

    /// A pull body of several records (IPv4 and IPv6 hosts, a compressed-flag body, a batch's
    /// records back to back) read in place gives exactly the eager decode's records.
    #[test]
    fn views_give_the_eager_records() {
        let props = encode_properties([("TAGS", "TagA"), ("UNIQ_KEY", "ABC")]);
        let mut body = Vec::new();
        for (i, v6) in [false, true, false, false].into_iter().enumerate() {
            let payload = vec![i as u8; 10 + i * 100];
            let record = RecordRef {
                queue_offset: 42 + i as i64,
                ..sample(&payload, "TopicTest", &props, v6)
            };
            body.extend_from_slice(&encoded(&record));
        }
        let body = Bytes::from(body);
        let eager = decode_records(&body, true).unwrap();
        let payloads: Vec<Vec<u8>> = (0..4).map(|i| vec![i as u8; 10 + i * 100]).collect();
        let views: Vec<RecordView> = record_views(&body, true).collect::<Result<_, _>>().unwrap();
        assert_eq!(views.len(), 4);
        for ((view, record), payload) in views.iter().zip(&eager).zip(&payloads) {
            assert_eq!(&view.to_decoded(), record);
            assert_eq!(view.body(), payload[..]);
            assert_eq!(
                view.born_host.is_ipv6(),
                view.sys_flag & sys_flag::BORNHOST_V6 != 0
            );
            assert_eq!(view.topic(), "TopicTest");
            assert_eq!(view.properties(), props);
            assert_eq!(view.body(), record.body);
            assert_eq!(view.body_bytes(), record.body.len());
            assert_eq!(view.total_size(), record.total_size);
        }
        assert_eq!(
            views.iter().map(|v| v.queue_offset).collect::<Vec<_>>(),
            [42, 43, 44, 45]
        );
        // A corrupt body in the third record (IPv4 hosts: the body starts at 88): the views
        // stop there with the eager decode's error.
        let mut corrupt = body.to_vec();
        corrupt[eager[0].total_size + eager[1].total_size + 90] ^= 1;
        let corrupt = Bytes::from(corrupt);
        let views: Vec<_> = record_views(&corrupt, true).collect();
        assert_eq!(views.len(), 3);
        assert!(views[0].is_ok() && views[1].is_ok());
        let error = views[2].clone().unwrap_err();
        assert!(matches!(error, RecordError::CrcMismatch { .. }), "{error}");
        assert_eq!(error, decode_records(&corrupt, true).unwrap_err());
    }

    #[test]
    fn properties_and_hashes_follow_java() {
        let text = "TAGS\u{1}TagA\u{2}KEYS\u{1}k1 k2\u{2}x\u{1}\u{2}\u{1}y\u{2}TAGS\u{1}TagB\u{2}";
        let map = parse_properties(text);
        assert_eq!(map.get("TAGS").map(String::as_str), Some("TagB"));
        assert_eq!(map.len(), 2);
        assert_eq!(find_property(text, "TAGS"), Some("TagB"));
        assert_eq!(find_property(text, "x"), None);
        // Known Java values.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("TagA"), 2598919);
        assert_eq!(java_string_hash("hello"), 99162322);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        // Non-ASCII goes by UTF-16 units: "é" is one unit (0xE9), "😀" two (a surrogate pair).
        assert_eq!(java_string_hash("é"), 0xE9);
        assert_eq!(java_string_hash("a😀"), (97 * 31 + 0xD83D) * 31 + 0xDE00);
        assert_eq!(java_string_hash("é"), 233);
        let tags_code = |text| find_property(text, property::TAGS).map_or(0, tag_code);
        assert_eq!(tags_code(text), i64::from(java_string_hash("TagB")));
        assert_eq!(tags_code(""), 0);
    }

    #[test]
    fn offset_msg_ids() {
        let id = offset_msg_id("127.0.0.1:10911".parse().unwrap(), 0x1234);
        assert_eq!(id, "7F00000100002A9F0000000000001234");
        assert_eq!(
            decode_offset_msg_id(&id),
            Some(("127.0.0.1:10911".parse().unwrap(), 0x1234))
        );
        let v6 = offset_msg_id("[::1]:10911".parse().unwrap(), 7);
        assert_eq!(
            v6,
            "0000000000000000000000000000000100002A9F0000000000000007"
        );
        assert_eq!(decode_offset_msg_id(&v6).unwrap().1, 7);
        assert_eq!(decode_offset_msg_id("XYZ"), None);
        assert_eq!(
            canonical_host("[::ffff:10.1.2.3]:9".parse().unwrap()),
            "10.1.2.3:9".parse().unwrap()
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_record(&Bytes::from(data.clone()), true);
            let _ = decode_records(&Bytes::from(data), false);
        }

        #[test]
        fn java_string_hash_of_ascii_is_the_one_unit_at_a_time_hash(text in "[ -~]{0,64}") {
            let expected = text
                .encode_utf16()
                .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(i32::from(unit)));
            prop_assert_eq!(java_string_hash(&text), expected);
        }

        #[test]
        fn encode_decode_round_trip(body in proptest::collection::vec(any::<u8>(), 0..200), topic in "[A-Za-z0-9_%-]{1,127}", props in "[a-z\u{1}\u{2}]{0,64}") {
            let record = sample(&body, &topic, &props, false);
            let decoded = decode_record(&encoded(&record), true).unwrap();
            prop_assert_eq!(&decoded.body[..], &body[..]);
            prop_assert_eq!(decoded.topic, topic);
            prop_assert_eq!(decoded.properties, props);
        }
    }
}
