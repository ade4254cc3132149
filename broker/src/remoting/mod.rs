//! Server side of the wire: accept, frame, dispatch, respond. Shared by the broker and the name
//! server.

pub mod connection;
pub mod server;

pub use connection::{ConnectionContext, RequestProcessor};
pub use server::{serve, ServerConfig};
