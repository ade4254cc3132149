//! The native client on tokio: what Rust applications use. One connection per address,
//! multiplexed by opaque; the protocol logic lives in `crate::core`.

pub mod connection;
pub mod instance;
pub mod producer;
pub mod pull_consumer;
pub mod push_consumer;
pub mod transaction_producer;

pub use crate::core::error::{ClientError, ClientResult};
pub use crate::core::message::{Message, MessageExt};
pub use crate::core::requests::{PullResult, PullStatus, SendResult, SendStatus};
pub use instance::{ClientConfig, ClientInstance};
pub use producer::{Producer, ProducerConfig};
pub use pull_consumer::PullConsumer;
pub use push_consumer::{
    ConsumeFromWhere, ConsumeResult, MessageModel, PushConsumer, PushConsumerConfig,
};
pub use transaction_producer::{LocalTransactionState, TransactionProducer, TransactionSendResult};
