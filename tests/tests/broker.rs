//! `thruster-broker` as a process, driven frame by frame: restart durability, long polling,
//! offsets, cross-shard hops, clean shutdown, and bad input that must not hurt anyone else.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use thruster_client::protocol::body::{self, decode_lenient, KvTable, TopicConfigSerializeWrapper};
use thruster_client::protocol::header::offset::{
    GetMaxOffsetRequestHeader, OffsetResponseHeader, QueryConsumerOffsetRequestHeader,
    UpdateConsumerOffsetRequestHeader,
};
use thruster_client::protocol::header::pull::PullMessageResponseHeader;
use thruster_client::protocol::header::query::ViewMessageRequestHeader;
use thruster_client::protocol::header::send::SendMessageResponseHeader;
use thruster_client::protocol::header::EmptyHeader;
use thruster_client::protocol::message::{decode_offset_msg_id, decode_records, encode_properties};
use thruster_client::protocol::{request_code as rc, response_code, RemotingCommand};
use thruster_tests::wire::{pull_request, runtime_info, v2_header};
use thruster_tests::{route, route_brokers, wait_until, Client, ServerProcess};

const QUEUES: i32 = 4;

fn start(shards: usize) -> (ServerProcess, ServerProcess) {
    start_with(shards, &[])
}

fn start_with(shards: usize, extra: &[&str]) -> (ServerProcess, ServerProcess) {
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let broker = ServerProcess::broker(namesrv.addr, shards, extra);
    (namesrv, broker)
}

/// One broker name for the process: queues spread over the shards, requests hop to owners.
/// For tests that address all of a topic's queues through one connection.
const ONE_NAME: &str = "brokerPerShard=false";

fn create_topic(client: &mut Client, topic: &str) {
    client.create_topic(topic, QUEUES);
}

fn send(client: &mut Client, topic: &str, queue_id: i32, body: &str) -> SendMessageResponseHeader {
    let header = v2_header(
        topic,
        queue_id,
        Some(encode_properties([("KEYS", body), ("TAGS", "T")])),
    );
    let request =
        RemotingCommand::request(rc::SEND_MESSAGE_V2, &header).with_body(body.as_bytes().to_vec());
    let response = client.invoke(request);
    assert_eq!(
        response.code,
        response_code::SUCCESS,
        "{:?}",
        response.remark
    );
    response.decode_header().expect("send response header")
}

/// Every body in a queue from offset 0, in order.
fn pull_bodies(client: &mut Client, topic: &str, queue_id: i32) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut offset = 0;
    loop {
        let response = client.invoke(pull_request(topic, queue_id, offset, 0));
        if response.code != response_code::SUCCESS {
            assert_eq!(
                response.code,
                response_code::PULL_NOT_FOUND,
                "{:?}",
                response.remark
            );
            return bodies;
        }
        let header: PullMessageResponseHeader = response.decode_header().unwrap();
        let records = decode_records(&response.body, true).expect("stored records");
        for record in &records {
            assert_eq!(record.queue_offset, offset, "records in queue order");
            assert_eq!(record.queue_id, queue_id);
            bodies.push(String::from_utf8(record.body.to_vec()).unwrap());
            offset += 1;
        }
        assert_eq!(header.next_begin_offset, offset);
    }
}

fn offset_of(response: &RemotingCommand) -> i64 {
    assert_eq!(
        response.code,
        response_code::SUCCESS,
        "{:?}",
        response.remark
    );
    response
        .decode_header::<OffsetResponseHeader>()
        .unwrap()
        .offset
}

#[test]
fn topics_messages_and_offsets_survive_a_restart() {
    let (_namesrv, broker) = start_with(2, &[ONE_NAME]);
    let mut client = Client::connect(broker.addr);
    create_topic(&mut client, "Durable");
    let mut sent = vec![Vec::new(); QUEUES as usize];
    for i in 0..40 {
        let queue = i % QUEUES;
        let body = format!("m-{i}");
        let response = send(&mut client, "Durable", queue, &body);
        assert_eq!(response.queue_id, queue);
        sent[queue as usize].push(body);
    }
    for queue in 0..QUEUES {
        let request = RemotingCommand::request(
            rc::UPDATE_CONSUMER_OFFSET,
            &UpdateConsumerOffsetRequestHeader {
                consumer_group: "g".into(),
                topic: "Durable".into(),
                queue_id: queue,
                commit_offset: 3 + i64::from(queue),
                broker_name: None,
            },
        );
        assert_eq!(client.invoke(request).code, response_code::SUCCESS);
    }
    drop(client);
    let mut broker = broker;
    assert!(broker.stop_gracefully(), "clean exit on SIGTERM");
    let log = broker.log();
    assert!(log.contains("broker stopped cleanly"), "{log}");
    let broker = broker.restart();
    let log = broker.log();
    let second_run = &log[log.rfind("broker stopped cleanly").unwrap()..];
    assert!(
        second_run.contains("crashed=false") && !second_run.contains("crashed=true"),
        "a clean stop leaves no abort file: recovery must not treat it as a crash\n{second_run}"
    );
    let mut client = Client::connect(broker.addr);
    let topics = client.invoke(RemotingCommand::request(
        rc::GET_ALL_TOPIC_CONFIG,
        &EmptyHeader {},
    ));
    let wrapper: TopicConfigSerializeWrapper = decode_lenient("topics", &topics.body).unwrap();
    assert_eq!(
        wrapper.topic_config_table["Durable"].write_queue_nums,
        QUEUES
    );
    for queue in 0..QUEUES {
        assert_eq!(
            pull_bodies(&mut client, "Durable", queue),
            sent[queue as usize]
        );
        let max = client.invoke(RemotingCommand::request(
            rc::GET_MAX_OFFSET,
            &GetMaxOffsetRequestHeader {
                topic: "Durable".into(),
                queue_id: queue,
                committed: None,
                broker_name: None,
            },
        ));
        assert_eq!(offset_of(&max), 10);
        let committed = client.invoke(RemotingCommand::request(
            rc::QUERY_CONSUMER_OFFSET,
            &QueryConsumerOffsetRequestHeader {
                consumer_group: "g".into(),
                topic: "Durable".into(),
                queue_id: queue,
                set_zero_if_not_found: None,
                broker_name: None,
            },
        ));
        assert_eq!(offset_of(&committed), 3 + i64::from(queue));
    }
}

