//! A shard: one reactor's share of the broker. It owns some (topic, queue) partitions
//! (`owner_of`, shared with the client), their CommitLog shard, ConsumeQueues, consumer offsets and
//! long-poll waiters; it holds read-only copies of the topic table (written by shard 0) and
//! of the client table (replicated by events).
//!
//! Cross-shard work is an explicit hop over the mesh: a `Call` to the owner and a `CallReply`
//! back, both `Send` values. Nothing on the send or pull path is shared behind a lock.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use thruster_protocol::body::heartbeat::MessageQueue;
use thruster_protocol::body::{SubscriptionGroupConfig, TopicConfig};
use thruster_protocol::RemotingCommand;
use tracing::{debug, warn};

pub use thruster_protocol::shard::owner_of;

use crate::acl::config::AclRules;
use crate::config::BrokerConfig;
use crate::ha::state::{MasterAddrs, ShardHa};
use crate::live_config::LiveSettings;
use crate::meta::clients::{ClientEvent, ClientTable};
use crate::meta::consumer_offset::ConsumerOffsets;
use crate::meta::queue_locks::QueueLocks;
use crate::meta::subscription_group::SubscriptionGroupTable;
use crate::meta::topic_config::{ShardView, TopicDeltas, TopicTable};
use crate::meta::transactions::TransactionTable;
use crate::remoting::{BodyPart, Failure, Reply};
use crate::runtime::tasks::TaskRegistry;
use crate::runtime::watermark::Watermark;
use crate::runtime::{self, LocalSender, MeshReceiver, MeshSenders};
use crate::stats::{MeterSnapshot, ShardMeter};
use crate::store::MessageStore;

/// Messages one mesh channel holds; a sender waits beyond it (bounded, like everything else).
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

/// A reply part that can cross threads: in-memory chunks are copied into `Bytes` when a reply
/// leaves its shard; file ranges cross as they are (the file handle is shared).
#[derive(Debug, Clone)]
pub enum SendPart {
    Bytes(Bytes),
    File {
        file: Arc<std::fs::File>,
        pos: u64,
        len: usize,
    },
}

/// A response on its way back to the shard serving the connection.
#[derive(Debug)]
pub struct SendReply {
    pub command: RemotingCommand,
    pub tail: Vec<SendPart>,
}

impl SendReply {
    pub fn from_reply(reply: Reply) -> SendReply {
        let tail = reply
            .tail
            .into_iter()
            .map(|part| match part {
                BodyPart::Bytes(bytes) => SendPart::Bytes(bytes),
                BodyPart::Buffer { buffer, start, len } => SendPart::Bytes(Bytes::copy_from_slice(
                    &buffer.as_bytes()[start..start + len],
                )),
                BodyPart::File { file, pos, len } => SendPart::File { file, pos, len },
            })
            .collect();
        SendReply {
            command: reply.command,
            tail,
        }
    }

    pub fn into_reply(self) -> Reply {
        let tail = self
            .tail
            .into_iter()
            .map(|part| match part {
                SendPart::Bytes(bytes) => BodyPart::Bytes(bytes),
                SendPart::File { file, pos, len } => BodyPart::File { file, pos, len },
            })
            .collect();
        Reply {
            command: self.command,
            tail,
        }
    }
}

