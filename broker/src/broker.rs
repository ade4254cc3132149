//! Starting and stopping one shard of the broker: join the mesh, open the shard's store and
//! metadata, accept on the shared ports, run the background loops, and at shutdown stop
//! accepting, let in-flight requests finish, flush and checkpoint.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::config::BrokerConfig;
use crate::meta::consumer_offset::ConsumerOffsets;
use crate::meta::subscription_group::{groups_path, SubscriptionGroupTable};
use crate::meta::topic_config::{topics_path, TopicTable};
use crate::meta::{read_json_file, write_file_atomically};
use crate::processor::{notify_consumer_ids_changed, BrokerProcessor};
use crate::registration::Registrar;
use crate::remoting::{self, RequestMemory, ServerConfig};
use crate::runtime::{self, MeshBuilder, TcpListener};
use crate::shard::{MeshMessage, Shard};

/// How often a shard looks for the process-wide stop flag.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long shutdown waits for in-flight requests (a parked pull answers at once).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a shard samples its traffic totals (RocketMQ: every second).
const STATS_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How often silent client channels are looked for (RocketMQ: every 10 s).
const CLIENT_SCAN_INTERVAL: Duration = Duration::from_secs(10);
/// Listeners per shard (main, VIP, the shard's own port): connection ids interleave by this
/// step.
const LISTENERS_MAX: u64 = 3;

/// Where a shard accepts connections.
pub enum Listen {
    /// One broker name: the shared ports (main and VIP, SO_REUSEPORT on every shard), plus a
    /// port of the shard's own for shard-aware clients.
    Shared(Vec<SocketAddr>),
    /// A broker per shard: the listeners the binary bound for this shard alone (its port, and
    /// its VIP port if enabled). Bound before any shard starts, so a port that is taken fails
    /// the start at once and clearly.
    Own(Vec<std::net::TcpListener>),
}

/// Everything a shard needs to start; built by the binary.
pub struct ShardStart {
    pub config: Arc<BrokerConfig>,
    /// The address this shard is known by (`brokerIP1:port`), published and used as store
    /// host: the broker's in one-name mode, the shard's own with a broker per shard.
    pub broker_addr: SocketAddr,
    pub listen: Listen,
    pub mesh: MeshBuilder<MeshMessage>,
    pub shard_count: usize,
    pub stop: Arc<AtomicBool>,
    /// Told `Ok((shard id, its own address))` once this shard serves, or the error that
    /// stopped it.
    pub ready: std::sync::mpsc::Sender<Result<(usize, SocketAddr), String>>,
    /// Every shard's own address by shard id, set by the binary once all shards serve; read
    /// (never written) by the shards when clients ask for it.
    pub shard_addrs: Arc<std::sync::OnceLock<Vec<SocketAddr>>>,
    /// A master's HA listener for this shard (bound by the binary), where slaves connect.
    pub ha_listener: Option<std::net::TcpListener>,
    /// Every shard's HA address (masters), by shard id.
    pub ha_addrs: Arc<Vec<Option<SocketAddr>>>,
}

/// Runs one shard until the stop flag is set, then shuts it down cleanly.
pub async fn run_shard(mut start: ShardStart) -> io::Result<()> {
    let ready = start.ready.clone();
    let listen = std::mem::replace(&mut start.listen, Listen::Shared(Vec::new()));
    let ha_listener = start.ha_listener.take();
    let started = async {
        let (shard, processor) = open_shard(&start).await?;
        let own_addr = start_serving(&start, listen, &shard, &processor).await?;
        start_replication(&shard, ha_listener);
        Ok::<_, io::Error>((shard, own_addr))
    };
    match started.await {
        Ok((shard, own_addr)) => {
            let _ = ready.send(Ok((shard.id, own_addr)));
            serve_until_stopped(shard).await
        }
        Err(error) => {
            let _ = ready.send(Err(error.to_string()));
            Err(error)
        }
    }
}

