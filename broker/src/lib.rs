//! Thruster broker and name server.

pub mod logging;
pub mod namesrv;
pub mod remoting;
pub mod runtime;
pub mod store;
