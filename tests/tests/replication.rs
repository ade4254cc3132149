//! Master/slave replication with real processes: SYNC_MASTER acknowledgements survive the
//! master's SIGKILL on the slave and are consumed from it by unchanged clients; an ASYNC slave
//! catches up and runtime info shows the lag; restarts on either side leave identical logs;
//! metadata reaches the slave; mismatched slaves are refused at the handshake.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thruster_client::protocol::header::offset::{
    OffsetResponseHeader, QueryConsumerOffsetRequestHeader, UpdateConsumerOffsetRequestHeader,
};
use thruster_client::protocol::header::send::SendMessageResponseHeader;
use thruster_client::protocol::message::decode_offset_msg_id;
use thruster_client::protocol::{request_code as rc, response_code, RemotingCommand};
use thruster_client::tokio::{ClientConfig, PullConsumer, PullStatus};
use thruster_tests::cpp_client::ClientProcess;
use thruster_tests::wire::{pull_records, runtime_info, v2_header};
use thruster_tests::{route, wait_until, Client, ServerProcess};

const WAIT: Duration = Duration::from_secs(30);

fn namesrv() -> ServerProcess {
    ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"])
}

fn slave(namesrvs: &str, name: &str, shards: usize, extra: &[&str]) -> ServerProcess {
    let name = format!("brokerName={name}");
    let mut settings = vec![name.as_str(), "brokerRole=SLAVE", "brokerId=1"];
    settings.extend_from_slice(extra);
    ServerProcess::broker_with_namesrvs(namesrvs, shards, &settings)
}

