//! The RocketMQ remoting protocol: frames, headers, typed command headers and JSON bodies, the
//! stored-record layout, subscription expressions and shard ownership.
//!
//! Byte layouts are documented once, at the type that encodes them. This crate depends on no
//! runtime and on nothing of the broker or the client; both of them depend on it.

pub mod acl;
pub mod batch;
pub mod binary_header;
pub mod body;
pub mod codes;
pub mod command;
pub mod error;
pub mod expression;
pub mod ext_fields;
pub mod fastjson;
pub mod frame;
pub mod header;
pub mod json_header;
pub mod message;
pub mod shard;
#[cfg(test)]
mod test_support;

pub use codes::{flag, request_code, response_code, LanguageCode};
pub use command::{RemotingCommand, SerializeType};
pub use ext_fields::ExtFields;
pub use frame::{decode_frame, encode, encode_head, RawFrame, FRAME_MAX_BYTES_DEFAULT};
pub use header::{CommandHeader, HeaderError};
