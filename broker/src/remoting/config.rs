//! Limits of one server (accept loop and its connections), and the memory budgets its
//! connections share (frames being received, requests being processed).

use std::rc::Rc;

use crate::runtime::{Semaphore, StaticPermit};
use thruster_protocol::FRAME_MAX_BYTES_DEFAULT;

/// Request bytes one connection may have being processed at once (frames read and not yet
/// answered); its reader stops reading past it.
pub const CONNECTION_REQUEST_BYTES_MAX_DEFAULT: usize = 64 << 20;
const _: () = assert!(CONNECTION_REQUEST_BYTES_MAX_DEFAULT >= FRAME_MAX_BYTES_DEFAULT);

/// A frame up to this many bytes (length field included) is received without a reservation
/// of the shared receive budget: each connection may buffer that much (plus one socket read)
/// on its own, so small requests never wait behind large partial frames. A larger frame's
/// buffer is allocated once, at its announced size, after its reservation.
pub const RECEIVE_UNRESERVED_BYTES_MAX: usize = 64 << 10;

/// Limits of one server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest frame accepted, counting the length field (RocketMQ `frameMaxLength`).
    pub frame_max_bytes: usize,
    /// Requests of one connection being processed at once; the reader stops reading past it.
    pub in_flight_per_connection_max: usize,
    /// Request bytes of one connection being processed at once (at least `frame_max_bytes`).
    pub in_flight_bytes_per_connection_max: usize,
    /// Request bytes being processed across all connections that share this budget (one per
    /// shard in the broker); `None`: only the per-connection bound.
    pub request_memory: Option<RequestMemory>,
    /// Bytes of partly received frames across all connections that share this budget (one
    /// per shard in the broker, `shardReceiveBufferBytes`): a frame larger than
    /// `RECEIVE_UNRESERVED_BYTES_MAX` is read only once its announced length is reserved here;
    /// until then its connection is not read (back-pressure, up to the idle timeout). `None`:
    /// only the frame limit bounds a connection's buffer.
    pub receive_memory: Option<RequestMemory>,
    /// Open connections; further ones are closed at once.
    pub connections_max: usize,
    pub first_connection_id: u64,
    pub connection_id_step: u64,
    /// A connection that completes no request for this long is closed (RocketMQ's
    /// `serverChannelMaxIdleTimeSeconds`, 120 s): idle peers, and peers that dribble a frame
    /// without ever finishing it, give their socket and buffers back. `None`: never.
    pub idle_timeout_ms: Option<u64>,
}

/// `serverChannelMaxIdleTimeSeconds` unless configured: RocketMQ's 120 s. Clients heartbeat
/// every 30 s, brokers register every 30 s, slaves report every 5 s, and a long poll holds at
/// most 25 s, so only dead or hostile peers reach it.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 120_000;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            frame_max_bytes: FRAME_MAX_BYTES_DEFAULT,
            in_flight_per_connection_max: 1024,
            in_flight_bytes_per_connection_max: CONNECTION_REQUEST_BYTES_MAX_DEFAULT,
            request_memory: None,
            receive_memory: None,
            connections_max: 16 * 1024,
            first_connection_id: 0,
            connection_id_step: 1,
            idle_timeout_ms: Some(IDLE_TIMEOUT_MS_DEFAULT),
        }
    }
}

impl ServerConfig {
    /// A frame larger than a budget could never be admitted: its reader would wait forever.
    pub fn validate(&self) -> Result<(), String> {
        let shared_bytes_max = self.request_memory.as_ref().map(RequestMemory::bytes_max);
        let receive_bytes_max = self.receive_memory.as_ref().map(RequestMemory::bytes_max);
        for (what, bytes_max) in [
            (
                "in-flight bytes per connection",
                Some(self.in_flight_bytes_per_connection_max),
            ),
            ("shared request memory", shared_bytes_max),
            ("shared receive buffer memory", receive_bytes_max),
        ] {
            if let Some(bytes_max) = bytes_max.filter(|b| *b < self.frame_max_bytes) {
                return Err(format!(
                    "{what} ({bytes_max} bytes) is below the largest frame ({} bytes)",
                    self.frame_max_bytes
                ));
            }
        }
        Ok(())
    }
}

/// A budget of request bytes: a reader reserves a frame's bytes before dispatching it and the
/// reservation is released when the request has been answered, so peers that pipeline large
/// requests wait for memory instead of growing it.
#[derive(Clone)]
pub struct RequestMemory {
    free: Rc<Semaphore>,
    bytes_max: usize,
}

impl RequestMemory {
    pub fn new(bytes_max: usize) -> RequestMemory {
        RequestMemory {
            free: Rc::new(Semaphore::new(bytes_max as u64)),
            bytes_max,
        }
    }

    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    pub fn bytes_in_use(&self) -> usize {
        self.bytes_max - self.free.available() as usize
    }

    /// Waits until `bytes` are free and takes them; `None` if the budget was closed.
    pub async fn reserve(&self, bytes: usize) -> Option<StaticPermit> {
        assert!(
            bytes <= self.bytes_max,
            "a reservation larger than the budget"
        );
        self.free
            .clone()
            .acquire_static_permit(bytes as u64)
            .await
            .ok()
    }
}

impl std::fmt::Debug for RequestMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMemory")
            .field("bytes_max", &self.bytes_max)
            .field("bytes_in_use", &self.bytes_in_use())
            .finish()
    }
}
