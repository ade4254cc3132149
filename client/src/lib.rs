//! The RocketMQ remoting protocol (`protocol`), the client's runtime-free logic (`core`), and
//! the native client's tokio front end (`tokio`).

pub mod core;
#[cfg(feature = "glommio")]
pub mod glommio;
pub mod protocol;
pub mod tokio;

/// The README's examples, compiled as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
