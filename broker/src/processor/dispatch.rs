//! Where each request is served: `BrokerProcessor` as the connection's `RequestProcessor` and
//! the mesh's `CallHandler`. A request is served here, on the queue's owner (one hop there and
//! one back), on shard 0 for the topic table, or on every shard; then the handler in a sibling
//! module serves it. The handlers take `BrokerProcessor` from `processor` (mod.rs), not from
//! here, so no handler and this router import each other.

use thruster_protocol::body::TopicConfig;
use thruster_protocol::{request_code as rc, response_code, RemotingCommand};
use tracing::warn;

use super::{
    admin, broker_config, client_manage, consumer_calls, groups, inspect, maintenance, offsets,
    pull, query, reply, runtime_info, schedule, send, stats_data, transaction,
};
use super::{notify_consumer_ids_changed, BrokerProcessor, Handled};
use crate::remoting::{ConnectionContext, Failure, Reply, RequestProcessor};
use crate::runtime;
use crate::shard::{Call, CallHandler, CallReply, SendReply};
use crate::store::config::shard_of_offset;

impl RequestProcessor for BrokerProcessor {
    async fn process(
        &self,
        context: &ConnectionContext,
        request: RemotingCommand,
    ) -> Option<Reply> {
        let shard = &self.shard;
        if shard.is_stopping() {
            return Some(
                request
                    .error(
                        response_code::SERVICE_NOT_AVAILABLE,
                        "the broker is shutting down",
                    )
                    .into(),
            );
        }
        if let Err(refusal) = check_acl(shard, context, &request) {
            return Some(refusal.into());
        }
        shard.in_flight.set(shard.in_flight.get() + 1);
        let started = std::time::Instant::now();
        let result = self.route(context, &request).await;
        let answer_code = match &result {
            Ok(reply) => reply.command.code,
            Err(failure) => failure.code,
        };
        shard.meter.borrow_mut().request(
            request.code,
            is_failure(answer_code),
            started.elapsed().as_micros() as u64,
        );
        let remaining = shard.in_flight.get() - 1;
        shard.in_flight.set(remaining);
        if remaining == 0 {
            shard
                .in_flight_drained
                .advance(shard.in_flight_drained.get() + 1);
        }
        match result {
            Ok(reply) => Some(reply),
            Err(failure) => {
                if failure.code == response_code::SYSTEM_ERROR {
                    warn!(peer = %context.peer, code = request.code, remark = %failure.remark, "request failed");
                }
                Some(request.error(failure.code, failure.remark).into())
            }
        }
    }

    fn response_arrived(&self, context: &ConnectionContext, response: RemotingCommand) {
        consumer_calls::answer_arrived(&self.shard, context.id, response);
    }

    fn connection_opened(&self, _context: &ConnectionContext) {
        let open = &self.shard.open_connections;
        open.set(open.get() + 1);
    }

    fn connection_closed(&self, context: &ConnectionContext) {
        let open = &self.shard.open_connections;
        open.set(open.get().saturating_sub(1));
        let was_client = self
            .shard
            .connections
            .borrow_mut()
            .remove(&context.id)
            .is_some();
        if was_client {
            let event = crate::meta::clients::ClientEvent::Closed {
                conn: client_manage::conn_key(&self.shard, context),
            };
            let shard = self.shard.clone();
            let processor = BrokerProcessor {
                shard: shard.clone(),
            };
            runtime::spawn_detached(async move {
                client_manage::publish(&processor, event).await;
            });
        }
    }
}

/// The ACL check (`aclEnable`), once per request, on the shard that decoded it: a refusal is
/// NO_PERMISSION with the reason, before any handler runs.
fn check_acl(
    shard: &crate::shard::Shard,
    context: &ConnectionContext,
    request: &RemotingCommand,
) -> Result<(), RemotingCommand> {
    let Some(rules) = shard.acl.borrow().clone() else {
        return Ok(());
    };
    crate::acl::check(&rules, request, context.peer.ip()).map_err(|remark| {
        warn!(peer = %context.peer, code = request.code, %remark, "request refused by ACL");
        request.error(response_code::NO_PERMISSION, remark)
    })
}

/// Whether an answer reports a failure (for the error counters): a pull that found nothing
/// yet, or was told to retry or move, is not one.
fn is_failure(code: i32) -> bool {
    !matches!(
        code,
        response_code::SUCCESS
            | response_code::PULL_NOT_FOUND
            | response_code::PULL_RETRY_IMMEDIATELY
            | response_code::PULL_OFFSET_MOVED
            | response_code::QUERY_NOT_FOUND
    )
}