async fn open_shard(start: &ShardStart) -> io::Result<(Rc<Shard>, Rc<BrokerProcessor>)> {
    let config = &start.config;
    let (senders, receivers) = runtime::join_mesh(start.mesh.clone()).await?;
    let id = senders.peer_id();
    let store = crate::store::open(config.store_config(id as u8)).await?;
    let now_ms = runtime::now_ms();
    let mut topics = TopicTable::with_system_topics(config, now_ms);
    let path = topics_path(config);
    let persisted = read_json_file(&path, "topics")?;
    let fresh = persisted.is_none();
    if let Some(persisted) = persisted {
        topics.merge_persisted(persisted);
    }
    if id == 0 && fresh {
        let bytes =
            serde_json::to_vec_pretty(&topics.stored_wrapper()).map_err(io::Error::other)?;
        write_file_atomically(&path, &bytes)?;
    }
    let mut groups = SubscriptionGroupTable::with_system_groups(now_ms);
    if let Some(persisted) = read_json_file(&groups_path(config), "subscription groups")? {
        groups.merge_persisted(persisted);
    }
    let offsets = ConsumerOffsets::load(
        config
            .config_dir()
            .join(format!("consumerOffset-{id}.json")),
    )?;
    let shard = Rc::new(Shard::new(
        config.clone(),
        store,
        start.broker_addr,
        config.shard_broker_name(id),
        topics,
        groups,
        offsets,
        senders,
        start.shard_count,
        start.shard_addrs.clone(),
        start.ha_addrs.clone(),
    ));
    start_acl(config, &shard)?;
    let processor = Rc::new(BrokerProcessor {
        shard: shard.clone(),
    });
    for (from, receiver) in receivers {
        runtime::spawn_detached(
            shard
                .clone()
                .receive_from(processor.clone(), from, receiver),
        );
    }
    info!(shard = id, shards = start.shard_count, "shard open");
    Ok((shard, processor))
}

/// With `aclEnable`, takes the rules of `aclFilePath` (a file that cannot be read or parsed
/// stops the start, naming the problem); shard 0 watches the file for changes.
fn start_acl(config: &BrokerConfig, shard: &Rc<Shard>) -> io::Result<()> {
    if !config.acl_enable {
        return Ok(());
    }
    let path = config.acl_file_path.clone();
    let (rules, stamp) = crate::acl::watch::load(&path)
        .map_err(|e| io::Error::other(format!("aclEnable=true, but the ACL file: {e}")))?;
    if shard.id == 0 {
        info!(path = %path.display(), accounts = rules.accounts.len(), "ACL enabled");
        let interval = Duration::from_millis(config.acl_reload_interval_ms.max(1));
        shard.tasks.spawn(
            "acl-watcher",
            crate::acl::watch::run(shard.clone(), path, stamp, interval),
        );
    }
    *shard.acl.borrow_mut() = Some(Arc::new(rules));
    Ok(())
}

/// A master serves its slaves on the HA listener; a slave runs its copying and metadata
/// loops.
fn start_replication(shard: &Rc<Shard>, ha_listener: Option<std::net::TcpListener>) {
    if shard.ha.slave().is_some() {
        shard
            .tasks
            .spawn("ha-slave", crate::ha::slave::run(shard.clone()));
        shard
            .tasks
            .spawn("ha-sync", crate::ha::sync::run(shard.clone()));
        return;
    }
    let Some(listener) = ha_listener else {
        return;
    };
    let server = Rc::new(crate::ha::master::HaServer {
        shard: shard.clone(),
    });
    let stop = shard.tasks.stop_signal();
    let server_config = ServerConfig {
        connections_max: crate::ha::state::HA_CONNECTIONS_MAX,
        ..ServerConfig::default()
    };
    shard.tasks.spawn(
        "ha-accept",
        remoting::serve(
            TcpListener::from_std(listener),
            server,
            server_config,
            async move { stop.wait().await },
        ),
    );
}