/// Broker name -> (broker id -> address), from `topic`'s route.
fn groups(namesrv: SocketAddr, topic: &str) -> BTreeMap<String, BTreeMap<i64, SocketAddr>> {
    route(namesrv, topic)
        .map(|r| {
            r.broker_datas
                .into_iter()
                .map(|b| {
                    let addrs = b
                        .broker_addrs
                        .into_iter()
                        .map(|(id, a)| (id, a.parse().unwrap()))
                        .collect();
                    (b.broker_name, addrs)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until every broker name of `topic` has a master and a slave, and each master shard
/// has its slave connected; returns the groups.
fn replicating(
    namesrv: SocketAddr,
    topic: &str,
    names: usize,
) -> BTreeMap<String, BTreeMap<i64, SocketAddr>> {
    let mut found = BTreeMap::new();
    let paired = wait_until(WAIT, || {
        found = groups(namesrv, topic);
        found.len() == names
            && found.values().all(|ids| ids.len() == 2)
            && found
                .values()
                .all(|ids| runtime_info(&mut Client::connect(ids[&0]))["haConnectionCount"] == "1")
    });
    assert!(paired, "masters and slaves paired and connected: {found:?}");
    found
}

/// What one sender got acknowledged: body -> the commit log offset its msgId names.
struct Sent {
    acked: BTreeMap<String, i64>,
    /// The send whose answer never came (the broker died under it).
    in_flight: Option<String>,
}

/// How a sender takes a broken connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnBreak {
    /// Stop there (the broker died under it).
    Stop,
    /// Connect again and go on (the broker restarts under it).
    Reconnect,
}

/// Sends to `addr`'s queues in turn until `stop` is set (or, with `OnBreak::Stop`, the
/// connection breaks), keeping what was acknowledged.
fn sender(
    addr: SocketAddr,
    topic: &'static str,
    queues: i32,
    tag: String,
    counters: (Arc<AtomicUsize>, Arc<AtomicBool>),
    on_break: OnBreak,
) -> std::thread::JoinHandle<Sent> {
    let (acked_total, stop) = counters;
    std::thread::spawn(move || {
        let mut client: Option<Client> = None;
        let mut sent = Sent {
            acked: BTreeMap::new(),
            in_flight: None,
        };
        for i in 0.. {
            if stop.load(Ordering::Acquire) {
                break;
            }
            if client.is_none() {
                match std::net::TcpStream::connect(addr) {
                    Ok(stream) => client = Some(Client::from_stream(stream)),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                }
            }
            let body = format!("{tag}-{i}");
            let request =
                RemotingCommand::request(rc::SEND_MESSAGE_V2, &v2_header(topic, i % queues, None))
                    .with_body(body.clone().into_bytes());
            match client.as_mut().expect("connected").try_invoke(request) {
                Ok(r) if r.code == response_code::SUCCESS => {
                    let header: SendMessageResponseHeader = r.decode_header().unwrap();
                    let (_, offset) =
                        decode_offset_msg_id(&header.msg_id).expect("an offset msgId");
                    sent.acked.insert(body, offset);
                    acked_total.fetch_add(1, Ordering::AcqRel);
                }
                Ok(r) => panic!("send refused: {} {:?}", r.code, r.remark),
                Err(_) if on_break == OnBreak::Reconnect => client = None,
                Err(_) => {
                    sent.in_flight = Some(body);
                    break;
                }
            }
        }
        sent
    })
}

fn write_queues(namesrv: SocketAddr, topic: &str, name: &str) -> i32 {
    route(namesrv, topic)
        .unwrap()
        .queue_datas
        .iter()
        .find(|q| q.broker_name == name)
        .map_or(0, |q| q.write_queue_nums)
}

#[test]
fn sync_master_killed_mid_stream_every_acknowledged_message_is_on_the_slave_and_consumed_from_it() {
    let ns = namesrv();
    let mut master =
        ServerProcess::broker(ns.addr, 2, &["brokerName=rs", "brokerRole=SYNC_MASTER"]);
    let _slave = slave(&ns.addr.to_string(), "rs", 2, &[]);
    Client::connect(master.addr).create_topic("SyncRepl", 4);
    let groups = replicating(ns.addr, "SyncRepl", 2);
    let acked_total = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = groups
        .iter()
        .map(|(name, ids)| {
            let queues = write_queues(ns.addr, "SyncRepl", name);
            let counters = (acked_total.clone(), stop.clone());
            sender(
                ids[&0],
                "SyncRepl",
                queues,
                name.clone(),
                counters,
                OnBreak::Stop,
            )
        })
        .collect();
    assert!(
        wait_until(WAIT, || acked_total.load(Ordering::Acquire) >= 300),
        "300 sends acknowledged by the SYNC_MASTER"
    );
    master.kill();
    let sent: Vec<Sent> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    // The name server drops the master as its connection closes, not 120 s later.
    assert!(
        wait_until(Duration::from_secs(10), || groups_now_slaves_only(ns.addr)),
        "only the slaves are left in the route"
    );
    let mut stored_all = BTreeSet::new();
    for (sent, (name, ids)) in sent.iter().zip(&groups) {
        let mut slave_client = Client::connect(ids[&1]);
        let mut stored = BTreeMap::new();
        for queue in 0..write_queues(ns.addr, "SyncRepl", name) {
            for record in pull_records(&mut slave_client, "SyncRepl", queue) {
                stored.insert(
                    String::from_utf8(record.body.to_vec()).unwrap(),
                    record.physical_offset,
                );
            }
        }
        for (body, offset) in &sent.acked {
            assert_eq!(
                stored.get(body),
                Some(offset),
                "{name}: {body} acknowledged at {offset}, on the slave at the same offset"
            );
        }
        for body in stored.keys() {
            assert!(
                sent.acked.contains_key(body) || sent.in_flight.as_ref() == Some(body),
                "{name}: {body} on the slave was never sent"
            );
        }
        stored_all.extend(stored.into_keys());
    }
    assert!(stored_all.len() >= 300);

    // Unchanged clients find only the slaves and read everything from them.
    let native: BTreeSet<String> = tokio_runtime().block_on(async {
        let consumer = PullConsumer::new(
            "native-reader",
            ClientConfig::new(&ns.addr.to_string()).unwrap(),
        );
        let mut got = BTreeSet::new();
        for queue in consumer.queues("SyncRepl").await.unwrap() {
            let mut offset = 0;
            loop {
                let result = consumer.pull(&queue, "*", offset, 32, None).await.unwrap();
                got.extend(
                    result
                        .messages
                        .iter()
                        .map(|m| String::from_utf8(m.body.to_vec()).unwrap()),
                );
                offset = result.next_begin_offset;
                if result.status != PullStatus::Found {
                    break;
                }
            }
        }
        got
    });
    assert_eq!(
        native, stored_all,
        "the native client reads every stored message from the slaves"
    );

    let ns_text = ns.addr.to_string();
    let expect = stored_all.len().to_string();
    let pull = ClientProcess::start(&["pull", &ns_text, "cpp-pull", "SyncRepl", &expect, "60"]);
    let pulled: BTreeSet<String> = pull
        .finish()
        .iter()
        .filter(|e| e["event"] == "received")
        .map(|e| e["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        pulled, stored_all,
        "the C++ pull consumer reads everything from the slaves"
    );

    let push = ClientProcess::start(&["push", &ns_text, "cpp-push", "SyncRepl", "clustering"]);
    let mut pushed = BTreeSet::new();
    let complete = wait_until(Duration::from_secs(60), || {
        while let Some(event) = push.next(Duration::from_millis(10)) {
            if event["event"] == "received" {
                pushed.insert(event["body"].as_str().unwrap().to_owned());
            }
        }
        pushed.len() >= stored_all.len()
    });
    push.finish();
    assert!(
        complete,
        "the C++ push consumer got {} of {}",
        pushed.len(),
        stored_all.len()
    );
    assert_eq!(pushed, stored_all);
}

fn groups_now_slaves_only(namesrv: SocketAddr) -> bool {
    let found = groups(namesrv, "SyncRepl");
    !found.is_empty() && found.values().all(|ids| ids.keys().eq([&1]))
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn diff(addr: SocketAddr) -> i64 {
    runtime_info(&mut Client::connect(addr))["masterSlaveDiff"]
        .parse()
        .unwrap()
}

#[test]
fn an_async_slave_falls_behind_visibly_and_catches_up_to_zero() {
    let ns = namesrv();
    let master = ServerProcess::broker(ns.addr, 1, &["brokerName=ra"]);
    let slave = slave(&ns.addr.to_string(), "ra", 1, &[]);
    Client::connect(master.addr).create_topic("AsyncRepl", 2);
    replicating(ns.addr, "AsyncRepl", 1);
    // Paused, the slave cannot copy: the burst shows as lag on the master.
    slave.pause();
    let mut client = Client::connect(master.addr);
    let body = vec![b'x'; 16 * 1024];
    for i in 0..640 {
        let request =
            RemotingCommand::request(rc::SEND_MESSAGE_V2, &v2_header("AsyncRepl", i % 2, None))
                .with_body(body.clone());
        assert_eq!(
            client.invoke(request).code,
            response_code::SUCCESS,
            "ASYNC_MASTER answers at once"
        );
    }
    let lag = diff(master.addr);
    assert!(
        lag >= 640 * 16 * 1024,
        "masterSlaveDiff shows the burst: {lag}"
    );
    slave.resume();
    assert!(
        wait_until(WAIT, || diff(master.addr) == 0),
        "the slave caught up"
    );
    assert!(
        wait_until(WAIT, || diff(slave.addr) == 0),
        "and says so too"
    );
    let mut from_slave = Client::connect(slave.addr);
    let copied: usize = (0..2)
        .map(|q| pull_records(&mut from_slave, "AsyncRepl", q).len())
        .sum();
    assert_eq!(copied, 640);
}

#[test]
fn offsets_topics_and_groups_reach_the_slave_and_the_slave_refuses_sends() {
    let ns = namesrv();
    let master = ServerProcess::broker(ns.addr, 1, &["brokerName=rm"]);
    let slave = slave(
        &ns.addr.to_string(),
        "rm",
        1,
        &["haSyncMetadataInterval=1000"],
    );
    // Created after the slave started: it learns the topic from its master.
    Client::connect(master.addr).create_topic("Meta", 2);
    replicating(ns.addr, "Meta", 1);
    let mut to_master = Client::connect(master.addr);
    let commit = RemotingCommand::request(
        rc::UPDATE_CONSUMER_OFFSET,
        &UpdateConsumerOffsetRequestHeader {
            consumer_group: "g1".into(),
            topic: "Meta".into(),
            queue_id: 1,
            commit_offset: 42,
            broker_name: None,
        },
    );
    assert_eq!(to_master.invoke(commit).code, response_code::SUCCESS);
    let query = || {
        RemotingCommand::request(
            rc::QUERY_CONSUMER_OFFSET,
            &QueryConsumerOffsetRequestHeader {
                consumer_group: "g1".into(),
                topic: "Meta".into(),
                queue_id: 1,
                set_zero_if_not_found: Some(false),
                broker_name: None,
            },
        )
    };
    let mut to_slave = Client::connect(slave.addr);
    let synced = wait_until(Duration::from_secs(10), || {
        let r = to_slave.invoke(query());
        r.code == response_code::SUCCESS
            && r.decode_header::<OffsetResponseHeader>().unwrap().offset == 42
    });
    assert!(synced, "the committed offset reached the slave");
    // A subscription group made on the master reaches the slave too.
    let mut group = thruster_client::protocol::body::SubscriptionGroupConfig::named("g-synced");
    group.retry_max_times = 3;
    let create = RemotingCommand::bare_request(rc::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
        .with_body(thruster_client::protocol::body::encode(&group));
    assert_eq!(to_master.invoke(create).code, response_code::SUCCESS);
    let group_synced = wait_until(Duration::from_secs(10), || {
        let all = to_slave.invoke(RemotingCommand::bare_request(
            rc::GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
        ));
        let wrapper: thruster_client::protocol::body::SubscriptionGroupWrapper =
            thruster_client::protocol::body::decode_lenient("groups", &all.body).unwrap();
        wrapper.subscription_group_table.get("g-synced") == Some(&group)
    });
    assert!(group_synced, "the group reached the slave");
    let topics = to_slave.invoke(RemotingCommand::bare_request(rc::GET_ALL_TOPIC_CONFIG));
    let body = String::from_utf8(topics.body.to_vec()).unwrap();
    assert!(body.contains("\"Meta\""), "the slave has the topic: {body}");
    // Sends go to masters only.
    let send = RemotingCommand::request(rc::SEND_MESSAGE_V2, &v2_header("Meta", 0, None))
        .with_body(b"no".to_vec());
    let refused = to_slave.invoke(send);
    assert_eq!(
        refused.code,
        response_code::SERVICE_NOT_AVAILABLE,
        "{:?}",
        refused.remark
    );
    assert!(refused.remark.unwrap_or_default().contains("slave"));
}

#[test]
fn a_slave_with_another_shard_count_is_refused_at_the_handshake() {
    let ns = namesrv();
    let master = ServerProcess::broker(ns.addr, 1, &["brokerName=rx"]);
    let ha = runtime_info(&mut Client::connect(master.addr));
    assert_eq!(ha["brokerRole"], "ASYNC_MASTER");
    // The slave is told where its master is (haMasterAddress) but has two shards.
    let master_ha = ha_addr_of(&master);
    let master_ha = format!("haMasterAddress={master_ha}");
    let slave = slave(&ns.addr.to_string(), "rx", 2, &[&master_ha]);
    let mut to_slave = Client::connect(slave.addr);
    let refused = wait_until(WAIT, || {
        runtime_info(&mut to_slave)["haLastError"].contains("shards")
    });
    assert!(refused, "{:?}", runtime_info(&mut to_slave));
    assert_eq!(
        runtime_info(&mut Client::connect(master.addr))["haConnectionCount"],
        "0"
    );
}

/// The master's HA address (shard 0), from its runtime info.
fn ha_addr_of(master: &ServerProcess) -> String {
    runtime_info(&mut Client::connect(master.addr))["haServerAddr"].clone()
}

/// (body, queue offset, commit log offset) of every record of `topic` at `addr`.
fn records_at(addr: SocketAddr, topic: &str, queues: i32) -> Vec<(String, i64, i64)> {
    let mut client = Client::connect(addr);
    (0..queues)
        .flat_map(|q| pull_records(&mut client, topic, q))
        .map(|r| {
            let body = String::from_utf8(r.body.to_vec()).unwrap();
            (body, r.queue_offset, r.physical_offset)
        })
        .collect()
}

/// The bytes of every commit log segment of `shard` under `store`, up to `end`.
fn log_bytes(store: &std::path::Path, shard: usize, end: u64) -> Vec<(String, Vec<u8>)> {
    let dir = store.join("commitlog").join(shard.to_string());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let start: u64 = p
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .parse()
                .unwrap_or(u64::MAX);
            start < end
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let start: u64 = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
            let mut bytes = std::fs::read(&path).unwrap();
            bytes.truncate((end - start) as usize);
            (
                path.file_name().unwrap().to_str().unwrap().to_owned(),
                bytes,
            )
        })
        .collect()
}

#[test]
fn slave_and_master_restarts_leave_identical_logs_with_no_gap_and_no_duplicate() {
    // The master comes back on its ports (its slave knows them from the name server).
    let ns = namesrv();
    let port = thruster_tests::free_port_block(&[0, 1, 10, 11]);
    let listen = format!("listenPort={port}");
    let master_settings = [
        listen.as_str(),
        "brokerName=rr",
        "vipChannelEnable=false",
        "flushDiskType=SYNC_FLUSH",
    ];
    let mut master = ServerProcess::broker(ns.addr, 2, &master_settings);
    let mut slave = slave(&ns.addr.to_string(), "rr", 2, &[]);
    Client::connect(master.addr).create_topic("Restarts", 4);
    let groups = replicating(ns.addr, "Restarts", 2);
    let acked_total = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = groups
        .iter()
        .map(|(name, ids)| {
            let queues = write_queues(ns.addr, "Restarts", name);
            let counters = (acked_total.clone(), stop.clone());
            sender(
                ids[&0],
                "Restarts",
                queues,
                name.clone(),
                counters,
                OnBreak::Reconnect,
            )
        })
        .collect();
    let reach = |n: usize| {
        let reached = wait_until(WAIT, || acked_total.load(Ordering::Acquire) >= n);
        assert!(reached, "{n} sends acknowledged");
    };
    reach(300);
    slave.kill();
    reach(600);
    slave = slave.restart();
    reach(900);
    master = master.restart();
    assert_eq!(master.addr.port(), port);
    let after_restart = acked_total.load(Ordering::Acquire);
    reach(after_restart + 300);
    stop.store(true, Ordering::Release);
    let acked: BTreeSet<String> = senders
        .into_iter()
        .flat_map(|s| s.join().unwrap().acked.into_keys())
        .collect();
    // The slave reconnects to the restarted master and catches up.
    let caught_up = wait_until(WAIT, || {
        groups.values().all(|ids| {
            let info = runtime_info(&mut Client::connect(ids[&0]));
            info["haConnectionCount"] == "1" && info["masterSlaveDiff"] == "0"
        })
    });
    assert!(caught_up, "the slave caught up after both restarts");
    let slave_groups = groups_of_role(ns.addr, "Restarts", 1);
    let mut ends = Vec::new();
    let mut stored = BTreeSet::new();
    for (shard, (name, ids)) in groups.iter().enumerate() {
        let queues = write_queues(ns.addr, "Restarts", name);
        let on_master = records_at(ids[&0], "Restarts", queues);
        let on_slave = records_at(slave_groups[name], "Restarts", queues);
        assert_eq!(
            on_slave, on_master,
            "{name}: the slave has the master's records, in order"
        );
        let unique: BTreeSet<_> = on_master.iter().map(|(body, _, _)| body.clone()).collect();
        assert_eq!(
            unique.len(),
            on_master.len(),
            "{name}: no record stored twice"
        );
        stored.extend(unique);
        let info = runtime_info(&mut Client::connect(ids[&0]));
        ends.push((
            shard,
            info[&format!("commitLogMaxOffset_shard{shard}")]
                .parse::<u64>()
                .unwrap(),
        ));
    }
    assert!(
        stored.is_superset(&acked),
        "nothing acknowledged under SYNC_FLUSH is lost"
    );
    // Stopped cleanly, the two stores hold the same log bytes, file by file.
    assert!(master.stop_gracefully() && slave.stop_gracefully());
    for (shard, end) in ends {
        let m = log_bytes(&master.dir.path().join("data/store"), shard, end);
        let s = log_bytes(&slave.dir.path().join("data/store"), shard, end);
        assert!(!m.is_empty());
        assert_eq!(m.len(), s.len(), "shard {shard}: the same segments");
        for ((mn, mb), (sn, sb)) in m.iter().zip(&s) {
            assert_eq!(mn, sn);
            assert!(mb == sb, "shard {shard}: segment {mn} differs");
        }
    }
}

/// Broker name -> the address of broker id `id`.
fn groups_of_role(namesrv: SocketAddr, topic: &str, id: i64) -> BTreeMap<String, SocketAddr> {
    groups(namesrv, topic)
        .into_iter()
        .filter_map(|(name, ids)| Some((name, *ids.get(&id)?)))
        .collect()
}

#[test]
fn two_groups_two_name_servers_producers_and_consumers_ride_out_a_dead_master() {
    let (ns1, ns2) = (namesrv(), namesrv());
    let ns = format!("{};{}", ns1.addr, ns2.addr);
    let mut a_master = ServerProcess::broker_with_namesrvs(&ns, 1, &["brokerName=broker-a"]);
    let _a_slave = slave(&ns, "broker-a", 1, &[]);
    let b_master = ServerProcess::broker_with_namesrvs(&ns, 1, &["brokerName=broker-b"]);
    let _b_slave = slave(&ns, "broker-b", 1, &[]);
    for master in [&a_master, &b_master] {
        Client::connect(master.addr).create_topic("Cluster", 2);
    }
    for namesrv in [ns1.addr, ns2.addr] {
        replicating(namesrv, "Cluster", 2);
    }
    let home = tempfile::tempdir().unwrap();
    let (acked, received) = tokio_runtime().block_on(async {
        use thruster_client::tokio::{
            ConsumeResult, Message, Producer, ProducerConfig, PushConsumer, PushConsumerConfig,
        };
        let fast = |config: ClientConfig| ClientConfig {
            route_refresh: Duration::from_millis(500),
            ..config
        };
        let mut producer_config = ProducerConfig::new("cluster-producer", &ns).unwrap();
        producer_config.client = fast(producer_config.client);
        let producer = Producer::new(producer_config);
        let mut consumer_config = PushConsumerConfig::new("cluster-consumer", &ns).unwrap();
        consumer_config.client = fast(consumer_config.client);
        consumer_config.local_offset_dir = home.path().to_path_buf();
        consumer_config.rebalance_interval = Duration::from_millis(500);
        consumer_config.offset_commit_interval = Duration::from_millis(200);
        let consumer = PushConsumer::new(consumer_config);
        consumer.subscribe("Cluster", "*");
        let received: Arc<std::sync::Mutex<BTreeSet<String>>> = Arc::default();
        let sink = received.clone();
        consumer
            .start(move |messages| {
                let mut sink = sink.lock().unwrap();
                sink.extend(
                    messages
                        .iter()
                        .map(|m| String::from_utf8(m.body.to_vec()).unwrap()),
                );
                ConsumeResult::Success
            })
            .await
            .unwrap();
        let mut acked = BTreeSet::new();
        let mut failed = 0;
        for i in 0..600 {
            if i == 200 {
                a_master.kill();
            }
            let body = format!("c-{i}");
            match producer
                .send(Message::new("Cluster", body.clone().into_bytes()))
                .await
            {
                Ok(_) => {
                    acked.insert(body);
                }
                Err(_) => failed += 1,
            }
        }
        assert!(
            failed < 50,
            "sends kept going to broker-b ({failed} failed)"
        );
        let mut waited = 0;
        while !received.lock().unwrap().is_superset(&acked) && waited < 600 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            waited += 1;
        }
        consumer.shutdown().await;
        let received = received.lock().unwrap().clone();
        (acked, received)
    });
    let missing: Vec<_> = acked.difference(&received).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never consumed: {missing:?}"
    );
    assert!(received.iter().all(|b| b.starts_with("c-")));
    assert!(acked.len() >= 550);
}

#[test]
fn a_slave_longer_than_its_master_is_refused_and_keeps_its_records() {
    // As after an unclean master crash that lost acknowledged ASYNC writes the slave has:
    // here the master comes back with an empty store, on the same ports.
    let ns = namesrv();
    let port = thruster_tests::free_port_block(&[0, 1]);
    let listen = format!("listenPort={port}");
    let mut master = ServerProcess::broker(
        ns.addr,
        1,
        &[&listen, "brokerName=rl", "vipChannelEnable=false"],
    );
    let slave = slave(&ns.addr.to_string(), "rl", 1, &[]);
    Client::connect(master.addr).create_topic("Longer", 1);
    replicating(ns.addr, "Longer", 1);
    let mut client = Client::connect(master.addr);
    for i in 0..20 {
        let request = RemotingCommand::request(rc::SEND_MESSAGE_V2, &v2_header("Longer", 0, None))
            .with_body(format!("kept-{i}").into_bytes());
        assert_eq!(client.invoke(request).code, response_code::SUCCESS);
    }
    assert!(wait_until(WAIT, || diff(master.addr) == 0));
    master.kill();
    std::fs::remove_dir_all(master.dir.path().join("data")).unwrap();
    let master = master.restart();
    let mut to_slave = Client::connect(slave.addr);
    let refused = wait_until(WAIT, || {
        runtime_info(&mut to_slave)["haLastError"].contains("past this master's end")
    });
    assert!(refused, "{:?}", runtime_info(&mut to_slave));
    assert_eq!(
        runtime_info(&mut Client::connect(master.addr))["haConnectionCount"],
        "0"
    );
    let kept = pull_records(&mut to_slave, "Longer", 0);
    assert_eq!(kept.len(), 20, "the slave deleted nothing");
}

#[test]
fn with_slave_read_enable_a_master_sends_backlog_readers_to_the_slave() {
    // A small memory window: the start of the queue is soon read from the files.
    let ns = namesrv();
    let settings = [
        "brokerName=rd",
        "slaveReadEnable=true",
        "memoryWindowBytes=4194304",
    ];
    let master = ServerProcess::broker(ns.addr, 1, &settings);
    let _slave = slave(&ns.addr.to_string(), "rd", 1, &[]);
    Client::connect(master.addr).create_topic("Backlog", 1);
    replicating(ns.addr, "Backlog", 1);
    let mut client = Client::connect(master.addr);
    let body = vec![b'b'; 64 * 1024];
    for _ in 0..256 {
        let request = RemotingCommand::request(rc::SEND_MESSAGE_V2, &v2_header("Backlog", 0, None))
            .with_body(body.clone());
        assert_eq!(client.invoke(request).code, response_code::SUCCESS);
    }
    let suggested = |offset: i64, client: &mut Client| {
        let response = client.invoke(thruster_tests::wire::pull_request("Backlog", 0, offset, 0));
        assert_eq!(response.code, response_code::SUCCESS);
        response
            .decode_header::<thruster_client::protocol::header::pull::PullMessageResponseHeader>()
            .unwrap()
            .suggest_which_broker_id
    };
    assert_eq!(
        suggested(0, &mut client),
        1,
        "the backlog's start is on disk: read the slave"
    );
    assert_eq!(
        suggested(255, &mut client),
        0,
        "the tail is in memory: stay"
    );
}
