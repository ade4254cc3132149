//! The metrics endpoint: a minimal HTTP/1.1 server on shard 0 that answers `GET /metrics`
//! (404 for other paths, 405 for other methods, 400 for what is not HTTP) and closes each
//! connection after its answer. Hand-written on the reactor's own sockets rather than an HTTP
//! crate: the broker has no tokio (and must not), the endpoint has one route, and a scrape is
//! rare, so connections are served one at a time with a bounded request head and a read
//! deadline; a scrape gathers every shard's counters over the mesh (`Call::Stats`) and costs
//! the send and pull paths nothing.

use std::io;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

use super::{encode, families, ScrapeInput};
use crate::processor::runtime_info::shard_stats;
use crate::processor::BrokerProcessor;
use crate::runtime::{self, TcpListener, TcpStream};
use crate::store::disk_usage::disk_space;

/// Bytes of a request head the endpoint reads; a longer one is refused.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 << 10;
/// How long a connection may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The text format prometheus-client writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves scrapes until the shard stops.
pub async fn serve(processor: Rc<BrokerProcessor>, listener: TcpListener) {
    let stop = processor.shard.tasks.stop_signal();
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "metrics endpoint listening");
    }
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stop.wait().await;
            None
        })
        .await;
        let Some(accepted) = accepted else { return };
        match accepted {
            Ok((stream, peer)) => {
                if let Err(error) = answer(&processor, stream).await {
                    debug!(%peer, %error, "metrics request not answered");
                }
            }
            Err(error) => warn!(%error, "metrics endpoint accept failed"),
        }
    }
}

async fn answer(processor: &BrokerProcessor, mut stream: TcpStream) -> io::Result<()> {
    let head = runtime::timeout(READ_TIMEOUT, read_head(&mut stream))
        .await
        .unwrap_or_else(|| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request head in time",
            ))
        })?;
    let (status, content_type, body) = match request_line(&head) {
        Some(("GET", path)) if path == "/metrics" || path.starts_with("/metrics?") => {
            match scrape(processor).await {
                Ok(text) => ("200 OK", CONTENT_TYPE, text),
                Err(error) => (
                    "500 Internal Server Error",
                    "text/plain",
                    format!("{error}\n"),
                ),
            }
        }
        Some(("GET", _)) => (
            "404 Not Found",
            "text/plain",
            "only /metrics is served\n".into(),
        ),
        Some(_) => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".into(),
        ),
        None => (
            "400 Bad Request",
            "text/plain",
            "not an HTTP request\n".into(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await?;
    runtime::shutdown(&stream).await;
    Ok(())
}

/// Reads up to the blank line that ends a request head.
async fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= REQUEST_HEAD_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("request head longer than {REQUEST_HEAD_BYTES_MAX} bytes"),
            ));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(head)
}

/// `(method, path)` of an HTTP/1.x request line.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = std::str::from_utf8(head).ok()?.lines().next()?;
    let mut parts = line.split(' ');
    let (method, path, version) = (parts.next()?, parts.next()?, parts.next()?);
    version.starts_with("HTTP/1.").then_some((method, path))
}

/// One scrape: every shard's counters, the disk's use, the client table (this shard's copy).
async fn scrape(processor: &BrokerProcessor) -> Result<String, String> {
    let shard = &processor.shard;
    let shards = shard_stats(processor, 0..shard.count).await;
    let root = shard.config.store_path_root_dir.clone();
    let disk_used_ratio = runtime::spawn_blocking(move || {
        disk_space(&root.join("commitlog"))
            .or_else(|_| disk_space(&root))
            .map_or(-1.0, |space| space.used_ratio())
    })
    .await;
    let clients = shard.clients.borrow();
    let input = ScrapeInput {
        config: &shard.config,
        shards,
        clients: &clients,
        disk_used_ratio,
        boot_ms: shard.boot_ms,
    };
    encode(families(&input)).map_err(|e| format!("encoding the metrics: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_read_strictly() {
        assert_eq!(
            request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            request_line(b"POST / HTTP/1.0\r\n\r\n"),
            Some(("POST", "/"))
        );
        assert_eq!(request_line(b"\x16\x03\x01 binary"), None);
        assert_eq!(request_line(b"GET /metrics\r\n\r\n"), None);
    }
}