/// Work one shard asks of another.
#[derive(Debug)]
pub enum Call {
    /// A client request about a queue (or CommitLog offset) the receiver owns. `topic` is the
    /// config the sender routed with, so the owner can serve a just-created topic even if
    /// shard 0's broadcast has not reached it yet.
    Remoting {
        request: RemotingCommand,
        peer: SocketAddr,
        topic: Option<TopicConfig>,
    },
    /// Create a topic from a template, as a send to a missing topic does (shard 0 only).
    AutoCreateTopic {
        topic: String,
        template: String,
        queue_nums: i32,
    },
    /// Create or replace a topic (shard 0 only).
    UpsertTopic(TopicConfig),
    /// Create or replace a subscription group; with `if_absent`, keep one that exists (a
    /// heartbeat's auto-creation never overwrites an operator's config). Shard 0 only.
    UpsertGroup {
        config: SubscriptionGroupConfig,
        if_absent: bool,
    },
    /// Delete a subscription group (shard 0 only).
    DeleteGroup(String),
    /// Committed offsets on the receiver, for admin requests.
    Offsets(OffsetAdmin),
    /// The state of the receiver's queues of a topic (and a group's progress in them).
    QueueStates {
        topic: String,
        group: Option<String>,
    },
    /// Where a group's offsets in the receiver's queues of a topic go for a reset to
    /// `timestamp` (−1: the queues' ends); `force` moves them forward too.
    ResetOffsets {
        topic: String,
        group: String,
        timestamp: i64,
        force: bool,
    },
    /// Delete a topic (shard 0 only).
    DeleteTopic(String),
    /// Delete expired files now (`Done`).
    DeleteExpiredFiles,
    /// Nothing to do: answered `Done`, which says every message sent to the receiver before
    /// it was applied (the mesh keeps order between two shards, and table changes are applied
    /// as they are received). See [`Shard::broadcast_applied`].
    Barrier,
    /// Delete the receiver's ConsumeQueues of a deleted topic (`Done`, once the files are
    /// gone).
    DeleteTopicQueues(String),
    /// Delete the receiver's ConsumeQueues of every topic not in its copy of the topic table,
    /// system topics aside (`Done`).
    CleanUnusedTopics,
    /// Stored records matching a key in the receiver's index.
    QueryByKey {
        topic: String,
        key: String,
        max_num: usize,
        begin_ms: i64,
        end_ms: i64,
    },
    /// The receiver's counters.
    Stats,
    /// One of the receiver's stats items (VIEW_BROKER_STATS_DATA): its name and key.
    StatsItem { name: String, key: String },
    /// Store a message in a queue the receiver owns (delayed delivery, retries).
    Put(crate::store::PutMessage),
    /// LOCK_BATCH_MQ (`unlock` false) or UNLOCK_BATCH_MQ (shard 0 only).
    QueueLocks {
        group: String,
        client_id: String,
        queues: std::collections::BTreeSet<MessageQueue>,
        unlock: bool,
    },
    /// Send a request (one-way) to one of the receiver's connections: a transaction check
    /// or a reply for a client connected there.
    ToConnection { id: u64, command: RemotingCommand },
    /// Send a request to one of the receiver's client connections and wait for its answer
    /// (`ClientAnswer`).
    AskConnection { id: u64, command: RemotingCommand },
}

/// Admin work on a shard's committed offsets.
#[derive(Debug)]
pub enum OffsetAdmin {
    /// Forget every offset of a group (answered `Done`).
    RemoveGroup(String),
    /// Topics a group has offsets for (`Names`).
    TopicsOfGroup(String),
    /// Groups with offsets for a topic (`Names`).
    GroupsOfTopic(String),
    /// Copy a group's offsets to another group (`Done`).
    Clone {
        src: String,
        dest: String,
        topic: Option<String>,
    },
}

/// One queue as admin requests see it (GET_TOPIC_STATS_INFO, GET_CONSUME_STATS,
/// QUERY_CONSUME_TIME_SPAN).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueState {
    /// The id clients know the queue by on this shard's broker.
    pub queue_id: i32,
    pub min_offset: i64,
    pub max_offset: i64,
    /// Store time of the first and the last message (0 when empty).
    pub first_store_ms: i64,
    pub last_store_ms: i64,
    /// The group's committed offset, and the store time of the message before it.
    pub consumer_offset: Option<i64>,
    pub consumed_store_ms: i64,
}

