//! Errors shared by the frame codec (`frame.rs`) and the header decoders (`json_header.rs`,
//! `binary_header.rs`), kept apart so that none of them imports another for its error type.

use thiserror::Error;

/// The frame is intact but its header cannot be understood.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CommandDecodeError {
    #[error("unknown header serialize type {0}")]
    UnknownSerializeType(u8),
    #[error("malformed JSON header: {0}")]
    Json(String),
    #[error("malformed binary header: {0}")]
    Binary(String),
}
