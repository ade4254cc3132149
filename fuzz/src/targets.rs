//! The fuzz targets: each has valid seeds and a run that decodes one input (true when the
//! decoder accepted it). A run never panics on any input: that is what is fuzzed.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use thruster_protocol::batch::{decode_batch, encode_entry, BatchEntry};
use thruster_protocol::body::heartbeat::{ConsumerData, HeartbeatData, SubscriptionData};
use thruster_protocol::body::{
    decode_lenient, encode, BrokerData, ConsumerOffsetSerializeWrapper, JsonStyle, QueueData,
    RegisterBrokerBody, SubscriptionGroupConfig, SubscriptionGroupWrapper, TopicConfig,
    TopicConfigSerializeWrapper, TopicRouteData,
};
use thruster_protocol::header::ha::HaTransferRequestHeader;
use thruster_protocol::header::pull::PullMessageRequestHeader;
use thruster_protocol::header::send::{SendMessageRequestHeader, SendMessageRequestHeaderV2};
use thruster_protocol::message::{
    self, body_crc, decode_record, decode_records, encode_properties, RecordRef,
};
use thruster_protocol::{decode_frame, RemotingCommand, SerializeType, FRAME_MAX_BYTES_DEFAULT};

pub struct Target {
    pub name: &'static str,
    pub seeds: fn() -> Vec<Vec<u8>>,
    pub run: fn(&[u8]) -> bool,
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "frame",
        seeds: frame_seeds,
        run: frame_run,
    },
    Target {
        name: "record",
        seeds: record_seeds,
        run: record_run,
    },
    Target {
        name: "batch",
        seeds: batch_seeds,
        run: batch_run,
    },
    Target {
        name: "json",
        seeds: json_seeds,
        run: json_run,
    },
    Target {
        name: "conf",
        seeds: conf_seeds,
        run: conf_run,
    },
    Target {
        name: "properties",
        seeds: properties_seeds,
        run: properties_run,
    },
];

fn send_v2() -> SendMessageRequestHeaderV2 {
    SendMessageRequestHeaderV2::from(SendMessageRequestHeader {
        producer_group: "PG".into(),
        topic: "TopicTest".into(),
        default_topic: "TBW102".into(),
        default_topic_queue_nums: 4,
        queue_id: 1,
        sys_flag: 0,
        born_timestamp: 1_700_000_000_000,
        flag: 0,
        properties: Some(encode_properties([("TAGS", "a"), ("KEYS", "k1 k2")])),
        reconsume_times: None,
        unit_mode: None,
        batch: None,
        max_reconsume_times: None,
        broker_name: None,
    })
}

fn frame_seeds() -> Vec<Vec<u8>> {
    let mut commands = vec![
        RemotingCommand::request(10, &send_v2()).with_body(b"hello".to_vec()),
        RemotingCommand::bare_request(28),
        RemotingCommand::bare_request(34).with_body(b"{\"clientID\":\"c\"}".to_vec()),
    ];
    commands.push(commands[0].success().with_body(b"x".to_vec()));
    let mut seeds = Vec::new();
    for mut command in commands {
        for serialize_type in [SerializeType::Json, SerializeType::RocketMq] {
            command.serialize_type = serialize_type;
            let mut wire = BytesMut::new();
            thruster_protocol::encode(&command, &mut wire).expect("encodes");
            seeds.push(wire.to_vec());
        }
    }
    seeds
}

fn frame_run(input: &[u8]) -> bool {
    let mut buf = BytesMut::from(input);
    let mut accepted = false;
    while let Ok(Some(frame)) = decode_frame(&mut buf, FRAME_MAX_BYTES_DEFAULT) {
        let Ok(command) = frame.into_command() else {
            break;
        };
        accepted = true;
        // Every typed header a broker decodes from requests like these.
        let _ = command.decode_header::<SendMessageRequestHeaderV2>();
        let _ = command.decode_header::<SendMessageRequestHeader>();
        let _ = command.decode_header::<PullMessageRequestHeader>();
        let _ = command.decode_header::<HaTransferRequestHeader>();
        let _ = message::parse_properties(command.ext_fields.get("i").unwrap_or_default());
        // And what is decoded encodes again.
        let mut out = BytesMut::new();
        let _ = thruster_protocol::encode(&command, &mut out);
    }
    accepted
}

fn record(body: &[u8], topic: &str, properties: &str, v6: bool) -> Vec<u8> {
    let born = if v6 { "[::1]:5555" } else { "10.0.0.9:5555" };
    let record = RecordRef {
        queue_id: 3,
        flag: 7,
        queue_offset: 42,
        physical_offset: 1 << 40,
        sys_flag: 0,
        born_timestamp: 1_700_000_000_000,
        born_host: born.parse().expect("an address"),
        store_timestamp: 1_700_000_000_500,
        store_host: "127.0.0.1:10911".parse().expect("an address"),
        reconsume_times: 2,
        prepared_transaction_offset: 0,
        body,
        topic,
        properties,
    };
    let mut out = Vec::new();
    record.encode(body_crc(body), &mut out);
    out
}

fn record_seeds() -> Vec<Vec<u8>> {
    let props = encode_properties([("TAGS", "TagA"), ("UNIQ_KEY", "ABC")]);
    let one = record(b"hello", "TopicTest", &props, false);
    let two = record(&[7u8; 300], "T", "", true);
    let mut both = one.clone();
    both.extend_from_slice(&two);
    vec![one, two, both]
}

