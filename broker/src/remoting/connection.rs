//! One connection: a reader that splits frames and dispatches each request to its own task, and
//! a writer that sends responses in completion order (responses are matched by opaque, so
//! order does not matter to clients).
//!
//! Bad input never takes the process down: a frame that breaks the stream (oversized, lengths
//! that do not add up) closes this connection; a frame whose header cannot be parsed gets a
//! SYSTEM_ERROR response and then the connection is closed (the opaque is unknown, so the peer
//! cannot match anything more to us).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use thruster_protocol::{
    decode_frame, encode, encode_head, response_code, RemotingCommand, SerializeType,
};
use tracing::{debug, warn};

use super::server::ServerConfig;
use crate::runtime::{self, IoBuffer, LocalSender, Semaphore, SharedStream, TcpStream};

/// Handles requests. Implemented by the name server and the broker.
#[allow(async_fn_in_trait)] // processors live on one reactor; futures need not be Send
pub trait RequestProcessor: 'static {
    /// Handles one request; `None` means no response (one-way requests get none regardless).
    async fn process(&self, context: &ConnectionContext, request: RemotingCommand)
        -> Option<Reply>;

    /// Called once when a connection has closed (after its last response).
    fn connection_closed(&self, _context: &ConnectionContext) {}
}

/// Part of a frame's body that is sent as it is, without being copied into the frame buffer:
/// stored records of a pull response.
#[derive(Clone)]
pub enum BodyPart {
    Bytes(Bytes),
    /// A range of a shared aligned buffer (a sealed CommitLog chunk).
    Buffer {
        buffer: Rc<IoBuffer>,
        start: usize,
        len: usize,
    },
    /// A range of a file, sent with sendfile.
    File {
        file: std::sync::Arc<std::fs::File>,
        pos: u64,
        len: usize,
    },
}

impl BodyPart {
    pub fn len(&self) -> usize {
        match self {
            BodyPart::Bytes(bytes) => bytes.len(),
            BodyPart::Buffer { len, .. } | BodyPart::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A frame to write: the command (with the start of its body, often empty), then `tail`.
pub struct Reply {
    pub command: RemotingCommand,
    pub tail: Vec<BodyPart>,
}

impl From<RemotingCommand> for Reply {
    fn from(command: RemotingCommand) -> Reply {
        Reply {
            command,
            tail: Vec::new(),
        }
    }
}

/// What a processor knows of the connection a request came on.
#[derive(Clone)]
pub struct ConnectionContext {
    pub id: u64,
    pub peer: SocketAddr,
    /// Frames queued here are written to the peer (responses, and server-initiated requests such
    /// as NOTIFY_CONSUMER_IDS_CHANGED).
    pub outbound: LocalSender<Reply>,
}

/// Tail parts smaller than this are copied into the frame buffer (one write beats two).
const TAIL_COPY_MAX_BYTES: usize = 4 * 1024;
/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Responses encoded into one write when several are ready.
const WRITE_BATCH_MAX_BYTES: usize = 256 * 1024;

pub async fn serve_connection<P: RequestProcessor>(
    stream: TcpStream,
    id: u64,
    peer: SocketAddr,
    processor: Rc<P>,
    config: &ServerConfig,
) {
    if let Err(error) = runtime::set_nodelay(&stream) {
        debug!(%peer, %error, "TCP_NODELAY");
    }
    let stream = Rc::new(RefCell::new(stream));
    // Bounded by the in-flight limit: every queued item holds (or held) a permit.
    let (outbound, outbound_rx) =
        runtime::bounded_channel::<Reply>(config.in_flight_per_connection_max);
    let writer = write_loop(stream.clone(), outbound_rx, peer);
    let context = ConnectionContext { id, peer, outbound };
    let in_flight = Rc::new(Semaphore::new(config.in_flight_per_connection_max as u64));

    let reader = read_loop(
        SharedStream(stream.clone()),
        &context,
        processor.clone(),
        in_flight,
        config.frame_max_bytes,
    );
    // The writer runs as its own task so a slow peer never blocks request processing.
    let (writer_done_tx, writer_done_rx) = runtime::bounded_channel::<()>(1);
    runtime::spawn_detached(async move {
        writer.await;
        let _ = writer_done_tx.send(()).await;
    });
    reader.await;
    processor.connection_closed(&context);
    // Dropping our sender lets the writer finish once in-flight requests have answered.
    drop(context);
    let _ = writer_done_rx.recv().await;
    // Reader and writer are done and have dropped their handles on the socket.
    if let Ok(stream) = Rc::try_unwrap(stream) {
        runtime::shutdown(&stream.into_inner()).await;
    }
}

async fn read_loop<P: RequestProcessor>(
    mut stream: SharedStream<TcpStream>,
    context: &ConnectionContext,
    processor: Rc<P>,
    in_flight: Rc<Semaphore>,
    frame_max_bytes: usize,
) {
    let peer = context.peer;
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        loop {
            let frame = match decode_frame(&mut buf, frame_max_bytes) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    warn!(%peer, %error, "unframeable input, closing connection");
                    return;
                }
            };
            let request = match frame.into_command() {
                Ok(request) => request,
                Err(error) => {
                    warn!(%peer, %error, "undecodable header, answering SYSTEM_ERROR and closing");
                    let mut probe = RemotingCommand::bare_request(0);
                    probe.serialize_type = SerializeType::Json;
                    let response = probe.error(
                        response_code::SYSTEM_ERROR,
                        format!("undecodable request header: {error}"),
                    );
                    let _ = context.outbound.send(response.into()).await;
                    return;
                }
            };
            if request.is_response() {
                // Replies to server-initiated requests; none of ours expects one yet.
                debug!(%peer, opaque = request.opaque, code = request.code, "unsolicited response dropped");
                continue;
            }
            let Ok(permit) = in_flight.clone().acquire_static_permit(1).await else {
                return;
            };
            let processor = processor.clone();
            let context = context.clone();
            runtime::spawn_detached(async move {
                let oneway = request.is_oneway();
                let code = request.code;
                let opaque = request.opaque;
                let response = processor.process(&context, request).await;
                if let (Some(response), false) = (response, oneway) {
                    debug_assert_eq!(response.command.opaque, opaque);
                    if context.outbound.send(response).await.is_err() {
                        debug!(peer = %context.peer, code, "connection gone before the response");
                    }
                }
                drop(permit);
            });
        }
        if buf.capacity() - buf.len() < READ_CHUNK_BYTES / 4 {
            buf.reserve(READ_CHUNK_BYTES);
        }
        match stream.read(&mut chunk).await {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(error) => {
                debug!(%peer, %error, "read failed");
                return;
            }
        }
    }
}

