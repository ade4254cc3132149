//! One blocking connection to a name server or broker: a request out, its response back
//! (matched by opaque; server-initiated frames are skipped), with a deadline.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use thruster_protocol::acl::{sign, SessionCredentials};
use thruster_protocol::{decode_frame, encode, RemotingCommand, FRAME_MAX_BYTES_DEFAULT};

use crate::AdminError;

/// How long a connection attempt and each response may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The ACL account every request is signed with (`--accessKey`/`--secretKey`): one per run
/// of the command, set once before any request, so it is not threaded through every command.
static CREDENTIALS: OnceLock<SessionCredentials> = OnceLock::new();

/// Signs every request from now on with `credentials`.
pub fn sign_with(credentials: SessionCredentials) {
    let _ = CREDENTIALS.set(credentials);
}

pub struct Remote {
    addr: String,
    stream: TcpStream,
    buf: BytesMut,
    next_opaque: i32,
}

impl Remote {
    pub fn connect(addr: &str) -> Result<Remote, AdminError> {
        let unreachable = |e: io::Error| {
            AdminError(format!(
                "can not connect to {addr}: {e} (is the server running, and is the address right?)"
            ))
        };
        let socket: SocketAddr = addr
            .to_socket_addrs()
            .map_err(unreachable)?
            .next()
            .ok_or_else(|| AdminError(format!("{addr} resolves to no address")))?;
        let stream = TcpStream::connect_timeout(&socket, TIMEOUT).map_err(unreachable)?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .map_err(unreachable)?;
        Ok(Remote {
            addr: addr.to_owned(),
            stream,
            buf: BytesMut::new(),
            next_opaque: 1,
        })
    }

    /// Sends `request`, returns its response (whatever its code).
    pub fn invoke(&mut self, mut request: RemotingCommand) -> Result<RemotingCommand, AdminError> {
        let failed =
            |e: &dyn std::fmt::Display| AdminError(format!("talking to {}: {e}", self.addr));
        request.opaque = self.next_opaque;
        self.next_opaque += 1;
        if let Some(credentials) = CREDENTIALS.get() {
            sign(&mut request, credentials);
        }
        let mut wire = BytesMut::new();
        encode(&request, &mut wire).map_err(|e| failed(&e))?;
        self.stream.write_all(&wire).map_err(|e| failed(&e))?;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            while let Some(frame) =
                decode_frame(&mut self.buf, FRAME_MAX_BYTES_DEFAULT).map_err(|e| failed(&e))?
            {
                let command = frame.into_command().map_err(|e| failed(&e))?;
                if command.is_response() && command.opaque == request.opaque {
                    return Ok(command);
                }
            }
            if Instant::now() > deadline {
                return Err(failed(&"no response within 10 s"));
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(failed(&"the connection closed before the response")),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(failed(&e)),
            }
        }
    }

    /// `invoke` that turns a non-SUCCESS answer into an error naming the request.
    pub fn call(
        &mut self,
        request: RemotingCommand,
        what: &str,
    ) -> Result<RemotingCommand, AdminError> {
        let response = self.invoke(request)?;
        if response.code != thruster_protocol::response_code::SUCCESS {
            let hint = match (response.code, CREDENTIALS.get()) {
                (thruster_protocol::response_code::NO_PERMISSION, None) => {
                    " (the broker checks ACL: give --accessKey and --secretKey)"
                }
                _ => "",
            };
            return Err(AdminError(format!(
                "{what} at {}: code {} {}{hint}",
                self.addr,
                response.code,
                response.remark.unwrap_or_default()
            )));
        }
        Ok(response)
    }
}
