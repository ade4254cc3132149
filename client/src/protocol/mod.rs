//! The RocketMQ remoting protocol: frames, headers, typed command headers and JSON bodies.
//!
//! Byte layouts are documented once, at the type that encodes them.

pub mod batch;
pub mod binary_header;
pub mod body;
pub mod codes;
pub mod command;
pub mod fastjson;
pub mod frame;
pub mod header;
pub mod json_header;
pub mod message;

pub use codes::{flag, request_code, response_code, LanguageCode};
pub use command::{ExtFields, RemotingCommand, SerializeType};
pub use frame::{decode_frame, encode, encode_head, RawFrame, FRAME_MAX_BYTES_DEFAULT};
pub use header::{CommandHeader, HeaderError};
