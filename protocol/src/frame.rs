//! Frame codec: splitting a byte stream into frames and encoding commands into frames.
//!
//! Frame layout (all integers big-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | `length`: bytes that follow this field = 4 + header length + body length |
//! | 4 | 4 | high byte: serialize type (0 JSON, 1 ROCKETMQ); low 24 bits: header length |
//! | 8 | header length | header (`json_header.rs` or `binary_header.rs`) |
//! | 8 + header length | rest | body |
//!
//! Decoding is in two steps so that a peer can be answered when only its header is bad:
//! [`decode_frame`] finds frame boundaries (an error there means the stream cannot be
//! re-synchronised: close the connection), [`RawFrame::into_command`] parses the header (an error
//! there still has intact boundaries: answer SYSTEM_ERROR and go on or close).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::command::{RemotingCommand, SerializeType};
use super::{binary_header, json_header};

/// Defined in its own module (both header decoders return it); still reachable here.
pub use super::error::CommandDecodeError;

/// RocketMQ's `com.rocketmq.remoting.frameMaxLength` default: 16 MiB, counting the length field.
pub const FRAME_MAX_BYTES_DEFAULT: usize = 16 * 1024 * 1024;

/// Header length is a 24-bit field.
pub const HEADER_MAX_BYTES: usize = 0x00FF_FFFF;

/// Size of the two leading ints.
pub const FRAME_PREFIX_BYTES: usize = 8;

/// The stream is not a sequence of frames; the connection must be closed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {length_bytes} is smaller than the 4-byte header-length field")]
    LengthTooSmall { length_bytes: u32 },
    #[error("frame of {frame_bytes} bytes exceeds the limit of {frame_max_bytes} bytes")]
    TooLarge {
        frame_bytes: u64,
        frame_max_bytes: usize,
    },
    #[error("header length {header_bytes} exceeds the {available_bytes} bytes left in the frame")]
    HeaderTooLong {
        header_bytes: usize,
        available_bytes: usize,
    },
}

/// A command could not be encoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("header of {header_bytes} bytes does not fit the 24-bit header length field")]
    HeaderTooLong { header_bytes: usize },
    #[error("frame of {frame_bytes} bytes does not fit the 32-bit length field")]
    FrameTooLong { frame_bytes: usize },
}

/// One frame, split but not parsed. `header` and `body` share the receive buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub serialize_type_code: u8,
    pub header: Bytes,
    pub body: Bytes,
}