fn update_offset(client: &mut Client, topic: &str, queue_id: i32) -> RemotingCommand {
    client.invoke(RemotingCommand::request(
        rc::UPDATE_CONSUMER_OFFSET,
        &UpdateConsumerOffsetRequestHeader {
            consumer_group: "g".into(),
            topic: topic.into(),
            queue_id,
            commit_offset: 5,
            broker_name: None,
        },
    ))
}

/// A client cannot grow the offset table with queues the broker does not have.
#[test]
fn offsets_of_queues_that_do_not_exist_are_refused() {
    let (_namesrv, broker) = start_with(1, &[]);
    let mut client = Client::connect(broker.addr);
    create_topic(&mut client, "Offsets");
    let unknown = update_offset(&mut client, "NoSuchTopic", 0);
    assert_eq!(
        unknown.code,
        response_code::TOPIC_NOT_EXIST,
        "{:?}",
        unknown.remark
    );
    let outside = update_offset(&mut client, "Offsets", QUEUES);
    assert_eq!(
        outside.code,
        response_code::SYSTEM_ERROR,
        "{:?}",
        outside.remark
    );
    let negative = update_offset(&mut client, "Offsets", -1);
    assert_eq!(negative.code, response_code::SYSTEM_ERROR);
    let stored = update_offset(&mut client, "Offsets", QUEUES - 1);
    assert_eq!(stored.code, response_code::SUCCESS, "{:?}", stored.remark);
    let query = |client: &mut Client, topic: &str, queue_id| {
        client.invoke(RemotingCommand::request(
            rc::QUERY_CONSUMER_OFFSET,
            &QueryConsumerOffsetRequestHeader {
                consumer_group: "g".into(),
                topic: topic.into(),
                queue_id,
                set_zero_if_not_found: Some(false),
                broker_name: None,
            },
        ))
    };
    assert_eq!(offset_of(&query(&mut client, "Offsets", QUEUES - 1)), 5);
    let refused = query(&mut client, "Offsets", QUEUES);
    assert_eq!(
        refused.code,
        response_code::QUERY_NOT_FOUND,
        "nothing was stored"
    );
}

#[test]
fn a_parked_pull_is_answered_by_the_next_send_to_its_queue_not_by_its_timeout() {
    let (_namesrv, broker) = start_with(2, &[ONE_NAME]);
    let mut setup = Client::connect(broker.addr);
    create_topic(&mut setup, "LongPoll");
    create_topic(&mut setup, "LongPollOther");
    for queue in 0..QUEUES {
        // Nothing yet: a pull without suspension answers PULL_NOT_FOUND at once.
        let response = setup.invoke(pull_request("LongPoll", queue, 0, 0));
        assert_eq!(response.code, response_code::PULL_NOT_FOUND);
    }
    let hold_ms = 20_000;
    for queue in 0..QUEUES {
        let mut puller = Client::connect(broker.addr);
        let started = Instant::now();
        let mut request = pull_request("LongPoll", queue, 0, hold_ms);
        request.opaque = 1;
        puller.send(&request).unwrap();
        // The pull is parked (no answer yet) ...
        send(&mut setup, "LongPollOther", queue, "other-topic");
        // ... a send to another topic does not wake it; one to its own queue does.
        let body = format!("wake-{queue}");
        send(&mut setup, "LongPoll", queue, &body);
        let response = puller.read_command().unwrap().expect("pull response");
        let waited = started.elapsed();
        assert_eq!(
            response.code,
            response_code::SUCCESS,
            "{:?}",
            response.remark
        );
        let records = decode_records(&response.body, true).unwrap();
        let bodies: Vec<_> = records.iter().map(|r| r.body.clone()).collect();
        assert!(
            bodies.contains(&body.clone().into_bytes().into()),
            "{bodies:?}"
        );
        assert!(
            waited < Duration::from_millis(hold_ms as u64 / 2),
            "answered after {waited:?}: by the timeout, not by the send"
        );
    }
}