#[derive(Debug)]
pub enum CallReply {
    Remoting(Option<SendReply>),
    Topic(Result<TopicConfig, Failure>),
    /// The group as stored after an upsert (`None` after a delete).
    Group(Result<Option<SubscriptionGroupConfig>, Failure>),
    Names(std::collections::BTreeSet<String>),
    QueueStates(Vec<QueueState>),
    /// (queue id, offset) per queue.
    Offsets(Result<Vec<(i32, i64)>, Failure>),
    Done(Result<(), Failure>),
    Records {
        records: Vec<Bytes>,
        index_last_update_ms: i64,
        index_last_update_offset: u64,
    },
    Stats(Box<ShardStats>),
    /// A stats item's minute, hour and day (`None`: the receiver has no such item).
    StatsItem(Option<crate::stats::windows::ItemFigures>),
    Locked(std::collections::BTreeSet<MessageQueue>),
    Put(crate::store::PutResult),
    /// Whether a `ToConnection` request was queued on the connection.
    Delivered(bool),
    /// A client's answer to `AskConnection`.
    ClientAnswer(Result<RemotingCommand, Failure>),
    /// The target shard is gone (shutting down).
    Unavailable,
}

/// What one shard reports for GET_BROKER_RUNTIME_INFO and the metrics endpoint; readers add
/// the shards' up ([`ShardStats::add`]) or list them per shard.
#[derive(Debug, Clone, Default)]
pub struct ShardStats {
    pub shard: usize,
    /// Every record the store took (client sends, retries, delayed deliveries).
    pub put_messages: u64,
    pub put_bytes: u64,
    pub hops_out: u64,
    pub pull_file_bytes: u64,
    /// Queues with a parked pull or delivery loop waiting on them.
    pub queues_waited_on: u64,
    pub commit_log_min_offset: u64,
    pub commit_log_max_offset: u64,
    /// CommitLog bytes appended, not yet flushed.
    pub flush_behind_bytes: u64,
    pub flushes: u64,
    pub flushed_bytes: u64,
    /// Connections this shard holds (its accept loops' connections that are open).
    pub connections: u64,
    /// Delayed delivery progress of the levels this shard delivers: (level, delivered offset,
    /// queue's max offset).
    pub schedule_progress: Vec<(i32, i64, u64)>,
    pub meter: MeterSnapshot,
    /// The broker name this shard is known by.
    pub broker_name: String,
    /// CommitLog flushes: time (µs) and group size (bytes).
    pub flush_latency: crate::store::latency::Histogram,
    pub flush_group_bytes: crate::store::latency::Histogram,
    /// Messages stored per topic here (the sum of its queues' max offsets).
    pub topic_offsets: std::collections::BTreeMap<String, u64>,
    /// Per (group, topic) of the offsets committed here: the queues' summed max offsets and
    /// committed offsets (their difference is the group's lag).
    pub group_offsets: std::collections::BTreeMap<(String, String), (u64, u64)>,
}

impl ShardStats {
    /// Adds another shard's counts (offsets and schedule progress stay per shard).
    pub fn add(&mut self, other: &ShardStats) {
        self.put_messages += other.put_messages;
        self.put_bytes += other.put_bytes;
        self.hops_out += other.hops_out;
        self.pull_file_bytes += other.pull_file_bytes;
        self.queues_waited_on += other.queues_waited_on;
        self.flush_behind_bytes += other.flush_behind_bytes;
        self.flushes += other.flushes;
        self.flushed_bytes += other.flushed_bytes;
        self.connections += other.connections;
        self.schedule_progress
            .extend(other.schedule_progress.iter().copied());
        self.meter.add(&other.meter);
        self.flush_latency.add(&other.flush_latency);
        self.flush_group_bytes.add(&other.flush_group_bytes);
        for (topic, offset) in &other.topic_offsets {
            *self.topic_offsets.entry(topic.clone()).or_default() += offset;
        }
        for (key, (broker, consumer)) in &other.group_offsets {
            let mine = self.group_offsets.entry(key.clone()).or_default();
            mine.0 += broker;
            mine.1 += consumer;
        }
    }
}

