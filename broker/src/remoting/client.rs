//! Client side of the wire, for the broker's own calls (registration with name servers): one
//! connection, one request at a time.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use thruster_protocol::{decode_frame, encode, RemotingCommand, FRAME_MAX_BYTES_DEFAULT};

use crate::runtime::{self, TcpStream};

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 16 * 1024;

pub struct RemotingClient {
    addr: SocketAddr,
    stream: TcpStream,
    buf: BytesMut,
    next_opaque: i32,
}

impl RemotingClient {
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<RemotingClient> {
        let stream = runtime::timeout(timeout, runtime::connect(addr))
            .await
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {addr}"))
            })??;
        let _ = runtime::set_nodelay(&stream);
        Ok(RemotingClient {
            addr,
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
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
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
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
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} closed the connection", self.addr),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
