//! Accept loop: one task per connection, with a bound on open connections.

use std::cell::Cell;
use std::rc::Rc;

use tracing::{info, warn};

use super::connection::{serve_connection, RequestProcessor};
use crate::runtime::{self, TcpListener};

/// Limits of one server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest frame accepted, counting the length field (RocketMQ `frameMaxLength`).
    pub frame_max_bytes: usize,
    /// Requests of one connection being processed at once; the reader stops reading past it.
    pub in_flight_per_connection_max: usize,
    /// Open connections; further ones are closed at once.
    pub connections_max: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            frame_max_bytes: thruster_client::protocol::FRAME_MAX_BYTES_DEFAULT,
            in_flight_per_connection_max: 1024,
            connections_max: 16 * 1024,
        }
    }
}

/// Serves `listener` until the reactor stops.
pub async fn serve<P: RequestProcessor>(
    listener: TcpListener,
    processor: Rc<P>,
    config: ServerConfig,
) {
    let local_addr = listener.local_addr().ok();
    let open_connections = Rc::new(Cell::new(0usize));
    let mut next_connection_id = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(?local_addr, %error, "accept failed");
                runtime::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if open_connections.get() >= config.connections_max {
            warn!(%peer, connections_max = config.connections_max, "connection limit reached, closing");
            runtime::shutdown(&stream).await;
            continue;
        }
        next_connection_id += 1;
        let id = next_connection_id;
        open_connections.set(open_connections.get() + 1);
        let processor = processor.clone();
        let config = config.clone();
        let open_connections = open_connections.clone();
        runtime::spawn_detached(async move {
            info!(%peer, connection = id, "connection opened");
            serve_connection(stream, id, peer, processor, &config).await;
            open_connections.set(open_connections.get() - 1);
            info!(%peer, connection = id, "connection closed");
        });
    }
}