/// The listeners of one shard and the address it is known by on its own port.
fn shard_listeners(
    config: &BrokerConfig,
    shard_id: usize,
    broker_addr: SocketAddr,
    listen: Listen,
) -> io::Result<(Vec<TcpListener>, SocketAddr)> {
    match listen {
        Listen::Own(listeners) => {
            let listeners = listeners.into_iter().map(TcpListener::from_std).collect();
            Ok((listeners, broker_addr))
        }
        Listen::Shared(addrs) => {
            let own_port = match config.shard_listen_port_base {
                0 => 0,
                base => base
                    .checked_add(shard_id as u16)
                    .ok_or_else(|| io::Error::other("shardListenPortBase + shard id overflows"))?,
            };
            let own_listener = TcpListener::bind(SocketAddr::new(config.bind_address, own_port))?;
            let own_addr = SocketAddr::new(config.broker_ip1, own_listener.local_addr()?.port());
            let mut listeners = addrs
                .iter()
                .map(|addr| TcpListener::bind_shared(*addr))
                .collect::<io::Result<Vec<_>>>()?;
            listeners.push(own_listener);
            Ok((listeners, own_addr))
        }
    }
}

/// Accepts on the shard's listeners and starts the background loops; shard 0 registers with
/// the name servers once before the broker reports itself ready, so clients find its routes.
/// Returns the shard's own (advertised) address.
async fn start_serving(
    start: &ShardStart,
    listen: Listen,
    shard: &Rc<Shard>,
    processor: &Rc<BrokerProcessor>,
) -> io::Result<SocketAddr> {
    let config = &start.config;
    let (listeners, own_addr) = shard_listeners(config, shard.id, start.broker_addr, listen)?;
    assert!(listeners.len() as u64 <= LISTENERS_MAX);
    let request_memory = RequestMemory::new(config.shard_request_memory_bytes);
    for (i, listener) in listeners.into_iter().enumerate() {
        let server_config = ServerConfig {
            first_connection_id: i as u64,
            connection_id_step: LISTENERS_MAX,
            request_memory: Some(request_memory.clone()),
            idle_timeout_ms: Some(config.server_channel_max_idle_ms),
            ..ServerConfig::default()
        };
        let stop = shard.tasks.stop_signal();
        shard.tasks.spawn(
            "accept",
            remoting::serve(listener, processor.clone(), server_config, async move {
                stop.wait().await
            }),
        );
    }
    spawn_offset_flusher(shard.clone(), config.flush_consumer_offset_interval_ms);
    spawn_stats_sampler(shard.clone());
    if shard.id == 0 && config.metrics_port != 0 {
        let addr = SocketAddr::new(config.metrics_bind_address, config.metrics_port);
        let listener = TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("metrics endpoint on {addr}: {e}")))?;
        shard.tasks.spawn(
            "metrics",
            crate::metrics::http::serve(processor.clone(), listener),
        );
    }
    // A slave stores nothing of its own: its master delivers delayed messages and checks
    // transactions, and the slave copies the results.
    if shard.ha.slave().is_none() {
        crate::processor::schedule::spawn_delivery(processor.clone());
        crate::processor::transaction::spawn_check(processor.clone());
        crate::processor::timer::spawn_wheel(processor.clone());
    }
    spawn_client_scanner(shard.clone(), config.channel_expired_timeout_ms);
    if shard.id == 0 {
        shard.tasks.spawn(
            "topics-persister",
            crate::processor::admin::persist_topics(shard.clone()),
        );
        shard.tasks.spawn(
            "groups-persister",
            crate::processor::groups::persist_groups(shard.clone()),
        );
    }
    if shard.id == 0 && !config.namesrv_addrs.is_empty() {
        let mut registrar = Registrar::new(shard.clone());
        registrar.register_all().await;
        shard.tasks.spawn("registrar", registrar.run());
    }
    // The trigger, not a task of the registry: the binary's signal handler sets the flag.
    let stop = start.stop.clone();
    let stopping_shard = shard.clone();
    runtime::spawn_detached(async move {
        runtime::wait_for_flag(&stop, STOP_POLL_INTERVAL).await;
        stopping_shard.tasks.stop();
    });
    Ok(own_addr)
}

