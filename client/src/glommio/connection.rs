//! One connection on a glommio reactor, multiplexed by opaque. State is owned by the reactor
//! (`Rc`/`RefCell`): no locks.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::TcpStream;

use super::SharedStream;
use crate::core::error::{ClientError, ClientResult};
use crate::protocol::{decode_frame, encode, RemotingCommand, FRAME_MAX_BYTES_DEFAULT};

/// Frames queued for writing; senders wait beyond it.
const OUTBOUND_CAPACITY: usize = 4096;
const READ_CHUNK_BYTES: usize = 64 * 1024;
const WRITE_BATCH_MAX_BYTES: usize = 256 * 1024;

type Pending = Rc<RefCell<HashMap<i32, LocalSender<RemotingCommand>>>>;

pub struct Connection {
    addr: SocketAddr,
    outbound: Rc<LocalSender<RemotingCommand>>,
    pending: Pending,
    next_opaque: Cell<i32>,
    closed: Rc<Cell<bool>>,
}

impl Connection {
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> ClientResult<Rc<Connection>> {
        let connect_error = |source| ClientError::Connect { addr, source };
        let stream = with_timeout(timeout, async {
            TcpStream::connect(addr)
                .await
                .map_err(|e| connect_error(e.into()))
        })
        .await
        .unwrap_or_else(|| {
            Err(connect_error(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            )))
        })?;
        let _ = stream.set_nodelay(true);
        let socket = Rc::new(RefCell::new(stream));
        let (outbound, outbound_rx) =
            local_channel::new_bounded::<RemotingCommand>(OUTBOUND_CAPACITY);
        let pending: Pending = Rc::default();
        let closed = Rc::new(Cell::new(false));

        let mut writer = SharedStream(socket.clone());
        let writer_closed = closed.clone();
        glommio::spawn_local(async move {
            let mut out = BytesMut::with_capacity(READ_CHUNK_BYTES);
            while let Some(command) = outbound_rx.recv().await {
                let mut next = Some(command);
                while let Some(command) = next.take() {
                    let _ = encode(&command, &mut out);
                    if out.len() < WRITE_BATCH_MAX_BYTES {
                        next = futures_lite::future::poll_once(outbound_rx.recv())
                            .await
                            .flatten();
                    }
                }
                if writer.write_all(&out).await.is_err() {
                    break;
                }
                out.clear();
            }
            writer_closed.set(true);
        })
        .detach();

        let mut reader = SharedStream(socket);
        let reader_pending = pending.clone();
        let reader_closed = closed.clone();
        glommio::spawn_local(async move {
            let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
            let mut chunk = vec![0u8; READ_CHUNK_BYTES];
            'read: loop {
                loop {
                    match decode_frame(&mut buf, FRAME_MAX_BYTES_DEFAULT) {
                        Ok(Some(frame)) => match frame.into_command() {
                            Ok(command) if command.is_response() => {
                                let waiter = reader_pending.borrow_mut().remove(&command.opaque);
                                if let Some(waiter) = waiter {
                                    let _ = waiter.try_send(command);
                                }
                            }
                            // Server-initiated requests are not used by this front end.
                            Ok(_) => {}
                            Err(_) => break 'read,
                        },
                        Ok(None) => break,
                        Err(_) => break 'read,
                    }
                }
                if let Some(frame_bytes) = large_frame_bytes(&buf) {
                    // Straight into place, in as few reads as the socket allows: a pull's
                    // megabyte is not copied again from a small chunk.
                    let mut filled = buf.len();
                    buf.resize(frame_bytes, 0);
                    while filled < frame_bytes {
                        match reader.read(&mut buf[filled..]).await {
                            Ok(0) | Err(_) => break 'read,
                            Ok(n) => filled += n,
                        }
                    }
                    continue;
                }
                match reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            reader_closed.set(true);
            reader_pending.borrow_mut().clear();
        })
        .detach();

        Ok(Rc::new(Connection {
            addr,
            outbound: Rc::new(outbound),
            pending,
            next_opaque: Cell::new(1),
            closed,
        }))
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    fn opaque(&self) -> i32 {
        let opaque = self.next_opaque.get();
        self.next_opaque.set(opaque.wrapping_add(1) & i32::MAX);
        opaque
    }

    pub async fn invoke(
        &self,
        mut request: RemotingCommand,
        timeout: Duration,
    ) -> ClientResult<RemotingCommand> {
        let opaque = self.opaque();
        request.opaque = opaque;
        let code = request.code;
        let addr = self.addr;
        let (tx, rx) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(opaque, tx);
        let result = with_timeout(timeout, async {
            self.outbound
                .send(request)
                .await
                .map_err(|_| ClientError::ConnectionClosed { addr })?;
            rx.recv()
                .await
                .ok_or(ClientError::ConnectionClosed { addr })
        })
        .await;
        result.unwrap_or_else(|| {
            self.pending.borrow_mut().remove(&opaque);
            Err(ClientError::Timeout {
                addr,
                code,
                timeout_ms: timeout.as_millis() as u64,
            })
        })
    }

    pub async fn invoke_oneway(&self, request: RemotingCommand) -> ClientResult<()> {
        let mut request = request.oneway();
        request.opaque = self.opaque();
        self.outbound
            .send(request)
            .await
            .map_err(|_| ClientError::ConnectionClosed { addr: self.addr })
    }
}

/// The size of the frame at the head of `buf` when it is incomplete and larger than a read
/// chunk (`decode_frame` has checked it against the frame limit and reserved room for it).
fn large_frame_bytes(buf: &[u8]) -> Option<usize> {
    let prefix: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    let frame_bytes = u32::from_be_bytes(prefix) as usize + 4;
    (frame_bytes > buf.len() && frame_bytes > READ_CHUNK_BYTES).then_some(frame_bytes)
}

/// `future`'s output, or `None` after `timeout`.
pub async fn with_timeout<T>(
    timeout: Duration,
    future: impl std::future::Future<Output = T>,
) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        glommio::timer::sleep(timeout).await;
        None
    })
    .await
}