impl CallHandler for BrokerProcessor {
    async fn handle_call(&self, call: Call) -> CallReply {
        match call {
            Call::Remoting {
                request,
                peer,
                topic,
            } => {
                if let Some(topic) = topic {
                    let mut topics = self.shard.topics.borrow_mut();
                    if topics.get(&topic.topic_name).is_none() {
                        topics.upsert(topic, runtime::now_ms());
                    }
                }
                let reply = match self.serve_owned(&request, peer).await {
                    Ok(reply) => reply,
                    Err(failure) => request.error(failure.code, failure.remark).into(),
                };
                CallReply::Remoting(Some(SendReply::from_reply(reply)))
            }
            Call::AutoCreateTopic {
                topic,
                template,
                queue_nums,
            } => CallReply::Topic(
                admin::auto_create_topic(self, &topic, &template, queue_nums).await,
            ),
            Call::UpsertTopic(config) => CallReply::Topic(admin::upsert_topic(self, config).await),
            Call::UpsertGroup { config, if_absent } => {
                CallReply::Group(groups::upsert_here(self, config, if_absent).await)
            }
            Call::DeleteGroup(group) => CallReply::Group(groups::delete_here(self, &group).await),
            Call::Offsets(work) => inspect::offsets_here(&self.shard, work),
            Call::QueueStates { topic, group } => CallReply::QueueStates(
                inspect::queue_states_here(self, &topic, group.as_deref()).await,
            ),
            Call::ResetOffsets {
                topic,
                group,
                timestamp,
                force,
            } => CallReply::Offsets(
                inspect::reset_offsets_here(self, &topic, &group, timestamp, force).await,
            ),
            Call::DeleteTopic(topic) => {
                CallReply::Done(admin::delete_topic_here(self, &topic).await)
            }
            Call::QueryByKey {
                topic,
                key,
                max_num,
                begin_ms,
                end_ms,
            } => query::query_local(&self.shard, &topic, &key, max_num, begin_ms, end_ms).await,
            Call::Stats => {
                let mut stats = self.shard.stats();
                stats.schedule_progress = schedule::progress(&self.shard);
                CallReply::Stats(Box::new(stats))
            }
            Call::StatsItem { name, key } => {
                CallReply::StatsItem(stats_data::item_here(&self.shard, &name, &key))
            }
            Call::Put(message) => CallReply::Put(self.shard.store.put(message).await),
            Call::QueueLocks {
                group,
                client_id,
                queues,
                unlock,
            } => client_manage::queue_locks_here(&self.shard, &group, &client_id, &queues, unlock),
            Call::Barrier => CallReply::Done(Ok(())),
            Call::DeleteExpiredFiles => {
                CallReply::Done(maintenance::delete_expired_here(&self.shard).await)
            }
            Call::DeleteTopicQueues(topic) => {
                CallReply::Done(maintenance::delete_topic_queues_here(&self.shard, &topic).await)
            }
            Call::CleanUnusedTopics => {
                CallReply::Done(maintenance::clean_unused_topics_here(&self.shard).await)
            }
            Call::AskConnection { id, command } => CallReply::ClientAnswer(
                consumer_calls::ask_local_connection(&self.shard, id, command).await,
            ),
            Call::ToConnection { id, command } => {
                CallReply::Delivered(super::send_to_local_connection(&self.shard, id, command))
            }
        }
    }

    fn client_groups_changed(&self, changed: Vec<String>) {
        notify_consumer_ids_changed(&self.shard, &changed);
    }
}

/// Requests that store messages (refused by a slave).
fn stores_messages(code: i32) -> bool {
    matches!(
        code,
        rc::SEND_MESSAGE
            | rc::SEND_MESSAGE_V2
            | rc::SEND_BATCH_MESSAGE
            | rc::CONSUMER_SEND_MSG_BACK
            | rc::END_TRANSACTION
            | rc::SEND_REPLY_MESSAGE
            | rc::SEND_REPLY_MESSAGE_V2
    )
}