/// Writes queued frames until every sender is gone or the socket fails. Ready frames are
/// coalesced into one write; large tail parts are written from their own memory, and file
/// parts go by sendfile, so stored records are never copied into the frame buffer.
async fn write_loop(
    socket: Rc<RefCell<TcpStream>>,
    outbound: runtime::LocalReceiver<Reply>,
    peer: SocketAddr,
) {
    let mut stream = SharedStream(socket.clone());
    let mut out = BytesMut::with_capacity(READ_CHUNK_BYTES);
    while let Some(first) = outbound.recv().await {
        let mut next = Some(first);
        // Coalesce whatever else is ready into one write, up to a bound.
        while let Some(reply) = next.take() {
            let result = if reply.tail.is_empty() {
                encode(&reply.command, &mut out).map_err(|e| e.to_string())
            } else {
                write_with_tail(&socket, &mut stream, &mut out, reply).await
            };
            if let Err(error) = result {
                warn!(%peer, %error, "frame could not be written");
                return;
            }
            if out.len() < WRITE_BATCH_MAX_BYTES {
                next = futures_lite::future::poll_once(outbound.recv())
                    .await
                    .flatten();
            }
        }
        if let Err(error) = stream.write_all(&out).await {
            debug!(%peer, %error, "write failed");
            return;
        }
        out.clear();
    }
}

/// Writes what `out` holds.
async fn flush(stream: &mut SharedStream<TcpStream>, out: &mut BytesMut) -> Result<(), String> {
    if !out.is_empty() {
        stream.write_all(out).await.map_err(|e| e.to_string())?;
        out.clear();
    }
    Ok(())
}

/// Encodes the head of a frame whose body continues in `reply.tail`, and writes the tail.
/// Small parts are copied into `out`; larger ones are written after flushing `out`.
async fn write_with_tail(
    socket: &Rc<RefCell<TcpStream>>,
    stream: &mut SharedStream<TcpStream>,
    out: &mut BytesMut,
    reply: Reply,
) -> Result<(), String> {
    let tail_bytes: usize = reply.tail.iter().map(BodyPart::len).sum();
    let body_bytes = reply.command.body.len() + tail_bytes;
    encode_head(&reply.command, body_bytes, out).map_err(|e| e.to_string())?;
    out.extend_from_slice(&reply.command.body);
    // File ranges wait here until something else must be written, so one helper-thread
    // call sends all adjacent ones (a pull of 32 cold messages is one hop, not 32).
    let mut files: Vec<runtime::FileRange> = Vec::new();
    for part in reply.tail {
        if let BodyPart::File { file, pos, len } = part {
            match files.last_mut() {
                // Adjacent in the same file: one range.
                Some((last, last_pos, last_len))
                    if std::sync::Arc::ptr_eq(last, &file)
                        && *last_pos + *last_len as u64 == pos =>
                {
                    *last_len += len;
                }
                _ => files.push((file, pos, len)),
            }
            continue;
        }
        if !files.is_empty() {
            flush(stream, out).await?;
            let fd = runtime::socket_fd(&socket.borrow());
            runtime::send_file_ranges(fd, std::mem::take(&mut files))
                .await
                .map_err(|e| e.to_string())?;
        }
        match part {
            BodyPart::Bytes(bytes) if bytes.len() <= TAIL_COPY_MAX_BYTES => {
                out.extend_from_slice(&bytes)
            }
            BodyPart::Buffer { buffer, start, len } if len <= TAIL_COPY_MAX_BYTES => {
                out.extend_from_slice(&buffer.as_bytes()[start..start + len])
            }
            BodyPart::Bytes(bytes) => {
                flush(stream, out).await?;
                stream.write_all(&bytes).await.map_err(|e| e.to_string())?;
            }
            BodyPart::Buffer { buffer, start, len } => {
                flush(stream, out).await?;
                stream
                    .write_all(&buffer.as_bytes()[start..start + len])
                    .await
                    .map_err(|e| e.to_string())?;
            }
            BodyPart::File { .. } => unreachable!("file parts are collected above"),
        }
    }
    if !files.is_empty() {
        flush(stream, out).await?;
        let fd = runtime::socket_fd(&socket.borrow());
        runtime::send_file_ranges(fd, files)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