/// A parked pull's mark lives as long as the pull: answered by a send, by its timeout or at
/// shutdown, it leaves nothing behind; and shutdown answers it at once.
#[test]
fn parked_pulls_leave_no_mark_behind_and_are_answered_at_shutdown() {
    let (_namesrv, mut broker) = start_with(1, &[]);
    let mut setup = Client::connect(broker.addr);
    create_topic(&mut setup, "Parked");
    let waited_on = |client: &mut Client| -> u64 {
        runtime_info(client)["thrusterQueuesWaitedOn"]
            .parse()
            .unwrap()
    };
    // The delayed-delivery loops (18 levels) and the timer wheel's (24 levels) wait on their
    // queues all along.
    let levels = 18 + 24;
    assert!(wait_until(Duration::from_secs(10), || waited_on(
        &mut setup
    ) == levels));
    let park = |queue: i32, hold_ms: i64| {
        let mut puller = Client::connect(broker.addr);
        let mut request = pull_request("Parked", queue, 0, hold_ms);
        request.opaque = 1;
        puller.send(&request).unwrap();
        puller
    };
    // Answered by its timeout.
    let mut timed_out = park(0, 300);
    let response = timed_out.read_command().unwrap().expect("pull response");
    assert_eq!(response.code, response_code::PULL_NOT_FOUND);
    // Answered by a send, once it is parked.
    let mut woken = park(1, 20_000);
    assert!(wait_until(Duration::from_secs(10), || waited_on(
        &mut setup
    ) == levels + 1));
    send(&mut setup, "Parked", 1, "wake");
    let response = woken.read_command().unwrap().expect("pull response");
    assert_eq!(
        response.code,
        response_code::SUCCESS,
        "{:?}",
        response.remark
    );
    assert_eq!(
        waited_on(&mut setup),
        levels,
        "answered pulls leave no mark"
    );
    // Answered at shutdown, long before its hold ends.
    let mut at_shutdown = park(2, 60_000);
    assert!(wait_until(Duration::from_secs(10), || waited_on(
        &mut setup
    ) == levels + 1));
    let started = Instant::now();
    assert!(broker.stop_gracefully(), "clean exit on SIGTERM");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let response = at_shutdown.read_command().unwrap().expect("pull response");
    assert_eq!(response.code, response_code::PULL_NOT_FOUND);
}

#[test]
fn requests_for_other_shards_hop_and_are_counted_and_ids_lead_back() {
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let broker = ServerProcess::broker(namesrv.addr, 2, &[ONE_NAME]);
    let mut client = Client::connect(broker.addr);
    create_topic(&mut client, "Hops");
    let mut ids = Vec::new();
    for queue in 0..QUEUES {
        let response = send(&mut client, "Hops", queue, &format!("h-{queue}"));
        ids.push(response.msg_id);
    }
    // One connection lives on one shard, and the topic's queues are spread over both: some of
    // these sends crossed.
    let info = client.invoke(RemotingCommand::request(
        rc::GET_BROKER_RUNTIME_INFO,
        &EmptyHeader {},
    ));
    let table: KvTable = decode_lenient("runtime info", &info.body).unwrap();
    let hops: u64 = table.table["crossShardHops"].parse().unwrap();
    assert!(hops >= 2, "expected at least two hops, got {hops}");
    assert_eq!(table.table["msgPutTotalTodayNow"], "4");
    // offsetMsgIds name this broker and an offset that VIEW_MESSAGE_BY_ID finds, whichever
    // shard wrote it.
    let mut shards = BTreeSet::new();
    for (queue, id) in ids.iter().enumerate() {
        let (host, offset) = decode_offset_msg_id(id).expect("offsetMsgId");
        assert_eq!(host, broker.addr);
        shards.insert(offset >> 56);
        let record = view_record(&mut client, offset);
        assert_eq!(record.body.as_ref(), format!("h-{queue}").as_bytes());
    }
    assert_eq!(shards.len(), 2, "both shards stored messages");
}

/// VIEW_MESSAGE_BY_ID: the record at CommitLog `offset` (asserts it is found).
fn view_record(
    client: &mut Client,
    offset: i64,
) -> thruster_client::protocol::message::DecodedRecord {
    let response = client.invoke(RemotingCommand::request(
        rc::VIEW_MESSAGE_BY_ID,
        &ViewMessageRequestHeader {
            offset,
            topic: None,
            broker_name: None,
        },
    ));
    assert_eq!(
        response.code,
        response_code::SUCCESS,
        "{:?}",
        response.remark
    );
    decode_records(&response.body, true).unwrap().remove(0)
}

#[test]
fn each_shard_is_a_broker_of_its_own_and_no_request_hops() {
    // The default: every shard registers as a broker with its own name, port and share of each
    // topic's queues, so a client that follows the routes (any RocketMQ client) reaches the
    // owner directly.
    let (namesrv, broker) = start(2);
    let mut admin = Client::connect(broker.addr);
    create_topic(&mut admin, "PerShard");
    let brokers = route_brokers(namesrv.addr, "PerShard");
    assert_eq!(brokers.len(), 2, "one broker per shard: {brokers:?}");
    let base = brokers[0].name.strip_suffix("-s0").expect("shard 0's name");
    assert_eq!(brokers[1].name, format!("{base}-s1"));
    assert_eq!(
        brokers[0].addr, broker.addr,
        "shard 0 is the broker's main port"
    );
    assert_ne!(brokers[0].addr, brokers[1].addr);
    assert_eq!(
        brokers.iter().map(|b| b.write_queues).sum::<i32>(),
        QUEUES,
        "the topic's queues in all, whatever the shard count: {brokers:?}"
    );
    for (shard, broker) in brokers.iter().enumerate() {
        let (name, addr, queues) = (&broker.name, &broker.addr, &broker.write_queues);
        let mut client = Client::connect(*addr);
        for queue in 0..*queues {
            let body = format!("{name}-{queue}");
            let response = send(&mut client, "PerShard", queue, &body);
            let (host, offset) = decode_offset_msg_id(&response.msg_id).expect("offsetMsgId");
            assert_eq!(host, *addr, "the id leads back to the shard's own port");
            assert_eq!(offset >> 56, shard as i64, "stored by the shard itself");
            let record = view_record(&mut client, offset);
            assert_eq!(record.body.as_ref(), body.as_bytes());
            assert_eq!(record.queue_id, queue, "queue ids are the shard's own");
            assert_eq!(pull_bodies(&mut client, "PerShard", queue), vec![body]);
        }
        // A queue id past this shard's share is refused, as past a broker's queues.
        let mut past = v2_header("PerShard", *queues, None);
        past.e = *queues;
        let refused = client
            .invoke(RemotingCommand::request(rc::SEND_MESSAGE_V2, &past).with_body(b"x".to_vec()));
        assert_eq!(
            refused.code,
            response_code::SYSTEM_ERROR,
            "{:?}",
            refused.remark
        );
        let info = runtime_info(&mut client);
        assert_eq!(info["crossShardHops"], "0", "{name}");
        assert_eq!(info["msgPutTotalTodayNow"], queues.to_string(), "{name}");
        assert!(
            !info.contains_key("thrusterShards"),
            "no shard map to follow: every broker name is one shard"
        );
    }
}