impl BrokerProcessor {
    async fn route(&self, context: &ConnectionContext, request: &RemotingCommand) -> Handled {
        if self.shard.ha.slave().is_some() && stores_messages(request.code) {
            // As a RocketMQ slave answers: clients send to masters only.
            let code = match request.code {
                rc::END_TRANSACTION => response_code::SLAVE_NOT_AVAILABLE,
                _ => response_code::SERVICE_NOT_AVAILABLE,
            };
            return Err(Failure::new(
                code,
                format!(
                    "the broker[{}] is a slave: messages are put to its master only",
                    self.shard.broker_name
                ),
            ));
        }
        match request.code {
            rc::SEND_MESSAGE | rc::SEND_MESSAGE_V2 | rc::SEND_BATCH_MESSAGE => {
                send::route(self, context, request).await
            }
            rc::PULL_MESSAGE
            | rc::LITE_PULL_MESSAGE
            | rc::QUERY_CONSUMER_OFFSET
            | rc::UPDATE_CONSUMER_OFFSET
            | rc::GET_MAX_OFFSET
            | rc::GET_MIN_OFFSET
            | rc::SEARCH_OFFSET_BY_TIMESTAMP
            | rc::GET_EARLIEST_MSG_STORETIME
            | rc::QUERY_CONSUME_QUEUE => {
                // All these headers name the queue with `topic` and `queueId`.
                let topic = request.ext_fields.get("topic").unwrap_or_default();
                let queue_id: i32 = request
                    .ext_fields
                    .get("queueId")
                    .and_then(|q| q.trim().parse().ok())
                    .ok_or_else(|| Failure::system("the custom field <queueId> is null"))?;
                let owner = self.shard.owner_of(topic, queue_id);
                self.on_shard(owner, request, context, None).await
            }
            rc::VIEW_MESSAGE_BY_ID | rc::CONSUMER_SEND_MSG_BACK => {
                let offset: i64 = request
                    .ext_fields
                    .get("offset")
                    .and_then(|o| o.trim().parse().ok())
                    .ok_or_else(|| Failure::system("the custom field <offset> is null"))?;
                let owner = usize::from(shard_of_offset(offset.max(0) as u64));
                if owner >= self.shard.count {
                    return Err(Failure::system(format!(
                        "can not find message by the offset, {offset}"
                    )));
                }
                self.on_shard(owner, request, context, None).await
            }
            rc::END_TRANSACTION => {
                // Served where the named half record is stored.
                let offset = transaction::decision_owner(request)?;
                let owner = usize::from(shard_of_offset(offset));
                if owner >= self.shard.count {
                    return Err(Failure::system(format!(
                        "Find prepared transaction message failed: no shard holds offset {offset}"
                    )));
                }
                self.on_shard(owner, request, context, None).await
            }
            rc::SEND_REPLY_MESSAGE | rc::SEND_REPLY_MESSAGE_V2 => {
                reply::send_reply(self, context, request).await
            }
            rc::QUERY_MESSAGE => query::query_message(self, request).await,
            rc::HEART_BEAT => client_manage::heartbeat(self, context, request).await,
            rc::UNREGISTER_CLIENT => client_manage::unregister(self, context, request).await,
            rc::GET_CONSUMER_LIST_BY_GROUP => client_manage::consumer_list(self, request),
            rc::CHECK_CLIENT_CONFIG => client_manage::check_client_config(request),
            rc::LOCK_BATCH_MQ => client_manage::lock_batch(self, request, false).await,
            rc::UNLOCK_BATCH_MQ => client_manage::lock_batch(self, request, true).await,
            rc::UPDATE_AND_CREATE_TOPIC => admin::update_and_create_topic(self, request).await,
            rc::GET_ALL_TOPIC_CONFIG => admin::all_topic_config(self, request),
            rc::GET_ALL_CONSUMER_OFFSET => offsets::all_consumer_offsets(self, request),
            rc::GET_ALL_DELAY_OFFSET => offsets::all_delay_offsets(self, request),
            rc::GET_BROKER_RUNTIME_INFO => runtime_info::runtime_info(self, request).await,
            rc::DELETE_TOPIC_IN_BROKER => admin::delete_topic(self, request).await,
            rc::GET_BROKER_CONFIG => broker_config::get(self, request),
            rc::UPDATE_BROKER_CONFIG => broker_config::update(self, request).await,
            rc::GET_TOPIC_STATS_INFO => inspect::topic_stats(self, request).await,
            rc::GET_CONSUME_STATS => inspect::consume_stats(self, request).await,
            rc::GET_BROKER_CONSUME_STATS => inspect::broker_consume_stats(self, request).await,
            rc::QUERY_CONSUME_TIME_SPAN => inspect::consume_time_span(self, request).await,
            rc::GET_CONSUMER_CONNECTION_LIST => inspect::consumer_connections(self, request),
            rc::GET_PRODUCER_CONNECTION_LIST => inspect::producer_connections(self, request),
            rc::GET_ALL_PRODUCER_INFO => inspect::all_producers(self, request),
            rc::QUERY_TOPIC_CONSUME_BY_WHO => inspect::consumed_by(self, request).await,
            rc::INVOKE_BROKER_TO_RESET_OFFSET => inspect::reset_offset(self, request).await,
            rc::INVOKE_BROKER_TO_GET_CONSUMER_STATUS => {
                consumer_calls::consumer_status(self, request).await
            }
            rc::GET_CONSUMER_RUNNING_INFO => consumer_calls::running_info(self, request).await,
            rc::CONSUME_MESSAGE_DIRECTLY => consumer_calls::consume_directly(self, request).await,
            rc::DELETE_EXPIRED_COMMITLOG | rc::CLEAN_EXPIRED_CONSUMEQUEUE => {
                maintenance::delete_expired(self, request).await
            }
            rc::CLEAN_UNUSED_TOPIC => maintenance::clean_unused_topics(self, request).await,
            rc::VIEW_BROKER_STATS_DATA => stats_data::view(self, request).await,
            rc::CLONE_GROUP_OFFSET => inspect::clone_group_offset(self, request).await,
            rc::GET_SYSTEM_TOPIC_LIST_FROM_BROKER => inspect::system_topics(self, request),
            rc::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP => {
                groups::update_and_create(self, request).await
            }
            rc::GET_ALL_SUBSCRIPTIONGROUP_CONFIG => groups::all(self, request),
            rc::DELETE_SUBSCRIPTIONGROUP => groups::delete(self, request).await,
            rc::GET_SUBSCRIPTIONGROUP_CONFIG => groups::one(self, request),
            code => Err(Failure::new(
                response_code::REQUEST_CODE_NOT_SUPPORTED,
                format!("request type {code} not supported"),
            )),
        }
    }

