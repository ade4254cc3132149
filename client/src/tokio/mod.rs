//! The native client on tokio: what Rust applications use. One connection per address,
//! multiplexed by opaque; the protocol logic lives in `crate::core`.

pub mod connection;
pub mod error;
pub mod instance;
pub mod message;
pub mod producer;
pub mod pull_consumer;
pub mod push_consumer;

pub use error::{ClientError, ClientResult};
pub use instance::{ClientConfig, ClientInstance};
pub use message::{Message, MessageExt};
pub use producer::{Producer, ProducerConfig, SendResult, SendStatus};
pub use pull_consumer::{PullConsumer, PullResult, PullStatus};
pub use push_consumer::{
    ConsumeFromWhere, ConsumeResult, MessageModel, PushConsumer, PushConsumerConfig,
};