#[test]
fn every_topic_created_concurrently_is_routable_once_its_create_is_answered() {
    // Creations arrive while registrations are on their way to the name server: each create
    // is answered only once a registration covering it is done, so its route is there at
    // once (a change made during a registration used to wait for the next one, up to a
    // registration period later, while its create was answered at the wait's bound).
    let (namesrv, broker) = start(2);
    let creators: Vec<_> = (0..8)
        .map(|creator| {
            let (broker, namesrv) = (broker.addr, namesrv.addr);
            std::thread::spawn(move || {
                let mut client = Client::connect(broker);
                let mut missing = Vec::new();
                for i in 0..25 {
                    let topic = format!("Concurrent-{creator}-{i}");
                    create_topic(&mut client, &topic);
                    if route(namesrv, &topic).is_none() {
                        missing.push(topic);
                    }
                }
                missing
            })
        })
        .collect();
    let missing: Vec<String> = creators
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(missing.is_empty(), "created but not routable: {missing:?}");
}

#[test]
fn a_topic_created_while_a_registration_is_on_its_way_is_registered_right_after_it() {
    // A name server that accepts and never answers makes every registration round last
    // registerBrokerTimeoutMills; the live one is asked first in each round.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let namesrvs = format!("{};{silent_addr}", namesrv.addr);
    let broker =
        ServerProcess::broker_with_namesrvs(&namesrvs, 1, &["registerBrokerTimeoutMills=1500"]);
    let mut first = Client::connect(broker.addr);
    let creating_first = std::thread::spawn(move || create_topic(&mut first, "RoundOne"));
    // A round with RoundOne has begun once the live name server knows it; it goes on (the
    // silent one) for up to 1.5 s, and RoundTwo is created during it.
    let routable = |topic: &str| route(namesrv.addr, topic).is_some();
    assert!(wait_until(Duration::from_secs(10), || routable("RoundOne")));
    let mut second = Client::connect(broker.addr);
    create_topic(&mut second, "RoundTwo");
    // The next round starts as soon as this one ends, not a registration period (30 s) later.
    assert!(
        wait_until(Duration::from_secs(8), || routable("RoundTwo")),
        "a topic created during a registration waited for the next period"
    );
    creating_first.join().unwrap();
}