async fn serve_until_stopped(shard: Rc<Shard>) -> io::Result<()> {
    shard.tasks.stop_signal().wait().await;
    // Parked pulls answer now (nothing parks once stopping is set), and the delivery loops
    // waiting for their next delayed message see the stop.
    shard.store.wake_waiting();
    info!(
        shard = shard.id,
        "shutting down: no new connections, draining requests"
    );
    let drained = async {
        while shard.in_flight.get() > 0 {
            let seen = shard.in_flight_drained.get();
            shard.in_flight_drained.wait_for(seen + 1).await;
        }
    };
    if runtime::timeout(DRAIN_TIMEOUT, drained).await.is_none() {
        warn!(
            shard = shard.id,
            in_flight = shard.in_flight.get(),
            "requests still running after the drain timeout"
        );
    }
    // The registrar unregisters, the topic persister writes what changed last; the others
    // end at once.
    let _ = shard.tasks.join(DRAIN_TIMEOUT).await;
    if let Err(error) = persist_offsets(&shard).await {
        warn!(shard = shard.id, %error, "persisting consumer offsets at shutdown");
    }
    shard.store.shutdown().await?;
    info!(shard = shard.id, "shard stopped cleanly");
    Ok(())
}

fn spawn_offset_flusher(shard: Rc<Shard>, interval_ms: u64) {
    let stop = shard.tasks.stop_signal();
    let interval = Duration::from_millis(interval_ms.max(100));
    shard.clone().tasks.spawn("offset-flusher", async move {
        while stop.sleep(interval).await {
            if let Err(error) = persist_offsets(&shard).await {
                warn!(shard = shard.id, %error, "persisting consumer offsets");
            }
        }
    });
}

/// Samples the shard's traffic totals once a second (TPS windows, day totals).
fn spawn_stats_sampler(shard: Rc<Shard>) {
    let stop = shard.tasks.stop_signal();
    shard.clone().tasks.spawn("stats-sampler", async move {
        while stop.sleep(STATS_SAMPLE_INTERVAL).await {
            let puts = shard.store.stats().put_records;
            shard.meter.borrow_mut().sample(runtime::now_ms(), puts);
        }
    });
}

/// Writes the shard's consumer offsets if they changed: serialized on the reactor, which owns
/// the table, written and fdatasynced on the helper thread.
async fn persist_offsets(shard: &Shard) -> io::Result<()> {
    let Some(snapshot) = shard.offsets.borrow().snapshot()? else {
        return Ok(());
    };
    let snapshot = runtime::spawn_blocking(move || snapshot.write().map(|()| snapshot)).await?;
    shard.offsets.borrow_mut().persisted(&snapshot);
    Ok(())
}

/// Every shard expires silent channels from its own copy of the client table (the copies
/// hold the same timestamps, so they agree) and notifies its own connections.
fn spawn_client_scanner(shard: Rc<Shard>, expired_ms: u64) {
    let stop = shard.tasks.stop_signal();
    shard.clone().tasks.spawn("client-scanner", async move {
        while stop.sleep(CLIENT_SCAN_INTERVAL).await {
            let changed = shard
                .clients
                .borrow_mut()
                .expire(runtime::now_ms(), expired_ms as i64);
            if !changed.is_empty() {
                info!(shard = shard.id, groups = ?changed, "client channels expired");
                notify_consumer_ids_changed(&shard, &changed);
            }
        }
    });
}