fn record_run(input: &[u8]) -> bool {
    let bytes = Bytes::copy_from_slice(input);
    let _ = message::peek_record(input);
    let _ = decode_record(&bytes, false);
    let _ = decode_records(&bytes, false);
    match decode_record(&bytes, true) {
        Ok(record) => {
            let _ = record.looks_torn();
            true
        }
        Err(_) => false,
    }
}

fn batch_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..3 {
        encode_entry(
            &BatchEntry {
                flag: i,
                body: Bytes::from(format!("body-{i}")),
                properties: encode_properties([("KEYS", "k")]),
            },
            &mut out,
        );
    }
    vec![out]
}

fn batch_run(input: &[u8]) -> bool {
    decode_batch(&Bytes::copy_from_slice(input), 1024).is_ok()
}

fn json_seeds() -> Vec<Vec<u8>> {
    let mut route = TopicRouteData::default();
    route.broker_datas.push(BrokerData {
        broker_name: "b".into(),
        broker_addrs: BTreeMap::from([
            (0, "127.0.0.1:10911".into()),
            (1, "127.0.0.1:10921".into()),
        ]),
        ..BrokerData::default()
    });
    route.queue_datas.push(QueueData {
        broker_name: "b".into(),
        read_queue_nums: 4,
        write_queue_nums: 4,
        perm: 6,
        ..QueueData::default()
    });
    let heartbeat = HeartbeatData {
        client_id: "c@1".into(),
        consumer_data_set: vec![ConsumerData {
            group_name: "g".into(),
            consume_from_where: "CONSUME_FROM_LAST_OFFSET".into(),
            consume_type: "CONSUME_PASSIVELY".into(),
            message_model: "CLUSTERING".into(),
            subscription_data_set: vec![SubscriptionData {
                topic: "T".into(),
                sub_string: "a || b".into(),
                expression_type: "TAG".into(),
                ..SubscriptionData::default()
            }],
            ..ConsumerData::default()
        }],
        ..HeartbeatData::default()
    };
    let mut topics = TopicConfigSerializeWrapper::default();
    topics
        .topic_config_table
        .insert("T".into(), TopicConfig::new("T", 4, 6));
    let mut offsets = ConsumerOffsetSerializeWrapper::default();
    offsets
        .offset_table
        .insert("T@g".into(), BTreeMap::from([(0, 5), (1, 7)]));
    let mut groups = SubscriptionGroupWrapper::default();
    groups
        .subscription_group_table
        .insert("g".into(), SubscriptionGroupConfig::named("g"));
    vec![
        route.encode(JsonStyle::Standard),
        route.encode(JsonStyle::Fastjson),
        encode(&heartbeat),
        encode(&RegisterBrokerBody {
            filter_server_list: Vec::new(),
            topic_config_serialize_wrapper: topics,
        }),
        encode(&offsets),
        encode(&groups),
    ]
}

fn json_run(input: &[u8]) -> bool {
    let mut accepted = false;
    accepted |= decode_lenient::<TopicRouteData>("route", input).is_ok();
    accepted |= decode_lenient::<HeartbeatData>("heartbeat", input).is_ok();
    accepted |= decode_lenient::<RegisterBrokerBody>("register", input).is_ok();
    accepted |= decode_lenient::<ConsumerOffsetSerializeWrapper>("offsets", input).is_ok();
    accepted |= decode_lenient::<SubscriptionGroupWrapper>("groups", input).is_ok();
    accepted
}

fn conf_seeds() -> Vec<Vec<u8>> {
    vec![
        b"brokerClusterName=C\nbrokerName=b\nbrokerId=1\nbrokerRole=SLAVE\nlistenPort=10911\n\
          namesrvAddr=127.0.0.1:9876;127.0.0.1:9877\nflushDiskType=SYNC_FLUSH\n\
          messageDelayLevel=1s 5s 10m 2h\nshards=2\nhaMasterAddress=127.0.0.1:10912\n"
            .to_vec(),
        b"# comment\n! other\nmappedFileSizeCommitLog: 1073741824\nmaxMessageSize=4194304\n\
          shardPortStep=10\nserverChannelMaxIdleTimeSeconds=120\nhaTransferBatchBytes=4194304\n"
            .to_vec(),
    ]
}

/// Keys whose values are host names the parser resolves (DNS): left out, a fuzzer must not
/// send lookups for random names (and each would take as long as the resolver's timeout).
const RESOLVED_KEYS: [&str; 2] = ["namesrvAddr", "haMasterAddress"];

fn conf_run(input: &[u8]) -> bool {
    use std::sync::OnceLock;
    use thruster_broker::config::{parse_properties, BrokerConfig};
    // The defaults read the host name and core count: once, not per input.
    static DEFAULTS: OnceLock<BrokerConfig> = OnceLock::new();
    let text = String::from_utf8_lossy(input);
    let mut config = DEFAULTS.get_or_init(BrokerConfig::default).clone();
    let mut accepted = true;
    for (key, value) in parse_properties(&text) {
        if RESOLVED_KEYS.contains(&key.as_str()) {
            continue;
        }
        accepted &= config.set(&key, &value).is_ok();
    }
    accepted && config.validate().is_ok()
}

fn properties_seeds() -> Vec<Vec<u8>> {
    vec![encode_properties([
        ("TAGS", "a"),
        ("KEYS", "k1 k2"),
        ("UNIQ_KEY", "U"),
        ("DELAY", "3"),
    ])
    .into_bytes()]
}

fn properties_run(input: &[u8]) -> bool {
    let text = String::from_utf8_lossy(input);
    let parsed = message::parse_properties(&text);
    let _ = message::property_pairs(&text).count();
    let _ = message::find_property(&text, "TAGS");
    let _ = message::tag_code(&text);
    !parsed.is_empty()
}
