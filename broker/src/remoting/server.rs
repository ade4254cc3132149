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
    pub first_connection_id: u64,
    pub connection_id_step: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            frame_max_bytes: thruster_protocol::FRAME_MAX_BYTES_DEFAULT,
            in_flight_per_connection_max: 1024,
            connections_max: 16 * 1024,
            first_connection_id: 0,
            connection_id_step: 1,
        }
    }
}

/// Serves `listener` until `stop` completes (connections already open keep being served by
/// their own tasks). Connection ids start at `first_connection_id` and step by
/// `connection_id_step`, so several listeners of one reactor never hand out the same id.
pub async fn serve<P: RequestProcessor>(
    listener: TcpListener,
    processor: Rc<P>,
    config: ServerConfig,
    stop: impl std::future::Future<Output = ()>,
) {
    let local_addr = listener.local_addr().ok();
    let open_connections = Rc::new(Cell::new(0usize));
    let mut next_connection_id = config.first_connection_id;
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            (&mut stop).await;
            None
        })
        .await;
        let Some(accepted) = accepted else {
            info!(?local_addr, "no longer accepting connections");
            return;
        };
        let (stream, peer) = match accepted {
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
        next_connection_id += config.connection_id_step;
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
