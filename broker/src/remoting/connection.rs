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
use tracing::{debug, info, warn};

use super::config::{RequestMemory, ServerConfig, RECEIVE_UNRESERVED_BYTES_MAX};
use crate::runtime::{
    self, IoBuffer, LocalSender, Semaphore, SharedStream, StaticPermit, TcpStream,
};

/// Handles requests. Implemented by the name server and the broker.
#[allow(async_fn_in_trait)] // processors live on one reactor; futures need not be Send
pub trait RequestProcessor: 'static {
    /// Handles one request; `None` means no response (one-way requests get none regardless).
    async fn process(&self, context: &ConnectionContext, request: RemotingCommand)
        -> Option<Reply>;

    /// Called once when a connection opens, before its first request.
    fn connection_opened(&self, _context: &ConnectionContext) {}

    /// Called once when a connection has closed (after its last response).
    fn connection_closed(&self, _context: &ConnectionContext) {}

    /// A response from the peer to a request the server sent it (matched by opaque).
    fn response_arrived(&self, _context: &ConnectionContext, _response: RemotingCommand) {}
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
    /// Stored bytes as the store hands them out: shared chunks and file ranges go to the socket
    /// as they are, without a copy.
    pub fn from_slice(slice: crate::store::Slice) -> BodyPart {
        use crate::store::Slice;
        match slice {
            Slice::Shared { buffer, start, len } => BodyPart::Buffer { buffer, start, len },
            Slice::Owned(bytes) => BodyPart::Bytes(bytes),
            Slice::File { segment, pos, len } => BodyPart::File {
                file: segment.reader.clone(),
                pos,
                len,
            },
        }
    }

    pub fn len(&self) -> usize {
        match self {
            BodyPart::Bytes(bytes) => bytes.len(),
            BodyPart::Buffer { len, .. } | BodyPart::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `next` appended to this part when it continues it: the next range of the same buffer
    /// or file. Else `next` is handed back.
    fn absorb(&mut self, next: BodyPart) -> Option<BodyPart> {
        match (self, next) {
            (
                BodyPart::Buffer { buffer, start, len },
                BodyPart::Buffer {
                    buffer: next_buffer,
                    start: next_start,
                    len: next_len,
                },
            ) if Rc::ptr_eq(buffer, &next_buffer) && *start + *len == next_start => {
                *len += next_len;
                None
            }
            (
                BodyPart::File { file, pos, len },
                BodyPart::File {
                    file: next_file,
                    pos: next_pos,
                    len: next_len,
                },
            ) if std::sync::Arc::ptr_eq(file, &next_file) && *pos + *len as u64 == next_pos => {
                *len += next_len;
                None
            }
            (_, next) => Some(next),
        }
    }
}

/// Adjacent ranges of the same chunk or file as one part: a pull's records come one part
/// each, and back to back they are one write (or one sendfile range) instead of a copy or a
/// write per record.
fn coalesce(parts: Vec<BodyPart>) -> Vec<BodyPart> {
    let mut merged: Vec<BodyPart> = Vec::with_capacity(parts.len());
    for part in parts {
        let rest = match merged.last_mut() {
            Some(last) => last.absorb(part),
            None => Some(part),
        };
        merged.extend(rest);
    }
    merged
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
    processor.connection_opened(&context);
    let budget = RequestBudget {
        requests: Rc::new(Semaphore::new(config.in_flight_per_connection_max as u64)),
        connection_bytes: RequestMemory::new(config.in_flight_bytes_per_connection_max),
        shared_bytes: config.request_memory.clone(),
    };
    let receive = ReceiveBuffer::new(config.receive_memory.clone());
    let reader = read_loop(
        SharedStream(stream.clone()),
        &context,
        processor.clone(),
        (budget, receive),
        config.frame_max_bytes,
        config.idle_timeout_ms,
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
    // Its buffers are freed: the pages go back to the system (one trim per burst of closes).
    runtime::memory::trim_freed_memory_soon();
}

/// What one connection's requests may hold while they are processed: a count, and bytes of
/// its own and of the shard's shared budget.
struct RequestBudget {
    requests: Rc<Semaphore>,
    connection_bytes: RequestMemory,
    shared_bytes: Option<RequestMemory>,
}

/// Released when the request has been answered.
struct RequestPermits {
    _held: Vec<StaticPermit>,
}

impl RequestBudget {
    /// Waits for room for one more request of `frame_bytes`; `None` when closed.
    async fn admit(&self, frame_bytes: usize) -> Option<RequestPermits> {
        let mut permits = Vec::with_capacity(3);
        permits.push(self.requests.clone().acquire_static_permit(1).await.ok()?);
        permits.push(self.connection_bytes.reserve(frame_bytes).await?);
        if let Some(shared) = &self.shared_bytes {
            permits.push(shared.reserve(frame_bytes).await?);
        }
        Some(RequestPermits { _held: permits })
    }
}

/// A connection's receive buffer: whole frames are split off it (without copying) and what
/// stays is at most one partial frame. A partial frame larger than
/// `RECEIVE_UNRESERVED_BYTES_MAX` is read only while it holds a reservation of its announced
/// length in the shard's receive budget, into a buffer allocated once at that length; once
/// the frame is whole the reservation goes (the request budget counts it from then on) and
/// the buffer goes with the request, so an idle connection keeps only a small one.
struct ReceiveBuffer {
    buf: BytesMut,
    shared: Option<RequestMemory>,
    /// The head frame's reservation, while it is being received.
    reserved: Option<StaticPermit>,
    /// Waiting for the budget (not reading): why a timeout then closes the connection.
    waiting_for_room: bool,
}

impl ReceiveBuffer {
    fn new(shared: Option<RequestMemory>) -> ReceiveBuffer {
        ReceiveBuffer {
            buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            shared,
            reserved: None,
            waiting_for_room: false,
        }
    }

    /// The head frame's length as announced by its length field (counting the field).
    fn announced_bytes(&self) -> Option<usize> {
        let field: [u8; 4] = self.buf.get(..4)?.try_into().ok()?;
        Some(4 + u32::from_be_bytes(field) as usize)
    }

    /// Makes room for the next read: for a large partial frame, first its reservation (waits
    /// while the shard's budget is taken: the peer is not read meanwhile) and one buffer of
    /// its size; otherwise a read's worth. `None`: the budget was closed.
    async fn make_room(&mut self) -> Option<()> {
        let large = self
            .announced_bytes()
            .filter(|&bytes| bytes > RECEIVE_UNRESERVED_BYTES_MAX);
        match (large, &self.shared) {
            (Some(bytes), Some(shared)) if self.reserved.is_none() => {
                self.waiting_for_room = true;
                let permit = shared.reserve(bytes.min(shared.bytes_max())).await?;
                self.waiting_for_room = false;
                self.reserved = Some(permit);
                self.reallocate(bytes);
            }
            (Some(bytes), None) if self.buf.capacity() < bytes => self.reallocate(bytes),
            _ => {
                if self.buf.capacity() - self.buf.len() < READ_CHUNK_BYTES / 4 {
                    self.buf.reserve(READ_CHUNK_BYTES);
                }
            }
        }
        Some(())
    }

    /// Moves the buffered bytes into a buffer of `capacity` bytes (a frame's exact size:
    /// growing by doubling would copy it again and again and leave the allocator freed
    /// blocks of every size on the way).
    fn reallocate(&mut self, capacity: usize) {
        let mut bigger = BytesMut::with_capacity(capacity.max(self.buf.len()));
        bigger.extend_from_slice(&self.buf);
        self.buf = bigger;
    }

    /// The head frame was split off: its reservation is returned to the caller (to drop once
    /// the request budget has taken the frame), and a large buffer no longer holding a large
    /// frame is replaced by a small one.
    fn frame_taken(&mut self) -> Option<StaticPermit> {
        if self.buf.capacity() > 2 * READ_CHUNK_BYTES
            && self
                .announced_bytes()
                .is_none_or(|bytes| bytes <= RECEIVE_UNRESERVED_BYTES_MAX)
        {
            let mut small = BytesMut::with_capacity(READ_CHUNK_BYTES.max(self.buf.len()));
            small.extend_from_slice(&self.buf);
            self.buf = small;
        }
        self.reserved.take()
    }
}

async fn read_loop<P: RequestProcessor>(
    mut stream: SharedStream<TcpStream>,
    context: &ConnectionContext,
    processor: Rc<P>,
    (budget, mut receive): (RequestBudget, ReceiveBuffer),
    frame_max_bytes: usize,
    idle_timeout_ms: Option<u64>,
) {
    let peer = context.peer;
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    // Only a whole request counts as activity: a peer dribbling bytes of a frame it never
    // finishes is as idle as a silent one.
    let mut last_request_ms = runtime::now_ms();
    loop {
        loop {
            let buf = &mut receive.buf;
            let buffered_bytes = buf.len();
            let frame = match decode_frame(buf, frame_max_bytes) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    warn!(%peer, %error, "unframeable input, closing connection");
                    return;
                }
            };
            let frame_bytes = buffered_bytes - buf.len();
            let received = receive.frame_taken();
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
                // A reply to a server-initiated request (GET_CONSUMER_RUNNING_INFO, ...).
                processor.response_arrived(context, request);
                continue;
            }
            last_request_ms = runtime::now_ms();
            let Some(permit) = budget.admit(frame_bytes).await else {
                return;
            };
            drop(received);
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
        // Room (a large frame's reservation may wait), then a read; both within the idle
        // timeout.
        let step = async {
            receive.make_room().await?;
            Some(stream.read(&mut chunk).await)
        };
        let read = match idle_timeout_ms {
            None => Some(step.await),
            Some(idle_ms) => {
                let left_ms = (last_request_ms + idle_ms as i64 - runtime::now_ms()).max(0);
                runtime::timeout(std::time::Duration::from_millis(left_ms as u64), step).await
            }
        };
        match read {
            None if receive.waiting_for_room => {
                info!(%peer, idle_ms = idle_timeout_ms, announced_bytes = receive.announced_bytes(), "no room in the shard's receive budget for this frame within the idle timeout: closing the connection");
                return;
            }
            None => {
                info!(%peer, idle_ms = idle_timeout_ms, buffered_bytes = receive.buf.len(), "no request within the idle timeout: closing the connection");
                return;
            }
            Some(None) | Some(Some(Ok(0))) => return,
            Some(Some(Ok(n))) => receive.buf.extend_from_slice(&chunk[..n]),
            Some(Some(Err(error))) => {
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
    // call sends all of them (a pull of 32 cold messages is one hop, not 32).
    let mut files: Vec<runtime::FileRange> = Vec::new();
    for part in coalesce(reply.tail) {
        if let BodyPart::File { file, pos, len } = part {
            files.push((file, pos, len));
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io::{Read, Write};
    use std::time::Duration;

    use thruster_protocol::encode;

    use super::*;
    use crate::remoting::config::RequestMemory;
    use crate::runtime::{run_reactor, ReactorConfig, TcpListener};

    const FRAME_MAX_BYTES: usize = 1_500_000;
    const BODY_BYTES: usize = 1 << 20;
    const REQUESTS_PER_CONNECTION: usize = 10;

    /// A pull's parts: back-to-back ranges of one chunk or one file become one part; a gap,
    /// another chunk or file, or a copied part in between keeps them apart; bytes are in order.
    #[test]
    fn adjacent_ranges_coalesce() {
        let chunk = Rc::new(runtime::alloc_io_buffer_long_lived(4096));
        let other = Rc::new(runtime::alloc_io_buffer_long_lived(4096));
        let file = std::sync::Arc::new(tempfile::tempfile().unwrap());
        let other_file = std::sync::Arc::new(tempfile::tempfile().unwrap());
        let buffer = |buffer: &Rc<IoBuffer>, start, len| BodyPart::Buffer {
            buffer: buffer.clone(),
            start,
            len,
        };
        let range = |file: &std::sync::Arc<std::fs::File>, pos, len| BodyPart::File {
            file: file.clone(),
            pos,
            len,
        };
        let parts = vec![
            buffer(&chunk, 0, 100),
            buffer(&chunk, 100, 50),
            buffer(&chunk, 150, 10),
            buffer(&chunk, 200, 10), // gap
            buffer(&other, 210, 10), // another chunk
            BodyPart::Bytes(Bytes::from_static(b"copy")),
            buffer(&other, 220, 10), // after a copied part
            range(&file, 0, 1000),
            range(&file, 1000, 24),
            range(&other_file, 1024, 10),
            range(&other_file, 2000, 10),
        ];
        let describe = |parts: &[BodyPart]| -> Vec<(char, u64, usize)> {
            parts
                .iter()
                .map(|part| match part {
                    BodyPart::Bytes(bytes) => ('b', 0, bytes.len()),
                    BodyPart::Buffer { buffer, start, len } => (
                        if Rc::ptr_eq(buffer, &chunk) { 'c' } else { 'o' },
                        *start as u64,
                        *len,
                    ),
                    BodyPart::File { file: f, pos, len } => (
                        if std::sync::Arc::ptr_eq(f, &file) {
                            'f'
                        } else {
                            'g'
                        },
                        *pos,
                        *len,
                    ),
                })
                .collect()
        };
        let total: usize = parts.iter().map(BodyPart::len).sum();
        let merged = coalesce(parts);
        assert_eq!(
            describe(&merged),
            [
                ('c', 0, 160),
                ('c', 200, 10),
                ('o', 210, 10),
                ('b', 0, 4),
                ('o', 220, 10),
                ('f', 0, 1024),
                ('g', 1024, 10),
                ('g', 2000, 10),
            ]
        );
        assert_eq!(merged.iter().map(BodyPart::len).sum::<usize>(), total);
        assert!(coalesce(Vec::new()).is_empty());
    }

    /// Holds every request a while and records how many were being processed at once.
    struct Holding {
        active: Cell<usize>,
        active_max: Cell<usize>,
    }

    impl RequestProcessor for Holding {
        async fn process(&self, _: &ConnectionContext, request: RemotingCommand) -> Option<Reply> {
            self.active.set(self.active.get() + 1);
            self.active_max
                .set(self.active_max.get().max(self.active.get()));
            // Long enough that, unbounded, every pipelined request would be here at once.
            runtime::sleep(Duration::from_millis(20)).await;
            self.active.set(self.active.get() - 1);
            Some(request.success().into())
        }
    }

    /// Pipelines `REQUESTS_PER_CONNECTION` 1 MiB requests and reads every response.
    fn pipeline(addr: SocketAddr) -> usize {
        let mut socket = std::net::TcpStream::connect(addr).unwrap();
        let mut frames = BytesMut::new();
        for opaque in 0..REQUESTS_PER_CONNECTION {
            let request = RemotingCommand::bare_request(10)
                .with_body(vec![7u8; BODY_BYTES])
                .with_opaque(opaque as i32);
            encode(&request, &mut frames).unwrap();
        }
        let mut reader = socket.try_clone().unwrap();
        let writer = std::thread::spawn(move || socket.write_all(&frames).unwrap());
        let mut answered = 0;
        let mut buf = BytesMut::new();
        let mut chunk = [0u8; 4096];
        while answered < REQUESTS_PER_CONNECTION {
            while decode_frame(&mut buf, FRAME_MAX_BYTES).unwrap().is_some() {
                answered += 1;
            }
            if answered < REQUESTS_PER_CONNECTION {
                let n = reader.read(&mut chunk).unwrap();
                assert!(n > 0, "server closed with {answered} answers");
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        writer.join().unwrap();
        answered
    }

    /// Serves with `config`, runs `connections` pipelining clients; returns the most requests
    /// processed at once and the answers received.
    fn run(
        config: impl FnOnce() -> ServerConfig + Send + 'static,
        connections: usize,
    ) -> (usize, usize) {
        run_reactor(ReactorConfig::new("remoting-test"), move || async move {
            let config = config();
            let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let processor = Rc::new(Holding {
                active: Cell::new(0),
                active_max: Cell::new(0),
            });
            let (stop_tx, stop_rx) = runtime::bounded_channel::<()>(1);
            runtime::spawn_detached(crate::remoting::serve(
                listener,
                processor.clone(),
                config,
                async move {
                    let _ = stop_rx.recv().await;
                },
            ));
            let clients: Vec<_> = (0..connections)
                .map(|_| std::thread::spawn(move || pipeline(addr)))
                .collect();
            // Joined off the reactor, which must keep serving them.
            let answered = runtime::spawn_blocking(move || {
                clients
                    .into_iter()
                    .map(|c| c.join().unwrap())
                    .sum::<usize>()
            })
            .await;
            drop(stop_tx);
            (processor.active_max.get(), answered)
        })
        .unwrap()
    }

    #[test]
    fn a_connection_holds_no_more_request_bytes_than_its_budget() {
        let config = || ServerConfig {
            frame_max_bytes: FRAME_MAX_BYTES,
            in_flight_bytes_per_connection_max: 3 * FRAME_MAX_BYTES,
            ..ServerConfig::default()
        };
        let (active_max, answered) = run(config, 1);
        assert_eq!(answered, REQUESTS_PER_CONNECTION);
        // 4.5 MB hold four frames of 1 MiB and a header, not five.
        assert!(
            (1..=4).contains(&active_max),
            "{active_max} requests at once"
        );
    }

    #[test]
    fn connections_share_the_request_memory_budget() {
        let config = || ServerConfig {
            frame_max_bytes: FRAME_MAX_BYTES,
            request_memory: Some(RequestMemory::new(2 * FRAME_MAX_BYTES)),
            ..ServerConfig::default()
        };
        let (active_max, answered) = run(config, 3);
        assert_eq!(answered, 3 * REQUESTS_PER_CONNECTION);
        assert!(
            (1..=2).contains(&active_max),
            "{active_max} requests at once"
        );
    }

    #[test]
    fn a_budget_smaller_than_a_frame_is_refused() {
        let config = ServerConfig {
            frame_max_bytes: FRAME_MAX_BYTES,
            request_memory: Some(RequestMemory::new(FRAME_MAX_BYTES - 1)),
            ..ServerConfig::default()
        };
        let error = config.validate().unwrap_err();
        assert!(error.contains("largest frame"), "{error}");
        let config = ServerConfig {
            frame_max_bytes: FRAME_MAX_BYTES,
            receive_memory: Some(RequestMemory::new(FRAME_MAX_BYTES - 1)),
            ..ServerConfig::default()
        };
        let error = config.validate().unwrap_err();
        assert!(error.contains("receive buffer"), "{error}");
    }

    #[test]
    fn large_frames_are_received_within_the_shared_receive_budget() {
        // Three connections pipelining 1 MiB frames through a receive budget of one frame:
        // each large frame is read only while it holds the budget, and all are answered.
        let config = || ServerConfig {
            frame_max_bytes: FRAME_MAX_BYTES,
            receive_memory: Some(RequestMemory::new(FRAME_MAX_BYTES)),
            ..ServerConfig::default()
        };
        let (_, answered) = run(config, 3);
        assert_eq!(answered, 3 * REQUESTS_PER_CONNECTION);
    }
}