/// The shard count is part of the store's layout (queue ownership follows it), and with several
/// shards so is the routing mode: each shard a broker keeps its own queue ids and ConsumeQueue
/// tree, one broker name spreads one set of queues over the shards. A store must be opened as
/// it was written. Records both on first start (`<storePathRootDir>/shards`: the count, then
/// `brokerPerShard` or `oneName`; a count alone was written before the mode existed, in one-name
/// mode).
pub fn check_store_layout(config: &BrokerConfig) -> Result<(), String> {
    let root = &config.store_path_root_dir;
    std::fs::create_dir_all(root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let path = root.join("shards");
    let wanted = StoreLayout::of(config);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let recorded =
                StoreLayout::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            if recorded.shards != wanted.shards {
                return Err(format!(
                    "the store at {} was written by {} shards; start with shards={} \
                     (queue ownership depends on the shard count)",
                    root.display(),
                    recorded.shards,
                    recorded.shards
                ));
            }
            if recorded.shards > 1 && recorded.broker_per_shard != wanted.broker_per_shard {
                return Err(format!(
                    "the store at {} was written with brokerPerShard={}; start with \
                     brokerPerShard={} (queue ids and ConsumeQueue files depend on it)",
                    root.display(),
                    recorded.broker_per_shard,
                    recorded.broker_per_shard
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::write(&path, wanted.render())
            .map_err(|e| format!("writing {}: {e}", path.display())),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// What `<storePathRootDir>/shards` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StoreLayout {
    shards: usize,
    broker_per_shard: bool,
}

impl StoreLayout {
    const BROKER_PER_SHARD: &'static str = "brokerPerShard";
    const ONE_NAME: &'static str = "oneName";

    fn of(config: &BrokerConfig) -> StoreLayout {
        StoreLayout {
            shards: config.shards,
            broker_per_shard: config.broker_per_shard,
        }
    }

    fn parse(text: &str) -> Result<StoreLayout, String> {
        let mut words = text.split_whitespace();
        let shards = words
            .next()
            .ok_or("empty")?
            .parse()
            .map_err(|e| format!("shard count: {e}"))?;
        let broker_per_shard = match words.next() {
            None | Some(Self::ONE_NAME) => false,
            Some(Self::BROKER_PER_SHARD) => true,
            Some(other) => return Err(format!("unknown routing mode {other:?}")),
        };
        Ok(StoreLayout {
            shards,
            broker_per_shard,
        })
    }

    fn render(&self) -> String {
        let mode = if self.broker_per_shard {
            Self::BROKER_PER_SHARD
        } else {
            Self::ONE_NAME
        };
        format!("{} {mode}\n", self.shards)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_layout_round_trips_and_reads_the_old_count_only_file() {
        for layout in [
            StoreLayout {
                shards: 2,
                broker_per_shard: true,
            },
            StoreLayout {
                shards: 3,
                broker_per_shard: false,
            },
        ] {
            assert_eq!(StoreLayout::parse(&layout.render()), Ok(layout));
        }
        let old = StoreLayout::parse("2\n").unwrap();
        assert_eq!((old.shards, old.broker_per_shard), (2, false));
        assert!(StoreLayout::parse("2 sideways\n").is_err());
        assert!(StoreLayout::parse("").is_err());
    }

    #[test]
    fn a_store_refuses_another_routing_mode_only_with_several_shards() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig {
            store_path_root_dir: dir.path().to_owned(),
            shards: 2,
            broker_per_shard: false,
            ..BrokerConfig::default()
        };
        check_store_layout(&config).unwrap();
        config.broker_per_shard = true;
        let refused = check_store_layout(&config).unwrap_err();
        assert!(refused.contains("brokerPerShard=false"), "{refused}");
        config.shards = 3;
        assert!(check_store_layout(&config)
            .unwrap_err()
            .contains("shards=2"));

        let one = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig {
            store_path_root_dir: one.path().to_owned(),
            shards: 1,
            broker_per_shard: false,
            ..BrokerConfig::default()
        };
        check_store_layout(&config).unwrap();
        config.broker_per_shard = true;
        check_store_layout(&config).expect("one shard has one layout in both modes");
    }
}
