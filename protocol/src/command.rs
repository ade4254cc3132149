//! [`RemotingCommand`]: one request or response of the remoting protocol, independent of how its
//! header is serialized on the wire (see `frame.rs`, `json_header.rs`, `binary_header.rs`).

use bytes::Bytes;

use super::codes::{flag, response_code, version, LanguageCode};
use super::header::{CommandHeader, HeaderError};

/// Defined in its own module (headers encode into it); still reachable here.
pub use super::ext_fields::ExtFields;

/// How a header is serialized: the high byte of the frame's second int.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SerializeType {
    /// Type 0: fastjson-shaped JSON text.
    #[default]
    Json,
    /// Type 1: the compact "ROCKETMQ" binary layout.
    RocketMq,
}

impl SerializeType {
    pub fn code(self) -> u8 {
        match self {
            SerializeType::Json => 0,
            SerializeType::RocketMq => 1,
        }
    }

    pub fn from_code(code: u8) -> Option<SerializeType> {
        match code {
            0 => Some(SerializeType::Json),
            1 => Some(SerializeType::RocketMq),
            _ => None,
        }
    }
}

/// One remoting frame, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct RemotingCommand {
    /// Request code for requests, response code for responses.
    pub code: i32,
    pub language: LanguageCode,
    /// Sender's `MQVersion` ordinal.
    pub version: i32,
    /// Request id, echoed in the response.
    pub opaque: i32,
    /// [`flag::RESPONSE`] | [`flag::ONEWAY`].
    pub flag: i32,
    pub remark: Option<String>,
    /// Typed header fields; written as `extFields` (omitted when empty).
    pub ext_fields: ExtFields,
    pub body: Bytes,
    /// How the header was (decoding) or will be (encoding) serialized.
    pub serialize_type: SerializeType,
}

impl RemotingCommand {
    /// A request carrying `header` (encoded into `extFields`).
    pub fn request(code: i32, header: &impl CommandHeader) -> RemotingCommand {
        let mut ext_fields = ExtFields::new();
        header.encode(&mut ext_fields);
        RemotingCommand {
            code,
            language: LanguageCode::Rust,
            version: version::CURRENT,
            opaque: 0,
            flag: 0,
            remark: None,
            ext_fields,
            body: Bytes::new(),
            serialize_type: SerializeType::Json,
        }
    }

    /// A request with no typed header.
    pub fn bare_request(code: i32) -> RemotingCommand {
        RemotingCommand::request(code, &super::header::EmptyHeader {})
    }

    /// The response to `self` (same opaque, same header serialization) with `code`.
    ///
    /// Responses carry `language` JAVA and a real broker version because clients key behaviour
    /// off them (reference §3.1, §5).
    pub fn response_to(&self, code: i32, remark: Option<String>) -> RemotingCommand {
        RemotingCommand {
            code,
            language: LanguageCode::Java,
            version: version::CURRENT,
            opaque: self.opaque,
            flag: flag::RESPONSE,
            remark,
            ext_fields: ExtFields::new(),
            body: Bytes::new(),
            serialize_type: self.serialize_type,
        }
    }

    /// A SUCCESS response to `self`.
    pub fn success(&self) -> RemotingCommand {
        self.response_to(response_code::SUCCESS, None)
    }

    /// An error response to `self` with a human-readable remark.
    pub fn error(&self, code: i32, remark: impl Into<String>) -> RemotingCommand {
        self.response_to(code, Some(remark.into()))
    }

    pub fn with_header(mut self, header: &impl CommandHeader) -> RemotingCommand {
        header.encode(&mut self.ext_fields);
        self
    }

    pub fn with_body(mut self, body: impl Into<Bytes>) -> RemotingCommand {
        self.body = body.into();
        self
    }

    pub fn with_opaque(mut self, opaque: i32) -> RemotingCommand {
        self.opaque = opaque;
        self
    }

    /// Marks a request one-way: the peer sends no response.
    pub fn oneway(mut self) -> RemotingCommand {
        self.flag |= flag::ONEWAY;
        self
    }

    pub fn is_response(&self) -> bool {
        self.flag & flag::RESPONSE != 0
    }

    pub fn is_oneway(&self) -> bool {
        self.flag & flag::ONEWAY != 0
    }

    /// Decodes the typed header `H` from `extFields`.
    pub fn decode_header<H: CommandHeader>(&self) -> Result<H, HeaderError> {
        H::decode(&self.ext_fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_keeps_opaque_and_serialization_and_sets_flag() {
        let mut req = RemotingCommand::bare_request(34).with_opaque(77);
        req.serialize_type = SerializeType::RocketMq;
        let resp = req.error(response_code::SYSTEM_ERROR, "boom");
        assert_eq!(resp.opaque, 77);
        assert!(resp.is_response());
        assert!(!resp.is_oneway());
        assert_eq!(resp.serialize_type, SerializeType::RocketMq);
        assert_eq!(resp.remark.as_deref(), Some("boom"));
        assert_eq!(resp.version, version::CURRENT);
        assert!(req.clone().oneway().is_oneway());
    }
}
