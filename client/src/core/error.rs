//! Typed client errors, with the peer and, for broker refusals, RocketMQ's code and remark.

use std::net::SocketAddr;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr}: connection closed")]
    ConnectionClosed { addr: SocketAddr },
    #[error("{addr}: no response to request {code} within {timeout_ms} ms")]
    Timeout {
        addr: SocketAddr,
        code: i32,
        timeout_ms: u64,
    },
    #[error("{addr} answered code {code}: {remark}")]
    Broker {
        addr: SocketAddr,
        code: i32,
        remark: String,
    },
    #[error("no route for topic {topic}: {reason}")]
    NoRoute { topic: String, reason: String },
    #[error("malformed response from {addr}: {reason}")]
    Protocol { addr: SocketAddr, reason: String },
    #[error("no reply to the request {correlation_id} within {timeout_ms} ms")]
    RequestTimeout {
        correlation_id: String,
        timeout_ms: u64,
    },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    /// The broker's response code, for refusals.
    pub fn response_code(&self) -> Option<i32> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type ClientResult<T> = Result<T, ClientError>;