/// What travels on the mesh.
#[derive(Debug)]
pub enum MeshMessage {
    Call {
        id: u64,
        call: Call,
    },
    Reply {
        id: u64,
        reply: CallReply,
    },
    /// A client-table change, applied by every shard.
    Client(ClientEvent),
    /// Shard 0 changed the topic table.
    TopicChanged(TopicConfig),
    /// Shard 0 deleted a topic.
    TopicDeleted(String),
    /// The runtime-changeable settings changed (UPDATE_BROKER_CONFIG).
    SettingsChanged(LiveSettings),
    /// Shard 0 reloaded the ACL file (`acl::watch`).
    AclChanged(Arc<AclRules>),
    /// Shard 0 learned where this (slave) shard's master is, from a name server.
    HaMaster(MasterAddrs),
    /// A slave shard copied records of a topic it does not know: shard 0 syncs topics now.
    HaSyncWanted,
    /// Shard 0 changed the subscription-group table: `config` is the group's new config, or
    /// `None` when it was deleted.
    GroupChanged {
        name: String,
        config: Option<SubscriptionGroupConfig>,
    },
}

/// Handles calls addressed to this shard (implemented by the processor).
#[allow(async_fn_in_trait)]
pub trait CallHandler: 'static {
    async fn handle_call(&self, call: Call) -> CallReply;
    /// A client event from another shard was applied; `changed` groups need notifying.
    fn client_groups_changed(&self, changed: Vec<String>);
}

