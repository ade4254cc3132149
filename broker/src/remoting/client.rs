//! Client side of the wire, for the broker's own calls (registration with name servers, a
//! slave's replication and metadata requests to its master): one connection, one request at a
//! time.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use thruster_protocol::{decode_frame, encode, RemotingCommand, FRAME_MAX_BYTES_DEFAULT};

use crate::runtime::{self, TcpStream};

/// Bytes asked of the socket per read, unless the caller says otherwise.
const READ_CHUNK_BYTES: usize = 16 * 1024;

pub struct RemotingClient {
    addr: SocketAddr,
    stream: TcpStream,
    buf: BytesMut,
    /// Where reads land before they join `buf` (kept between requests).
    chunk: Vec<u8>,
    next_opaque: i32,
}

impl RemotingClient {
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<RemotingClient> {
        Self::connect_with_read_bytes(addr, timeout, READ_CHUNK_BYTES).await
    }

    /// `connect`, reading `read_bytes` at a time (large answers: a slave's log transfers).
    pub async fn connect_with_read_bytes(
        addr: SocketAddr,
        timeout: Duration,
        read_bytes: usize,
    ) -> io::Result<RemotingClient> {
        assert!(read_bytes > 0);
        let stream = runtime::timeout(timeout, runtime::connect(addr))
            .await
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {addr}"))
            })??;
        let _ = runtime::set_nodelay(&stream);
        Ok(RemotingClient {
            addr,
            stream,
            buf: BytesMut::with_capacity(read_bytes),
            chunk: vec![0u8; read_bytes],
            next_opaque: 1,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `request` and waits for its response (frames with other opaques are skipped).
    pub async fn invoke(
        &mut self,
        mut request: RemotingCommand,
        timeout: Duration,
    ) -> io::Result<RemotingCommand> {
        let opaque = self.next_opaque;
        self.next_opaque = self.next_opaque.wrapping_add(1).max(1);
        request.opaque = opaque;
        let addr = self.addr;
        runtime::timeout(timeout, self.round_trip(request))
            .await
            .unwrap_or_else(|| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no response from {addr} within {timeout:?}"),
                ))
            })
    }

    async fn round_trip(&mut self, request: RemotingCommand) -> io::Result<RemotingCommand> {
        let mut out = BytesMut::new();
        encode(&request, &mut out).map_err(|e| io::Error::other(e.to_string()))?;
        self.stream.write_all(&out).await?;
        loop {
            while let Some(frame) = decode_frame(&mut self.buf, FRAME_MAX_BYTES_DEFAULT)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
            {
                let command = frame
                    .into_command()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                if command.is_response() && command.opaque == request.opaque {
                    return Ok(command);
                }
            }
            let n = self.stream.read(&mut self.chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} closed the connection", self.addr),
                ));
            }
            self.buf.extend_from_slice(&self.chunk[..n]);
        }
    }
}
