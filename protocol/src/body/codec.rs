//! Reading and writing JSON bodies: [`decode_lenient`] and [`encode`], for every body type.

use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::fastjson;

/// A body could not be read.
#[derive(Debug, Error)]
#[error("malformed {what} body: {reason}")]
pub struct BodyError {
    pub what: &'static str,
    pub reason: String,
}

/// Parses a JSON body the way fastjson would accept it.
pub fn decode_lenient<T: DeserializeOwned>(
    what: &'static str,
    body: &[u8],
) -> Result<T, BodyError> {
    let text = std::str::from_utf8(body).map_err(|e| BodyError {
        what,
        reason: format!("not UTF-8: {e}"),
    })?;
    serde_json::from_str(&fastjson::quote_bare_keys(text)).map_err(|e| BodyError {
        what,
        reason: e.to_string(),
    })
}

/// Serializes a body compactly.
pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("bodies are plain data and always serialize")
}