pub struct Shard {
    pub id: usize,
    pub count: usize,
    /// The settings the broker started with; those that change at runtime are in `live`.
    pub config: Arc<BrokerConfig>,
    /// The runtime-changeable settings (UPDATE_BROKER_CONFIG), the same on every shard.
    pub live: Cell<LiveSettings>,
    /// The ACL rules in force (`aclEnable`); `None`: no check. Shard 0 reloads them.
    pub acl: RefCell<Option<Arc<AclRules>>>,
    pub store: Rc<MessageStore>,
    /// The address clients know this shard by and the store host of its records:
    /// `brokerIP1:listenPort` in one-name mode, the shard's own port with a broker per shard.
    pub broker_addr: SocketAddr,
    /// The broker name clients know this shard by (`BrokerConfig::shard_broker_name`).
    pub broker_name: String,
    pub topics: RefCell<TopicTable>,
    /// Subscription groups: shard 0 writes, the others hold copies (`GroupChanged`).
    pub groups: RefCell<SubscriptionGroupTable>,
    pub clients: RefCell<ClientTable>,
    pub offsets: RefCell<ConsumerOffsets>,
    /// Orderly-consumption queue locks (used on shard 0 only).
    pub queue_locks: RefCell<QueueLocks>,
    /// Half messages waiting for a decision (`processor::transaction`), filled by recovery.
    pub transactions: RefCell<TransactionTable>,
    /// Set to 1 once recovery filled `transactions`: decisions and prepares wait for it.
    pub transactions_ready: Watermark,
    /// Outbound channels of this shard's connections that registered as clients (for
    /// NOTIFY_CONSUMER_IDS_CHANGED).
    pub connections: RefCell<HashMap<u64, LocalSender<Reply>>>,
    senders: MeshSenders<MeshMessage>,
    pending: RefCell<HashMap<u64, LocalSender<CallReply>>>,
    next_call_id: Cell<u64>,
    /// The shard's background tasks (accept loops, offset flusher, client scanner, delayed
    /// delivery, topic persister, registrar); its stop signal is set when shutdown begins:
    /// new work is refused, long polls answer at once.
    pub tasks: TaskRegistry,
    pub hops_out: Cell<u64>,
    /// Traffic counters (runtime info, metrics), owned here: no atomics on the hot paths.
    pub meter: RefCell<ShardMeter>,
    /// Pull-response bytes sent from files (sendfile) rather than from memory.
    pub pull_file_bytes: Cell<u64>,
    /// Connections open on this shard.
    pub open_connections: Cell<u64>,
    /// Requests this shard sent to its client connections and awaits answers to, by
    /// (connection id, opaque); at most `CLIENT_CALLS_MAX`.
    pub client_calls: RefCell<HashMap<(u64, i32), LocalSender<RemotingCommand>>>,
    pub next_client_opaque: Cell<i32>,
    /// Requests being processed (shutdown waits for them).
    pub in_flight: Cell<u64>,
    pub in_flight_drained: Watermark,
    pub boot_ms: i64,
    /// Bumped by shard 0 when the topic table changes: registration runs at once.
    pub topics_changed: Watermark,
    /// The `topics_changed` value the name servers were last sent (shard 0). A topic upsert
    /// waits for it, so a created topic is routable once the create is answered, as with
    /// RocketMQ's synchronous registration after UPDATE_AND_CREATE_TOPIC.
    pub topics_registered: Watermark,
    /// The `topics_changed` value `config/topics.json` was last written at (shard 0), and
    /// how that write ended: an upsert waits for a write that covers it, and one write covers
    /// every change made before it began (group commit of the topic table).
    pub topics_persisted: Watermark,
    pub topics_persist_result: RefCell<Result<(), String>>,
    /// Bumped by shard 0 when the group table changes; `groups_persisted` is the value
    /// `config/subscriptionGroup.json` was last written at, `groups_persist_result` how that
    /// write ended (group commit, as for topics).
    pub groups_changed: Watermark,
    pub groups_persisted: Watermark,
    pub groups_persist_result: RefCell<Result<(), String>>,
    /// Topic changes for the registrar to announce (shard 0).
    pub topic_deltas: RefCell<TopicDeltas>,
    /// Spreads sends that let the broker pick the queue (negative queue id).
    pub queue_rotation: Cell<u32>,
    /// Every shard's own address, by shard id (advertised to shard-aware clients).
    pub shard_addrs: Arc<std::sync::OnceLock<Vec<SocketAddr>>>,
    /// Replication: this shard as a master (its slaves) or a slave (its master).
    pub ha: ShardHa,
    /// Every shard's HA address, by shard id (a master's; registered as `haServerAddr`).
    pub ha_addrs: Arc<Vec<Option<SocketAddr>>>,
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<BrokerConfig>,
        store: Rc<MessageStore>,
        broker_addr: SocketAddr,
        broker_name: String,
        topics: TopicTable,
        groups: SubscriptionGroupTable,
        offsets: ConsumerOffsets,
        senders: MeshSenders<MeshMessage>,
        count: usize,
        shard_addrs: Arc<std::sync::OnceLock<Vec<SocketAddr>>>,
        ha_addrs: Arc<Vec<Option<SocketAddr>>>,
    ) -> Shard {
        let id = senders.peer_id();
        let config_for_ha = config.clone();
        Shard {
            id,
            count,
            live: Cell::new(LiveSettings::of(&config)),
            acl: RefCell::new(None),
            config,
            store,
            broker_addr,
            broker_name,
            topics: RefCell::new(topics),
            groups: RefCell::new(groups),
            clients: RefCell::new(ClientTable::default()),
            offsets: RefCell::new(offsets),
            queue_locks: RefCell::new(QueueLocks::default()),
            transactions: RefCell::new(TransactionTable::default()),
            transactions_ready: Watermark::new(0),
            connections: RefCell::new(HashMap::new()),
            senders,
            pending: RefCell::new(HashMap::new()),
            next_call_id: Cell::new(1),
            tasks: TaskRegistry::new(format!("shard-{id}")),
            hops_out: Cell::new(0),
            meter: RefCell::new(ShardMeter::default()),
            pull_file_bytes: Cell::new(0),
            open_connections: Cell::new(0),
            client_calls: RefCell::new(HashMap::new()),
            next_client_opaque: Cell::new(1),
            in_flight: Cell::new(0),
            in_flight_drained: Watermark::new(0),
            boot_ms: runtime::now_ms(),
            topics_changed: Watermark::new(0),
            topics_registered: Watermark::new(0),
            topics_persisted: Watermark::new(0),
            topics_persist_result: RefCell::new(Ok(())),
            groups_changed: Watermark::new(0),
            groups_persisted: Watermark::new(0),
            groups_persist_result: RefCell::new(Ok(())),
            topic_deltas: RefCell::new(TopicDeltas::default()),
            queue_rotation: Cell::new(0),
            shard_addrs,
            ha: ShardHa::new(&config_for_ha, id),
            ha_addrs,
        }
    }

    /// A slave shard's master, as a name server named it (a configured `haMasterAddress`
    /// wins). Ignored by masters.
    pub fn learn_master(&self, addrs: MasterAddrs) {
        if let Some(slave) = self.ha.slave() {
            slave.learn(addrs, self.config.shard_ha_master_address(self.id));
        }
    }

    /// A slave copied records of an unknown topic: shard 0 (which writes the topic table)
    /// syncs the master's topics now.
    pub async fn want_metadata_sync(&self) {
        if self.id == 0 {
            self.want_metadata_sync_here();
        } else if self
            .senders
            .send_to(0, MeshMessage::HaSyncWanted)
            .await
            .is_err()
        {
            debug!(shard = self.id, "sync request to a stopped shard 0 dropped");
        }
    }

    fn want_metadata_sync_here(&self) {
        if let Some(slave) = self.ha.slave() {
            slave.sync_wanted.advance(slave.sync_wanted.get() + 1);
        }
    }

    /// Tells shard `to` where its master is (shard 0, from the registration's answer).
    pub async fn send_master_addrs(&self, to: usize, addrs: MasterAddrs) {
        if to == self.id {
            self.learn_master(addrs);
        } else if self
            .senders
            .send_to(to, MeshMessage::HaMaster(addrs))
            .await
            .is_err()
        {
            debug!(
                shard = self.id,
                to, "master address for a stopped shard dropped"
            );
        }
    }

    /// The shard that serves `(topic, queue_id)` for a client of this shard: with a broker
    /// per shard the queue ids are this shard's own, so always this shard (zero hops); in
    /// one-name mode, the queue's owner by `owner_of`.
    pub fn owner_of(&self, topic: &str, queue_id: i32) -> usize {
        if self.config.broker_per_shard {
            self.id
        } else {
            owner_of(topic, queue_id, self.count)
        }
    }

    /// With a broker per shard, this shard's share of the topics (`ShardView`); `None` in
    /// one-name mode, where every shard sees the whole topic.
    pub fn view(&self) -> Option<ShardView> {
        self.config.broker_per_shard.then_some(ShardView {
            shard: self.id,
            shards: self.count,
        })
    }

    /// `topic` as clients of this shard see it (its queue counts here).
    pub fn topic_view(&self, topic: TopicConfig) -> TopicConfig {
        match self.view() {
            Some(view) => view.topic(topic),
            None => topic,
        }
    }

    /// The topic table as this shard registers and reports it.
    pub fn topics_wrapper(&self) -> thruster_protocol::body::TopicConfigSerializeWrapper {
        let topics = self.topics.borrow();
        let permission = self.broker_permission();
        match self.view() {
            Some(view) => topics.wrapper_for_shard(permission, view),
            None => topics.wrapper(permission),
        }
    }

    /// The shards that make up the broker a client of this shard sees: this one alone with a
    /// broker per shard (clients ask every broker of a route and merge the answers, so
    /// answering for the others would repeat them), every shard in one-name mode.
    pub fn broker_shards(&self) -> std::ops::Range<usize> {
        if self.config.broker_per_shard {
            self.id..self.id + 1
        } else {
            0..self.count
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.tasks.is_stopping()
    }

    /// Runs `call` on shard `to`: directly when that is this shard, else one hop there and
    /// one back.
    pub async fn call<H: CallHandler>(&self, handler: &H, to: usize, call: Call) -> CallReply {
        if to == self.id {
            // Boxed: handling a call may make calls (a retry creates its topic through shard
            // 0, a delayed send stores on another shard), and async recursion needs one
            // indirection. Local calls are off the send and pull paths.
            let local: std::pin::Pin<Box<dyn std::future::Future<Output = CallReply> + '_>> =
                Box::pin(handler.handle_call(call));
            return local.await;
        }
        let id = self.next_call_id.get();
        self.next_call_id.set(id + 1);
        let (reply_tx, reply_rx) = runtime::bounded_channel(1);
        self.pending.borrow_mut().insert(id, reply_tx);
        // Counted: client requests that cross cores (internal calls such as stats are not).
        if let Call::Remoting { request, .. } = &call {
            self.hops_out.set(self.hops_out.get() + 1);
            debug!(
                shard = self.id,
                to,
                code = request.code,
                "request hops to its owner"
            );
        }
        if self
            .senders
            .send_to(to, MeshMessage::Call { id, call })
            .await
            .is_err()
        {
            self.pending.borrow_mut().remove(&id);
            return CallReply::Unavailable;
        }
        reply_rx.recv().await.unwrap_or(CallReply::Unavailable)
    }

    /// Sends a message to every other shard (waiting for room in each channel, so messages
    /// sent later on the same channels arrive after it).
    pub async fn broadcast(&self, make: impl Fn() -> MeshMessage) {
        for to in (0..self.count).filter(|&s| s != self.id) {
            if self.senders.send_to(to, make()).await.is_err() {
                debug!(shard = self.id, to, "broadcast to a stopped shard dropped");
            }
        }
    }

    /// [`Shard::broadcast`], answered once every other shard has applied the message: an
    /// operator's change (a topic, a subscription group) is in force on every shard when the
    /// request that made it is answered, as on a one-process RocketMQ broker.
    pub async fn broadcast_applied<H: CallHandler>(
        &self,
        handler: &H,
        make: impl Fn() -> MeshMessage,
    ) {
        self.broadcast(make).await;
        for to in (0..self.count).filter(|&s| s != self.id) {
            if !matches!(
                self.call(handler, to, Call::Barrier).await,
                CallReply::Done(_)
            ) {
                debug!(
                    shard = self.id,
                    to, "barrier to a stopped shard not answered"
                );
            }
        }
    }

    /// Serves messages from shard `from` until it goes away.
    pub async fn receive_from<H: CallHandler>(
        self: Rc<Self>,
        handler: Rc<H>,
        from: usize,
        receiver: MeshReceiver<MeshMessage>,
    ) {
        while let Some(message) = receiver.recv().await {
            match message {
                MeshMessage::Call { id, call } => {
                    let shard = self.clone();
                    let handler = handler.clone();
                    runtime::spawn_detached(async move {
                        let reply = handler.handle_call(call).await;
                        if shard
                            .senders
                            .send_to(from, MeshMessage::Reply { id, reply })
                            .await
                            .is_err()
                        {
                            debug!(shard = shard.id, from, "reply to a stopped shard dropped");
                        }
                    });
                }
                MeshMessage::Reply { id, reply } => {
                    let waiter = self.pending.borrow_mut().remove(&id);
                    match waiter {
                        Some(waiter) => {
                            let _ = waiter.try_send(reply);
                        }
                        None => warn!(shard = self.id, from, id, "reply to an unknown call"),
                    }
                }
                MeshMessage::Client(event) => {
                    let changed = self.clients.borrow_mut().apply(&event);
                    if !changed.is_empty() {
                        handler.client_groups_changed(changed);
                    }
                }
                MeshMessage::TopicChanged(topic) => {
                    self.topics.borrow_mut().upsert(topic, runtime::now_ms());
                }
                MeshMessage::TopicDeleted(topic) => {
                    self.topics.borrow_mut().remove(&topic, runtime::now_ms());
                    self.offsets.borrow_mut().remove_topic(&topic);
                }
                MeshMessage::SettingsChanged(settings) => self.apply_settings(settings),
                MeshMessage::AclChanged(rules) => *self.acl.borrow_mut() = Some(rules),
                MeshMessage::HaMaster(addrs) => self.learn_master(addrs),
                MeshMessage::HaSyncWanted => self.want_metadata_sync_here(),
                MeshMessage::GroupChanged { name, config } => {
                    let mut groups = self.groups.borrow_mut();
                    match config {
                        Some(config) => groups.upsert(config, runtime::now_ms()),
                        None => groups.remove(&name, runtime::now_ms()),
                    };
                }
            }
        }
    }

    /// `brokerPermission` as it is now.
    pub fn broker_permission(&self) -> i32 {
        self.live.get().broker_permission
    }

    /// Takes new runtime settings; on shard 0 a changed permission is announced to the name
    /// servers at once (a whole-table registration), as RocketMQ re-registers.
    pub fn apply_settings(&self, settings: LiveSettings) {
        let old = self.live.replace(settings);
        if self.id == 0 && old.broker_permission != settings.broker_permission {
            self.topic_deltas.borrow_mut().overflowed = true;
            self.topics_changed.advance(self.topics_changed.get() + 1);
        }
    }

    pub fn stats(&self) -> ShardStats {
        let store = self.store.stats();
        ShardStats {
            shard: self.id,
            put_messages: store.put_records,
            put_bytes: store.put_bytes,
            hops_out: self.hops_out.get(),
            pull_file_bytes: self.pull_file_bytes.get(),
            queues_waited_on: self.store.queues_waited_on() as u64,
            commit_log_min_offset: self.store.commit_log_min_offset(),
            commit_log_max_offset: self.store.commit_log_max_offset(),
            flush_behind_bytes: self.store.flush_behind_bytes(),
            flushes: store.flushes,
            flushed_bytes: store.flushed_bytes,
            connections: self.open_connections.get(),
            schedule_progress: Vec::new(),
            meter: self.meter.borrow().snapshot(),
            broker_name: self.broker_name.clone(),
            flush_latency: store.flush_latency,
            flush_group_bytes: store.flush_group_bytes,
            topic_offsets: self.topic_offsets(),
            group_offsets: self.group_offsets(),
        }
    }

    fn topic_offsets(&self) -> std::collections::BTreeMap<String, u64> {
        let mut offsets = std::collections::BTreeMap::new();
        for (topic, queue_id) in self.store.queue_ids() {
            *offsets.entry(topic.clone()).or_default() += self.store.max_offset(&topic, queue_id);
        }
        offsets
    }

    /// Committed offsets of client groups (internal `%…%` groups left out), with the max
    /// offsets of the same queues.
    fn group_offsets(&self) -> std::collections::BTreeMap<(String, String), (u64, u64)> {
        let mut lags = std::collections::BTreeMap::new();
        for (key, queue_id, offset) in self.offsets.borrow().entries() {
            let Some((topic, group)) = key.split_once('@') else {
                continue;
            };
            if group.starts_with('%') {
                continue;
            }
            let max = self.store.max_offset(topic, queue_id);
            let entry: &mut (u64, u64) = lags
                .entry((group.to_owned(), topic.to_owned()))
                .or_default();
            entry.0 += max;
            entry.1 += (offset.max(0) as u64).min(max);
        }
        lags
    }
}