#[test]
fn a_name_server_without_single_topic_registration_gets_the_whole_table_at_once() {
    // Topic changes are announced topic by topic (REGISTER_TOPIC_IN_NAMESRV, code 217); a name
    // server that does not know the code (Apache RocketMQ's before 5.0) must get the whole table
    // instead, at once, not a registration period later. A proxy in front of a real name server
    // refuses code 217 as such a name server does and relays everything else.
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let upstream = namesrv.addr;
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let counter = refused.clone();
    std::thread::spawn(move || {
        for stream in proxy.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut broker = Client::from_stream(stream);
                let mut namesrv = Client::connect(upstream);
                while let Ok(Some(request)) = broker.read_command() {
                    let reply = if request.code == rc::REGISTER_TOPIC_IN_NAMESRV {
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        request.error(response_code::REQUEST_CODE_NOT_SUPPORTED, "not supported")
                    } else {
                        let mut reply = namesrv.invoke(request.clone());
                        reply.opaque = request.opaque;
                        reply
                    };
                    if broker.send(&reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let broker = ServerProcess::broker_with_namesrvs(&proxy_addr.to_string(), 2, &[]);
    let mut client = Client::connect(broker.addr);
    for topic in ["WholeTableA", "WholeTableB"] {
        create_topic(&mut client, topic);
        let brokers = route_brokers(namesrv.addr, topic);
        assert_eq!(
            brokers.iter().map(|b| b.write_queues).sum::<i32>(),
            QUEUES,
            "{topic} is routable once created: {brokers:?}"
        );
    }
    // Asked once, then never again: that name server takes the whole table from then on.
    assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn a_broker_killed_under_load_restarts_at_once_on_its_ports_with_every_acknowledged_message() {
    // Fixed ports (a restart must come back where clients and name servers know it): shard 0
    // on `port` with its VIP port 2 below, shard 1 on `port + 10` (shardPortStep) likewise.
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let port = thruster_tests::free_port_block(&[0, 2, 10, 12]) + 2;
    let listen = format!("listenPort={port}");
    // The HA ports (shard port + 1 by default) are not reserved here: free ones.
    let settings = [
        listen.as_str(),
        "flushDiskType=SYNC_FLUSH",
        "haListenPort=0",
    ];
    let broker = ServerProcess::broker(namesrv.addr, 2, &settings);
    assert_eq!(broker.addr.port(), port);
    let mut admin = Client::connect(broker.addr);
    create_topic(&mut admin, "KillLoad");
    let brokers = route_brokers(namesrv.addr, "KillLoad");
    let shard_addrs: Vec<_> = brokers.iter().map(|b| b.addr).collect();
    assert_eq!(
        shard_addrs,
        [
            broker.addr,
            std::net::SocketAddr::from(([127, 0, 0, 1], port + 10))
        ]
    );
    // One synchronous sender per shard broker until its connection dies; it keeps what was
    // acknowledged, and the one body in flight when the connection broke.
    let senders: Vec<_> = brokers
        .iter()
        .enumerate()
        .map(|(shard, b)| {
            let (addr, queues) = (b.addr, b.write_queues);
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut acked = vec![BTreeSet::new(); queues as usize];
                for i in 0.. {
                    let queue = i % queues;
                    let body = format!("s{shard}-{i}");
                    let header = v2_header("KillLoad", queue, None);
                    let request = RemotingCommand::request(rc::SEND_MESSAGE_V2, &header)
                        .with_body(body.clone().into_bytes());
                    match client.try_invoke(request) {
                        Ok(response) if response.code == response_code::SUCCESS => {
                            acked[queue as usize].insert(body);
                        }
                        _ => return (acked, body),
                    }
                }
                unreachable!("the loop ends when the broker dies")
            })
        })
        .collect();
    let mut watcher = Client::connect(broker.addr);
    let loaded = wait_until(Duration::from_secs(30), || {
        let put: u64 = runtime_info(&mut watcher)["msgPutTotalTodayNow"]
            .parse()
            .unwrap();
        put >= 100
    });
    assert!(loaded, "shard 0 stored 100 messages under load");
    // SIGKILL mid-load, then the same program, arguments and store at once.
    let broker = broker.restart();
    assert_eq!(broker.addr.port(), port, "back on the same port");
    for (shard, sender) in senders.into_iter().enumerate() {
        let (acked, in_flight) = sender.join().unwrap();
        assert!(
            acked.iter().any(|q| !q.is_empty()),
            "shard {shard} acknowledged sends"
        );
        let mut client = Client::connect(shard_addrs[shard]);
        for queue in 0..brokers[shard].write_queues {
            let stored: BTreeSet<String> = pull_bodies(&mut client, "KillLoad", queue)
                .into_iter()
                .collect();
            let acked = &acked[queue as usize];
            assert!(
                stored.is_superset(acked),
                "shard {shard} queue {queue}: acknowledged but lost: {:?}",
                acked.difference(&stored).collect::<Vec<_>>()
            );
            let unacked: Vec<_> = stored.difference(acked).collect();
            assert!(
                unacked.is_empty() || unacked == [&in_flight],
                "shard {shard} queue {queue}: only the send in flight may be there unacknowledged: {unacked:?}"
            );
        }
    }
}

#[test]
fn bad_frames_close_one_connection_and_the_broker_keeps_serving() {
    let (_namesrv, broker) = start(2);
    let mut healthy = Client::connect(broker.addr);
    create_topic(&mut healthy, "Healthy");
    // An oversized length field: that connection is closed.
    let mut bad = Client::connect(broker.addr);
    bad.send_bytes(&0x7fff_fff0u32.to_be_bytes()).unwrap();
    assert!(bad.read_command().unwrap_or(None).is_none());
    // A header that is not JSON: SYSTEM_ERROR, then closed.
    let mut garbage = Client::connect(broker.addr);
    let header = b"{not json";
    let mut frame = Vec::new();
    frame.extend_from_slice(&((4 + header.len()) as u32).to_be_bytes());
    frame.extend_from_slice(&(header.len() as u32).to_be_bytes());
    frame.extend_from_slice(header);
    garbage.send_bytes(&frame).unwrap();
    let response = garbage.read_command().unwrap().expect("error response");
    assert_eq!(response.code, response_code::SYSTEM_ERROR);
    // A send with a missing header field and a batch body that is not one: errors, not panics.
    let mut missing = RemotingCommand::request(rc::SEND_MESSAGE_V2, &EmptyHeader {});
    missing.ext_fields.insert("b", "Healthy");
    let response = healthy.invoke(missing);
    assert_eq!(response.code, response_code::SYSTEM_ERROR);
    let mut batch_header = v2_header("Healthy", 0, None);
    batch_header.m = Some(true);
    let response = healthy.invoke(
        RemotingCommand::request(rc::SEND_BATCH_MESSAGE, &batch_header).with_body(vec![1, 2, 3]),
    );
    assert_eq!(response.code, response_code::MESSAGE_ILLEGAL);
    // A queue id past the topic's queues.
    batch_header.e = 99;
    batch_header.m = None;
    let response = healthy.invoke(
        RemotingCommand::request(rc::SEND_MESSAGE_V2, &batch_header).with_body(b"x".to_vec()),
    );
    assert_eq!(response.code, response_code::SYSTEM_ERROR);
    // An unknown code.
    let response = healthy.invoke(RemotingCommand::request(9999, &EmptyHeader {}));
    assert_eq!(response.code, response_code::REQUEST_CODE_NOT_SUPPORTED);
    // Everyone else is still served, on old and new connections.
    send(&mut healthy, "Healthy", 1, "still-here");
    let mut fresh = Client::connect(broker.addr);
    assert_eq!(pull_bodies(&mut fresh, "Healthy", 1), vec!["still-here"]);
}

#[test]
fn standalone_serves_routes_from_its_embedded_name_server() {
    let broker = ServerProcess::standalone_broker(2);
    let (namesrv_addr, broker_addr) = (broker.listening[0].1, broker.listening[1].1);
    assert_eq!(broker.listening[0].0, "thruster-namesrv");
    let mut client = Client::connect(broker_addr);
    create_topic(&mut client, "Standalone");
    // The topic's queues, over the shards' brokers; shard 0 is the printed address.
    let brokers = route_brokers(namesrv_addr, "Standalone");
    assert_eq!(brokers.iter().map(|b| b.write_queues).sum::<i32>(), QUEUES);
    assert_eq!(brokers[0].addr, broker_addr);
}

#[test]
fn sync_flush_acknowledged_sends_survive_kill_9() {
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    // One connection addresses all of the topic's queues: one broker name over both shards
    // (a_broker_killed_under_load_… covers a broker per shard).
    let broker = ServerProcess::broker(namesrv.addr, 2, &[ONE_NAME, "flushDiskType=SYNC_FLUSH"]);
    let mut client = Client::connect(broker.addr);
    create_topic(&mut client, "Crash");
    let mut acked = vec![Vec::new(); QUEUES as usize];
    for i in 0..200 {
        let queue = i % QUEUES;
        let body = format!("c-{i}");
        send(&mut client, "Crash", queue, &body); // asserts SUCCESS: flushed before the ack
        acked[queue as usize].push(body);
    }
    drop(client);
    // restart() kills the process with SIGKILL first: no shutdown, no final flush.
    let broker = broker.restart();
    // The first run started on an empty store, so only the restart can report a crash.
    assert!(
        broker.log().contains("crashed=true"),
        "the abort file marks the crash"
    );
    let mut client = Client::connect(broker.addr);
    for queue in 0..QUEUES {
        assert_eq!(
            pull_bodies(&mut client, "Crash", queue),
            acked[queue as usize]
        );
    }
}

#[test]
fn pulls_of_data_no_longer_in_memory_come_from_the_files_intact() {
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    // Each shard keeps only 1 MiB of CommitLog in memory; 3 MiB per queue go well past it.
    let broker = ServerProcess::broker(namesrv.addr, 2, &["memoryWindowBytes=1048576"]);
    let mut client = Client::connect(broker.addr);
    create_topic(&mut client, "Cold");
    let filler = "x".repeat(1000);
    let mut sent = vec![Vec::new(); 2];
    for i in 0..6000 {
        let queue = i % 2;
        let body = format!("{i}-{filler}");
        send(&mut client, "Cold", queue, &body);
        sent[queue as usize].push(body);
    }
    for queue in 0..2 {
        // pull_bodies checks each record's CRC, queue id and queue offset.
        assert_eq!(
            pull_bodies(&mut client, "Cold", queue),
            sent[queue as usize]
        );
    }
    let info = client.invoke(RemotingCommand::request(
        rc::GET_BROKER_RUNTIME_INFO,
        &EmptyHeader {},
    ));
    let table: KvTable = decode_lenient("runtime info", &info.body).unwrap();
    let from_files: u64 = table.table["pullSendfileBytes"].parse().unwrap();
    assert!(
        from_files > 4 << 20,
        "old records should be sent from the files, got {from_files} bytes"
    );
}

fn heartbeat(client_id: &str, group: &str) -> RemotingCommand {
    use thruster_client::protocol::body::heartbeat::{
        ConsumerData, HeartbeatData, SubscriptionData,
    };
    let data = HeartbeatData {
        client_id: client_id.into(),
        consumer_data_set: vec![ConsumerData {
            group_name: group.into(),
            consume_type: "CONSUME_PASSIVELY".into(),
            message_model: "CLUSTERING".into(),
            consume_from_where: "CONSUME_FROM_LAST_OFFSET".into(),
            subscription_data_set: vec![SubscriptionData {
                topic: "Members".into(),
                sub_string: "*".into(),
                expression_type: "TAG".into(),
                ..SubscriptionData::default()
            }],
            unit_mode: false,
        }],
        ..HeartbeatData::default()
    };
    RemotingCommand::request(rc::HEART_BEAT, &EmptyHeader {}).with_body(body::encode(&data))
}

/// Reads frames until a NOTIFY_CONSUMER_IDS_CHANGED request for `group` arrives.
fn expect_notify(client: &mut Client, group: &str) {
    loop {
        let frame = client.read_command().unwrap().expect("connection open");
        if frame.code == rc::NOTIFY_CONSUMER_IDS_CHANGED && !frame.is_response() {
            assert!(frame.is_oneway());
            assert_eq!(frame.ext_fields.get("consumerGroup"), Some(group));
            return;
        }
    }
}

#[test]
fn group_membership_is_seen_from_every_connection_and_changes_are_notified() {
    let (_namesrv, broker) = start(2);
    let mut a = Client::connect(broker.addr);
    assert_eq!(
        a.invoke(heartbeat("client-a", "Members-G")).code,
        response_code::SUCCESS
    );
    // (a's own join notification arrives before the response; invoke skips it.)
    // More connections than shards, so some land on the other shard: each sees the group.
    let mut others: Vec<Client> = (0..4).map(|_| Client::connect(broker.addr)).collect();
    for other in &mut others {
        assert_eq!(other.consumer_ids("Members-G"), vec!["client-a"]);
    }
    let mut b = Client::connect(broker.addr);
    assert_eq!(
        b.invoke(heartbeat("client-b", "Members-G")).code,
        response_code::SUCCESS
    );
    expect_notify(&mut a, "Members-G");
    // The table is replicated by messages between shards: a connection sees a change no
    // later than its own notification, other shards very soon after.
    for other in &mut others {
        assert!(wait_until(Duration::from_secs(10), || other
            .consumer_ids("Members-G")
            == vec!["client-a", "client-b"]));
    }
    // b goes away without unregistering: its connection closing removes it.
    drop(b);
    expect_notify(&mut a, "Members-G");
    assert_eq!(a.consumer_ids("Members-G"), vec!["client-a"]);
    for other in &mut others {
        assert!(wait_until(Duration::from_secs(10), || other
            .consumer_ids("Members-G")
            == vec!["client-a"]));
    }
    // The retry topic the group consumes from was created.
    let topics = a.invoke(RemotingCommand::request(
        rc::GET_ALL_TOPIC_CONFIG,
        &EmptyHeader {},
    ));
    let wrapper: TopicConfigSerializeWrapper = decode_lenient("topics", &topics.body).unwrap();
    assert!(wrapper.topic_config_table.contains_key("%RETRY%Members-G"));
}

#[test]
fn queue_locks_give_each_queue_to_one_client_from_any_connection() {
    use thruster_client::protocol::body::heartbeat::{
        LockBatchRequestBody, LockBatchResponseBody, MessageQueue,
    };
    let (_namesrv, broker) = start(2);
    let queues = |ids: &[i32]| -> std::collections::BTreeSet<MessageQueue> {
        ids.iter()
            .map(|&queue_id| MessageQueue {
                topic: "Ordered".into(),
                broker_name: "b".into(),
                queue_id,
            })
            .collect()
    };
    let lock = |client: &mut Client, id: &str, ids: &[i32], code: i32| {
        let body = LockBatchRequestBody {
            client_id: id.into(),
            consumer_group: "og".into(),
            mq_set: queues(ids),
            only_this_broker: None,
        };
        let response = client
            .invoke(RemotingCommand::request(code, &EmptyHeader {}).with_body(body::encode(&body)));
        assert_eq!(
            response.code,
            response_code::SUCCESS,
            "{:?}",
            response.remark
        );
        response
    };
    let held = |response: RemotingCommand| {
        decode_lenient::<LockBatchResponseBody>("locked", &response.body)
            .unwrap()
            .lock_ok_mq_set
    };
    // Connections land on either shard; the table is one for the broker.
    let mut c1 = Client::connect(broker.addr);
    let mut c2s: Vec<Client> = (0..4).map(|_| Client::connect(broker.addr)).collect();
    assert_eq!(
        held(lock(&mut c1, "c1", &[0, 1], rc::LOCK_BATCH_MQ)),
        queues(&[0, 1])
    );
    for c2 in &mut c2s {
        assert_eq!(
            held(lock(c2, "c2", &[1, 2], rc::LOCK_BATCH_MQ)),
            queues(&[2])
        );
    }
    lock(&mut c1, "c1", &[1], rc::UNLOCK_BATCH_MQ);
    assert_eq!(
        held(lock(&mut c2s[0], "c2", &[1], rc::LOCK_BATCH_MQ)),
        queues(&[1])
    );
}

/// The records of a queue from offset 0 (decoded, CRC-checked).
fn pull_records(
    client: &mut Client,
    topic: &str,
    queue_id: i32,
) -> Vec<thruster_client::protocol::message::DecodedRecord> {
    let response = client.invoke(pull_request(topic, queue_id, 0, 0));
    if response.code != response_code::SUCCESS {
        return Vec::new();
    }
    decode_records(&response.body, true).unwrap()
}

/// The first record of a queue, once one is there (panics if none arrives within `limit`).
fn first_record_within(
    client: &mut Client,
    topic: &str,
    queue_id: i32,
    limit: Duration,
) -> thruster_client::protocol::message::DecodedRecord {
    let mut records = Vec::new();
    let arrived = wait_until(limit, || {
        records = pull_records(client, topic, queue_id);
        !records.is_empty()
    });
    assert!(
        arrived,
        "nothing arrived in {topic}:{queue_id} within {limit:?}"
    );
    records.remove(0)
}

#[test]
fn delayed_messages_arrive_after_their_level_and_failed_ones_retry_then_die() {
    use thruster_client::protocol::header::client::ConsumerSendMsgBackRequestHeader;
    use thruster_client::protocol::message::{find_property, parse_properties};
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let broker = ServerProcess::broker(namesrv.addr, 2, &["messageDelayLevel=1s 2s 1s"]);
    let mut client = Client::connect(broker.addr);
    create_topic(&mut client, "Delayed");

    // DELAY=1: stored now, readable in its queue only once its level's delay has passed.
    // (Queue 1: with a broker per shard, shard 0 has queues 0 and 1 of the topic's 4; the
    // schedule, retry and dead-letter queues are its own.)
    let header = v2_header(
        "Delayed",
        1,
        Some(encode_properties([("DELAY", "1"), ("TAGS", "t")])),
    );
    let response = client.invoke(
        RemotingCommand::request(rc::SEND_MESSAGE_V2, &header).with_body(b"later".to_vec()),
    );
    assert_eq!(
        response.code,
        response_code::SUCCESS,
        "{:?}",
        response.remark
    );
    assert!(
        pull_records(&mut client, "Delayed", 1).is_empty(),
        "not delivered at once"
    );
    // It waits in the level's schedule queue, remembering where it belongs.
    let scheduled = pull_records(&mut client, "SCHEDULE_TOPIC_XXXX", 0).remove(0);
    assert_eq!(
        find_property(&scheduled.properties, "REAL_TOPIC"),
        Some("Delayed")
    );
    assert_eq!(find_property(&scheduled.properties, "REAL_QID"), Some("1"));
    let delivered = first_record_within(&mut client, "Delayed", 1, Duration::from_secs(20));
    assert_eq!(delivered.body.as_ref(), b"later");
    assert!(
        delivered.store_timestamp >= scheduled.store_timestamp + 1_000,
        "stored again once the level's delay had passed"
    );
    assert_eq!(find_property(&delivered.properties, "DELAY"), None);
    assert_eq!(find_property(&delivered.properties, "TAGS"), Some("t"));

    // A consumer gives the delivered message back: it comes again in the group's retry topic,
    // after a delay, one reconsume further.
    let send_back = |client: &mut Client, offset: i64, level: i32| {
        let response = client.invoke(RemotingCommand::request(
            rc::CONSUMER_SEND_MSG_BACK,
            &ConsumerSendMsgBackRequestHeader {
                offset,
                group: "G".into(),
                delay_level: level,
                origin_msg_id: None,
                origin_topic: Some("Delayed".into()),
                unit_mode: None,
                max_reconsume_times: Some(16),
                broker_name: None,
            },
        ));
        assert_eq!(
            response.code,
            response_code::SUCCESS,
            "{:?}",
            response.remark
        );
    };
    send_back(&mut client, delivered.physical_offset, 2);
    let retry = first_record_within(&mut client, "%RETRY%G", 0, Duration::from_secs(20));
    assert_eq!(retry.body.as_ref(), b"later");
    assert_eq!(retry.reconsume_times, 1);
    let props = parse_properties(&retry.properties);
    assert_eq!(props["RETRY_TOPIC"], "Delayed");
    assert!(props.contains_key("ORIGIN_MESSAGE_ID"));
    // Given up (a negative level): straight to the dead-letter topic.
    send_back(&mut client, retry.physical_offset, -1);
    let dead = first_record_within(&mut client, "%DLQ%G", 0, Duration::from_secs(10));
    assert_eq!(dead.reconsume_times, 2);
    assert_eq!(parse_properties(&dead.properties)["RETRY_TOPIC"], "Delayed");
}

#[test]
fn a_clean_stop_under_load_keeps_every_acknowledged_message() {
    use std::sync::{Arc, Mutex};
    // ASYNC_FLUSH: acknowledged messages may still be in memory when SIGTERM arrives; the
    // shutdown must flush them.
    let (_namesrv, broker) = start_with(2, &[ONE_NAME]);
    let mut client = Client::connect(broker.addr);
    create_topic(&mut client, "Stopping");
    drop(client);
    let acked: Arc<Mutex<Vec<Vec<String>>>> = Arc::new(Mutex::new(vec![Vec::new(); 4]));
    let addr = broker.addr;
    let sender = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            let mut client = Client::connect(addr);
            for i in 0.. {
                let queue = i % QUEUES;
                let body = format!("s-{i}");
                let header = v2_header("Stopping", queue, None);
                let request = RemotingCommand::request(rc::SEND_MESSAGE_V2, &header)
                    .with_body(body.clone().into_bytes());
                // Past the stop the connection fails or the broker refuses: not acknowledged.
                if client.send(&request.with_opaque(i + 1)).is_err() {
                    return;
                }
                match client.read_command() {
                    Ok(Some(response)) if response.code == response_code::SUCCESS => {
                        acked.lock().unwrap()[queue as usize].push(body)
                    }
                    Ok(Some(_)) => {}
                    _ => return,
                }
            }
        })
    };
    assert!(wait_until(Duration::from_secs(30), || {
        acked.lock().unwrap().iter().map(Vec::len).sum::<usize>() >= 2_000
    }));
    let mut broker = broker;
    assert!(broker.stop_gracefully(), "clean exit under load");
    sender.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let broker = broker.restart();
    let mut client = Client::connect(broker.addr);
    for queue in 0..QUEUES {
        let stored = pull_bodies(&mut client, "Stopping", queue);
        let expected = &acked[queue as usize];
        assert!(
            stored.len() >= expected.len() && stored[..expected.len()] == expected[..],
            "queue {queue}: {} acknowledged, {} stored",
            expected.len(),
            stored.len()
        );
    }
}

