//! The RocketMQ remoting protocol (`protocol`), the client's runtime-free logic (`core`), and
//! the native client's tokio front end (`tokio`).

pub mod core;
pub mod protocol;
pub mod tokio;