/// Splits the next complete frame off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed. The size limit is checked as soon as the
/// length field is readable, before any buffer is grown for the frame.
pub fn decode_frame(
    buf: &mut BytesMut,
    frame_max_bytes: usize,
) -> Result<Option<RawFrame>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let length_bytes = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let frame_bytes = u64::from(length_bytes) + 4;
    if frame_bytes > frame_max_bytes as u64 {
        return Err(FrameError::TooLarge {
            frame_bytes,
            frame_max_bytes,
        });
    }
    if length_bytes < 4 {
        return Err(FrameError::LengthTooSmall { length_bytes });
    }
    let frame_bytes = frame_bytes as usize;
    if buf.len() < frame_bytes {
        // Reserve what the frame still needs (bounded by the check above), so the reader does
        // not grow the buffer piecemeal.
        buf.reserve(frame_bytes - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(frame_bytes);
    frame.advance(4);
    let type_and_length = frame.get_u32();
    let serialize_type_code = (type_and_length >> 24) as u8;
    let header_bytes = (type_and_length & 0x00FF_FFFF) as usize;
    if header_bytes > frame.len() {
        return Err(FrameError::HeaderTooLong {
            header_bytes,
            available_bytes: frame.len(),
        });
    }
    let header = frame.split_to(header_bytes).freeze();
    Ok(Some(RawFrame {
        serialize_type_code,
        header,
        body: frame.freeze(),
    }))
}

impl RawFrame {
    /// Parses the header; the body is kept as is.
    pub fn into_command(self) -> Result<RemotingCommand, CommandDecodeError> {
        let serialize_type = SerializeType::from_code(self.serialize_type_code).ok_or(
            CommandDecodeError::UnknownSerializeType(self.serialize_type_code),
        )?;
        let mut command = match serialize_type {
            SerializeType::Json => json_header::decode(&self.header)?,
            SerializeType::RocketMq => binary_header::decode(&self.header)?,
        };
        command.body = self.body;
        command.serialize_type = serialize_type;
        Ok(command)
    }
}

/// Encodes the frame prefix and header of `command` for a body of `body_bytes` bytes that the
/// caller writes after it (so a body made of file ranges need not be copied into `dst`).
pub fn encode_head(
    command: &RemotingCommand,
    body_bytes: usize,
    dst: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = dst.len();
    dst.put_u64(0); // placeholder for the two leading ints
    match command.serialize_type {
        SerializeType::Json => json_header::encode(command, dst),
        SerializeType::RocketMq => binary_header::encode(command, dst),
    }
    let header_bytes = dst.len() - start - FRAME_PREFIX_BYTES;
    if header_bytes > HEADER_MAX_BYTES {
        dst.truncate(start);
        return Err(EncodeError::HeaderTooLong { header_bytes });
    }
    let length = 4 + header_bytes + body_bytes;
    let Ok(length) = u32::try_from(length) else {
        dst.truncate(start);
        return Err(EncodeError::FrameTooLong {
            frame_bytes: length + 4,
        });
    };
    let type_and_length = (u32::from(command.serialize_type.code()) << 24) | header_bytes as u32;
    dst[start..start + 4].copy_from_slice(&length.to_be_bytes());
    dst[start + 4..start + 8].copy_from_slice(&type_and_length.to_be_bytes());
    Ok(())
}

/// Encodes `command` with its body into `dst`.
pub fn encode(command: &RemotingCommand, dst: &mut BytesMut) -> Result<(), EncodeError> {
    encode_head(command, command.body.len(), dst)?;
    dst.extend_from_slice(&command.body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::{request_code, LanguageCode};
    use crate::ext_fields::ExtFields;
    use proptest::prelude::*;

    fn sample(serialize_type: SerializeType) -> RemotingCommand {
        let mut ext_fields = ExtFields::new();
        ext_fields.insert("topic", "TopicTest");
        ext_fields.insert("properties", "TAGS\u{1}a\u{2}KEYS\u{1}k \"q\"\u{2}");
        RemotingCommand {
            code: request_code::SEND_MESSAGE_V2,
            language: LanguageCode::Go,
            version: 317,
            opaque: -5,
            flag: 2,
            remark: Some("héllo\n".into()),
            ext_fields,
            body: Bytes::from_static(b"\x00\x01body"),
            serialize_type,
        }
    }

    #[test]
    fn both_serializations_round_trip_through_a_split_stream() {
        for serialize_type in [SerializeType::Json, SerializeType::RocketMq] {
            let command = sample(serialize_type);
            let mut wire = BytesMut::new();
            encode(&command, &mut wire).unwrap();
            encode(&command, &mut wire).unwrap();
            // Feed one byte at a time: no frame may come out before it is complete.
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for byte in wire.iter() {
                buf.put_u8(*byte);
                while let Some(frame) = decode_frame(&mut buf, FRAME_MAX_BYTES_DEFAULT).unwrap() {
                    out.push(frame.into_command().unwrap());
                }
            }
            assert_eq!(out, vec![command.clone(), command]);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn oversized_length_is_refused_before_the_frame_arrives() {
        let mut buf = BytesMut::from(&[0x7F, 0xFF, 0xFF, 0xFF][..]);
        let err = decode_frame(&mut buf, FRAME_MAX_BYTES_DEFAULT).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
        assert!(buf.capacity() < 1024, "no allocation for a refused frame");
        // Exactly at the limit is accepted (needs more bytes).
        let at_limit = (FRAME_MAX_BYTES_DEFAULT - 4) as u32;
        let mut buf = BytesMut::from(&at_limit.to_be_bytes()[..]);
        assert_eq!(decode_frame(&mut buf, FRAME_MAX_BYTES_DEFAULT), Ok(None));
    }

    #[test]
    fn inconsistent_lengths_are_frame_errors() {
        let mut buf = BytesMut::from(&[0, 0, 0, 2, 0, 0][..]);
        assert_eq!(
            decode_frame(&mut buf, 1024),
            Err(FrameError::LengthTooSmall { length_bytes: 2 })
        );
        let mut buf = BytesMut::from(&[0, 0, 0, 6, 0, 0, 0, 9, 1, 2][..]);
        assert_eq!(
            decode_frame(&mut buf, 1024),
            Err(FrameError::HeaderTooLong {
                header_bytes: 9,
                available_bytes: 2
            })
        );
    }

    #[test]
    fn unknown_serialize_type_is_a_header_error() {
        let mut buf = BytesMut::from(&[0, 0, 0, 6, 7, 0, 0, 2, b'{', b'}'][..]);
        let frame = decode_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(
            frame.into_command(),
            Err(CommandDecodeError::UnknownSerializeType(7))
        );
    }

    #[test]
    fn head_counts_a_body_written_separately() {
        let command = sample(SerializeType::Json);
        let mut whole = BytesMut::new();
        encode(&command, &mut whole).unwrap();
        let mut split = BytesMut::new();
        encode_head(&command, command.body.len(), &mut split).unwrap();
        split.extend_from_slice(&command.body);
        assert_eq!(whole, split);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Decoding never panics, whatever the bytes; every frame it yields is within limits.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(frame)) = decode_frame(&mut buf, 256) {
                prop_assert!(frame.header.len() + frame.body.len() + 8 <= 256);
                let _ = frame.into_command();
            }
        }

        /// Valid frame prefixes with arbitrary header bytes: header parsing never panics.
        #[test]
        fn arbitrary_headers_never_panic(
            serialize_type in 0u8..3,
            header in proptest::collection::vec(any::<u8>(), 0..256),
            body in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let mut buf = BytesMut::new();
            buf.put_u32((4 + header.len() + body.len()) as u32);
            buf.put_u32((u32::from(serialize_type) << 24) | header.len() as u32);
            buf.extend_from_slice(&header);
            buf.extend_from_slice(&body);
            let frame = decode_frame(&mut buf, 1024).unwrap().unwrap();
            prop_assert_eq!(&frame.body[..], &body[..]);
            let _ = frame.into_command();
        }
    }
}
