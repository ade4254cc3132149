//! One TCP connection to a broker or name server, multiplexed by opaque: any number of requests
//! in flight, each matched to its response, each with its own timeout. Requests the server
//! sends (NOTIFY_CONSUMER_IDS_CHANGED, ...) go to an optional bounded channel.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::core::error::{ClientError, ClientResult};
use crate::protocol::{decode_frame, encode, RemotingCommand, FRAME_MAX_BYTES_DEFAULT};

/// Frames queued for writing; senders wait beyond it.
const OUTBOUND_CAPACITY: usize = 4096;
/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Ready frames written in one write, at most.
const WRITE_BATCH_MAX_BYTES: usize = 256 * 1024;

type Pending = Arc<Mutex<HashMap<i32, oneshot::Sender<RemotingCommand>>>>;

/// Where requests the server sends go (the instance routes them by code); it must not block.
pub type ServerRequestSink = Arc<dyn Fn(SocketAddr, RemotingCommand) + Send + Sync>;

pub struct Connection {
    addr: SocketAddr,
    outbound: mpsc::Sender<RemotingCommand>,
    pending: Pending,
    next_opaque: AtomicI32,
    closed: Arc<AtomicBool>,
}

impl Connection {
    /// Connects; requests from the server go to `server_requests`.
    pub async fn connect(
        addr: SocketAddr,
        timeout: Duration,
        server_requests: Option<ServerRequestSink>,
    ) -> ClientResult<Arc<Connection>> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Connect {
                addr,
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
            })?
            .map_err(|source| ClientError::Connect { addr, source })?;
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let (outbound, mut outbound_rx) = mpsc::channel::<RemotingCommand>(OUTBOUND_CAPACITY);
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));

        let writer_closed = closed.clone();
        tokio::spawn(async move {
            let mut out = BytesMut::with_capacity(READ_CHUNK_BYTES);
            while let Some(command) = outbound_rx.recv().await {
                let mut next = Some(command);
                while let Some(command) = next.take() {
                    if let Err(error) = encode(&command, &mut out) {
                        debug!(%addr, %error, "frame not encodable");
                    }
                    if out.len() < WRITE_BATCH_MAX_BYTES {
                        next = outbound_rx.try_recv().ok();
                    }
                }
                if writer.write_all(&out).await.is_err() {
                    break;
                }
                out.clear();
            }
            writer_closed.store(true, Ordering::Release);
        });

        let reader_pending = pending.clone();
        let reader_closed = closed.clone();
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
            'read: loop {
                loop {
                    match decode_frame(&mut buf, FRAME_MAX_BYTES_DEFAULT) {
                        Ok(Some(frame)) => match frame.into_command() {
                            Ok(command) if command.is_response() => {
                                let waiter = reader_pending
                                    .lock()
                                    .expect("pending table")
                                    .remove(&command.opaque);
                                if let Some(waiter) = waiter {
                                    let _ = waiter.send(command);
                                }
                            }
                            Ok(command) => {
                                if let Some(requests) = &server_requests {
                                    requests(addr, command);
                                }
                            }
                            Err(error) => {
                                debug!(%addr, %error, "undecodable frame, closing");
                                break 'read;
                            }
                        },
                        Ok(None) => break,
                        Err(error) => {
                            debug!(%addr, %error, "unframeable input, closing");
                            break 'read;
                        }
                    }
                }
                buf.reserve(READ_CHUNK_BYTES);
                match reader.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            reader_closed.store(true, Ordering::Release);
            // Waiters see their sender dropped: ConnectionClosed.
            reader_pending.lock().expect("pending table").clear();
        });

        Ok(Arc::new(Connection {
            addr,
            outbound,
            pending,
            next_opaque: AtomicI32::new(1),
            closed,
        }))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.outbound.is_closed()
    }

    fn opaque(&self) -> i32 {
        self.next_opaque.fetch_add(1, Ordering::Relaxed) & i32::MAX
    }

    /// Sends `request` and waits up to `timeout` for its response.
    pub async fn invoke(
        &self,
        mut request: RemotingCommand,
        timeout: Duration,
    ) -> ClientResult<RemotingCommand> {
        let opaque = self.opaque();
        request.opaque = opaque;
        let code = request.code;
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending table")
            .insert(opaque, tx);
        let addr = self.addr;
        let result = tokio::time::timeout(timeout, async {
            self.outbound
                .send(request)
                .await
                .map_err(|_| ClientError::ConnectionClosed { addr })?;
            rx.await.map_err(|_| ClientError::ConnectionClosed { addr })
        })
        .await;
        match result {
            Ok(response) => response,
            Err(_) => {
                self.pending.lock().expect("pending table").remove(&opaque);
                Err(ClientError::Timeout {
                    addr,
                    code,
                    timeout_ms: timeout.as_millis() as u64,
                })
            }
        }
    }

    /// Answers a request the server sent (`response` carries that request's opaque).
    pub async fn respond(&self, response: RemotingCommand) -> ClientResult<()> {
        self.outbound
            .send(response)
            .await
            .map_err(|_| ClientError::ConnectionClosed { addr: self.addr })
    }

    /// Sends a one-way request (no response is expected).
    pub async fn invoke_oneway(&self, request: RemotingCommand) -> ClientResult<()> {
        let mut request = request.oneway();
        request.opaque = self.opaque();
        self.outbound
            .send(request)
            .await
            .map_err(|_| ClientError::ConnectionClosed { addr: self.addr })
    }
}
