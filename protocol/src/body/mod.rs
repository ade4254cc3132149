//! JSON bodies (fastjson-shaped: properties in alphabetical order, nulls omitted, compact).
//!
//! Every struct declares its fields in the alphabetical order of their wire names, so serde's
//! output has the property order fastjson gives. Reading is lenient: unknown properties are
//! ignored, missing ones take defaults, and fastjson's bare keys are accepted
//! ([`decode_lenient`]).

pub mod admin;
pub mod codec;
pub mod heartbeat;
pub mod lenient;
pub mod offsets;
pub mod route;
pub mod running_info;
pub mod subscription_group;
pub mod topic_config;

pub use codec::{decode_lenient, encode, BodyError};
pub use heartbeat::*;
pub use offsets::*;
pub use route::*;
pub use subscription_group::*;
pub use topic_config::*;
