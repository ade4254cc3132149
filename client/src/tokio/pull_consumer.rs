//! The pull consumer: the application chooses queues and offsets; the consumer fetches and
//! commits offsets on the broker when asked. Also the pull primitive the push consumer uses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::instance::{expect_success, ClientConfig, ClientInstance};
use crate::core::error::ClientResult;
use crate::core::message::MessageView;
use crate::core::requests::{
    parse_pull_response, parse_pull_response_view, pull_request, response_header, PullResult,
};
use crate::protocol::body::heartbeat::MessageQueue;
use crate::protocol::header::offset::{
    GetMaxOffsetRequestHeader, GetMinOffsetRequestHeader, OffsetResponseHeader,
    QueryConsumerOffsetRequestHeader, UpdateConsumerOffsetRequestHeader,
};
use crate::protocol::{request_code as rc, response_code, RemotingCommand};

/// A pull consumer of one group; cheap to clone.
#[derive(Clone)]
pub struct PullConsumer {
    group: String,
    instance: Arc<ClientInstance>,
}

impl PullConsumer {
    pub fn new(group: impl Into<String>, config: ClientConfig) -> PullConsumer {
        PullConsumer::with_instance(group, ClientInstance::new(config))
    }

    pub fn with_instance(group: impl Into<String>, instance: Arc<ClientInstance>) -> PullConsumer {
        PullConsumer {
            group: group.into(),
            instance,
        }
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// The topic's readable queues, sorted.
    pub async fn queues(&self, topic: &str) -> ClientResult<Vec<MessageQueue>> {
        Ok(self.instance.route(topic).await?.subscribe_queues)
    }

    /// The broker of `queue`, or the shard that owns it there.
    async fn addr(&self, queue: &MessageQueue) -> ClientResult<SocketAddr> {
        let broker = self
            .instance
            .reader_addr(&queue.topic, &queue.broker_name)
            .await?;
        Ok(self.instance.queue_addr(broker, queue).await)
    }

    fn timeout(&self) -> Duration {
        self.instance.config.request_timeout
    }

    /// Pulls up to `max` messages matching `expression` (`*` or `tagA || tagB`) from `offset`.
    /// With `suspend`, the broker holds the request up to that long when nothing is there.
    pub async fn pull(
        &self,
        queue: &MessageQueue,
        expression: &str,
        offset: i64,
        max: i32,
        suspend: Option<Duration>,
    ) -> ClientResult<PullResult> {
        self.pull_committing(queue, expression, offset, max, suspend, None)
            .await
    }

    /// `pull`, also committing `commit_offset` for the group (clustering consumers do this).
    pub async fn pull_committing(
        &self,
        queue: &MessageQueue,
        expression: &str,
        offset: i64,
        max: i32,
        suspend: Option<Duration>,
        commit_offset: Option<i64>,
    ) -> ClientResult<PullResult> {
        let (addr, response) = self
            .invoke_pull(queue, expression, offset, max, suspend, commit_offset)
            .await?;
        parse_pull_response(addr, response, expression)
    }

    /// `pull` with the messages read in place (`MessageView`: no allocation per message,
    /// fields decoded on demand), for bulk consumers.
    pub async fn pull_view(
        &self,
        queue: &MessageQueue,
        expression: &str,
        offset: i64,
        max: i32,
        suspend: Option<Duration>,
    ) -> ClientResult<PullResult<MessageView>> {
        let (addr, response) = self
            .invoke_pull(queue, expression, offset, max, suspend, None)
            .await?;
        parse_pull_response_view(addr, response, expression)
    }

    async fn invoke_pull(
        &self,
        queue: &MessageQueue,
        expression: &str,
        offset: i64,
        max: i32,
        suspend: Option<Duration>,
        commit_offset: Option<i64>,
    ) -> ClientResult<(SocketAddr, RemotingCommand)> {
        let suspend_ms = suspend.map_or(0, |d| d.as_millis() as i64);
        let request = pull_request(
            &self.group,
            queue,
            expression,
            offset,
            max,
            suspend_ms,
            commit_offset,
        );
        let addr = self.addr(queue).await?;
        let timeout = self.timeout() + suspend.unwrap_or_default();
        let response = self.instance.invoke(addr, request, timeout).await?;
        Ok((addr, response))
    }

    /// The group's committed offset for `queue`; `None` when it never committed one.
    pub async fn fetch_offset(&self, queue: &MessageQueue) -> ClientResult<Option<i64>> {
        let request = RemotingCommand::request(
            rc::QUERY_CONSUMER_OFFSET,
            &QueryConsumerOffsetRequestHeader {
                consumer_group: self.group.clone(),
                topic: queue.topic.clone(),
                queue_id: queue.queue_id,
                set_zero_if_not_found: None,
                broker_name: Some(queue.broker_name.clone()),
            },
        );
        let addr = self.addr(queue).await?;
        let response = self.instance.invoke(addr, request, self.timeout()).await?;
        if response.code == response_code::QUERY_NOT_FOUND {
            return Ok(None);
        }
        let response = expect_success(addr, response)?;
        Ok(Some(offset_header(addr, &response)?))
    }

    /// Commits the group's offset for `queue` (the next offset to consume).
    pub async fn commit_offset(&self, queue: &MessageQueue, offset: i64) -> ClientResult<()> {
        let request = RemotingCommand::request(
            rc::UPDATE_CONSUMER_OFFSET,
            &UpdateConsumerOffsetRequestHeader {
                consumer_group: self.group.clone(),
                topic: queue.topic.clone(),
                queue_id: queue.queue_id,
                commit_offset: offset,
                broker_name: Some(queue.broker_name.clone()),
            },
        );
        let addr = self.addr(queue).await?;
        expect_success(
            addr,
            self.instance.invoke(addr, request, self.timeout()).await?,
        )?;
        Ok(())
    }

    /// The queue's next offset to be written.
    pub async fn max_offset(&self, queue: &MessageQueue) -> ClientResult<i64> {
        let request = RemotingCommand::request(
            rc::GET_MAX_OFFSET,
            &GetMaxOffsetRequestHeader {
                topic: queue.topic.clone(),
                queue_id: queue.queue_id,
                committed: None,
                broker_name: Some(queue.broker_name.clone()),
            },
        );
        self.ask_offset(queue, request).await
    }

    /// The queue's first readable offset.
    pub async fn min_offset(&self, queue: &MessageQueue) -> ClientResult<i64> {
        let request = RemotingCommand::request(
            rc::GET_MIN_OFFSET,
            &GetMinOffsetRequestHeader {
                topic: queue.topic.clone(),
                queue_id: queue.queue_id,
                broker_name: Some(queue.broker_name.clone()),
            },
        );
        self.ask_offset(queue, request).await
    }

    /// Sends `request` to `queue`'s broker (or shard) and reads the `offset` it answers.
    async fn ask_offset(
        &self,
        queue: &MessageQueue,
        request: RemotingCommand,
    ) -> ClientResult<i64> {
        let addr = self.addr(queue).await?;
        let response = expect_success(
            addr,
            self.instance.invoke(addr, request, self.timeout()).await?,
        )?;
        offset_header(addr, &response)
    }
}

fn offset_header(addr: SocketAddr, response: &RemotingCommand) -> ClientResult<i64> {
    response_header::<OffsetResponseHeader>(addr, response).map(|h| h.offset)
}