    /// Serves `request` on shard `owner`: here, or with one hop there and one back.
    pub async fn on_shard(
        &self,
        owner: usize,
        request: &RemotingCommand,
        context: &ConnectionContext,
        topic: Option<TopicConfig>,
    ) -> Handled {
        if owner == self.shard.id {
            return self.serve_owned(request, context.peer).await;
        }
        let call = Call::Remoting {
            request: request.clone(),
            peer: context.peer,
            topic,
        };
        match self.shard.call(self, owner, call).await {
            CallReply::Remoting(Some(reply)) => Ok(reply.into_reply()),
            CallReply::Remoting(None) => Ok(request.success().into()),
            _ => Err(Failure::new(
                response_code::SERVICE_NOT_AVAILABLE,
                format!("shard {owner} is not available"),
            )),
        }
    }

    /// Requests about queues (or CommitLog offsets) this shard owns.
    async fn serve_owned(&self, request: &RemotingCommand, peer: std::net::SocketAddr) -> Handled {
        match request.code {
            rc::SEND_MESSAGE | rc::SEND_MESSAGE_V2 | rc::SEND_BATCH_MESSAGE => {
                send::store_owned(self, request, peer).await
            }
            rc::PULL_MESSAGE | rc::LITE_PULL_MESSAGE => pull::pull_owned(self, request).await,
            rc::QUERY_CONSUMER_OFFSET => offsets::query_consumer_offset(self, request),
            rc::UPDATE_CONSUMER_OFFSET => offsets::update_consumer_offset(self, request),
            rc::GET_MAX_OFFSET => offsets::max_offset(self, request),
            rc::GET_MIN_OFFSET => offsets::min_offset(self, request),
            rc::SEARCH_OFFSET_BY_TIMESTAMP => offsets::search_by_timestamp(self, request).await,
            rc::GET_EARLIEST_MSG_STORETIME => offsets::earliest_store_time(self, request).await,
            rc::QUERY_CONSUME_QUEUE => inspect::query_consume_queue(self, request),
            rc::VIEW_MESSAGE_BY_ID => query::view_message_by_id(self, request).await,
            rc::CONSUMER_SEND_MSG_BACK => schedule::send_back(self, request).await,
            rc::END_TRANSACTION => transaction::end_owned(self, request).await,
            code => Err(Failure::system(format!("request {code} has no owner"))),
        }
    }
}