/// `Cpus_allowed_list` of the reactor thread of `shard` (glommio names it `shard-<i>-<executor
/// id>`; the reactor's four helper threads, started after it, carry the same name).
fn reactor_cpus(pid: u32, shard: usize) -> Option<String> {
    let prefix = format!("shard-{shard}-");
    let mut tids: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .flatten()
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    let reactor = tids.into_iter().find(|tid| {
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
            .is_ok_and(|comm| comm.starts_with(&prefix))
    })?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{reactor}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|cpus| cpus.trim().to_owned())
}

/// Sets the calling thread's CPU mask to `cpus` (a child spawned from it inherits the mask);
/// returns the mask it had.
fn set_thread_cpus(cpus: &[usize]) -> libc::cpu_set_t {
    let size_bytes = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: zeroed cpu_set_t values are valid empty sets; the calls write within their size.
    unsafe {
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, size_bytes, &mut old), 0);
        let mut new: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut new);
        }
        assert_eq!(libc::sched_setaffinity(0, size_bytes, &new), 0);
        old
    }
}

#[test]
fn shards_are_pinned_within_the_cpus_the_broker_was_given() {
    // An operator who starts the broker on some cores (taskset, a cpuset) keeps the others for
    // something else, a load generator say: shard i goes to the i-th allowed CPU, not to CPU i.
    let allowed = thruster_broker::runtime::allowed_cpus().expect("allowed CPUs");
    let last = *allowed.last().expect("some CPU");
    // Spawned from a thread of our own, so the test runner's threads keep their masks.
    let broker = std::thread::spawn(move || {
        let old = set_thread_cpus(&[last]);
        let broker = ServerProcess::standalone_broker(1);
        // SAFETY: restores the mask read above.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &old);
        }
        broker
    })
    .join()
    .expect("starting the broker");
    assert_eq!(
        reactor_cpus(broker.pid(), 0).as_deref(),
        Some(last.to_string().as_str()),
        "shard-0 of a broker started on CPU {last} (allowed here: {allowed:?})"
    );
}
