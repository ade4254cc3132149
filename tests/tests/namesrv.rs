//! `thruster-namesrv` as a process: registration, routes in both JSON styles, expiry, KV and
//! config commands, and bad input that must not hurt other connections.

use std::time::{Duration, Instant};

use thruster_client::protocol::body::{
    self, perm, ClusterInfo, DataVersion, KvTable, RegisterBrokerBody, TopicConfig, TopicList,
    TopicRouteData,
};
use thruster_client::protocol::header::namesrv::*;
use thruster_client::protocol::header::EmptyHeader;
use thruster_client::protocol::{
    request_code as rc, response_code, RemotingCommand, SerializeType,
};
use thruster_tests::{wait_until, Client, ServerProcess};

fn start_namesrv(expire_ms: u64) -> ServerProcess {
    let expire = expire_ms.to_string();
    ServerProcess::start(
        "thruster-namesrv",
        &[
            "--listen",
            "127.0.0.1:0",
            "--broker-expire-ms",
            &expire,
            "--scan-interval-ms",
            "100",
        ],
    )
}

fn register_request(
    broker_name: &str,
    addr: &str,
    topics: &[(&str, i32)],
    counter: i64,
) -> RemotingCommand {
    let mut body = RegisterBrokerBody::default();
    body.topic_config_serialize_wrapper.data_version = DataVersion {
        counter,
        state_version: 0,
        timestamp: 1_700_000_000_000,
    };
    for (topic, queues) in topics {
        body.topic_config_serialize_wrapper
            .topic_config_table
            .insert(
                topic.to_string(),
                TopicConfig::new(*topic, *queues, perm::READ_WRITE),
            );
    }
    let body = body::encode(&body);
    let header = RegisterBrokerRequestHeader {
        broker_name: broker_name.into(),
        broker_addr: addr.into(),
        cluster_name: "DefaultCluster".into(),
        ha_server_addr: "127.0.0.1:10912".into(),
        broker_id: 0,
        compressed: Some(false),
        body_crc32: Some((crc32fast::hash(&body) & 0x7FFF_FFFF) as i32),
        heartbeat_timeout_millis: None,
        enable_acting_master: None,
    };
    RemotingCommand::request(rc::REGISTER_BROKER, &header).with_body(body)
}

fn route_request(topic: &str, version: i32) -> RemotingCommand {
    let mut request = RemotingCommand::request(
        rc::GET_ROUTEINFO_BY_TOPIC,
        &GetRouteInfoRequestHeader {
            topic: topic.into(),
            accept_standard_json_only: None,
        },
    );
    request.version = version;
    request
}

#[test]
fn registered_broker_is_routed_then_expires_when_silent() {
    let namesrv = start_namesrv(1_500);
    let mut client = Client::connect(namesrv.addr);

    let response = client.invoke(register_request(
        "broker-a",
        "127.0.0.1:10911",
        &[("TopicTest", 4)],
        1,
    ));
    assert_eq!(
        response.code,
        response_code::SUCCESS,
        "{:?}",
        response.remark
    );
    let registered_at = Instant::now();

    // A 4.9.8 client gets standard JSON; a C++ (333) client gets fastjson bare keys.
    let modern = client.invoke(route_request("TopicTest", 409));
    assert_eq!(modern.code, response_code::SUCCESS);
    let text = String::from_utf8(modern.body.to_vec()).unwrap();
    assert!(
        text.contains(r#""brokerAddrs":{"0":"127.0.0.1:10911"}"#),
        "{text}"
    );
    let route = TopicRouteData::decode(&modern.body).unwrap();
    assert_eq!(route.queue_datas.len(), 1);
    assert_eq!(route.queue_datas[0].broker_name, "broker-a");
    assert_eq!(
        (
            route.queue_datas[0].read_queue_nums,
            route.queue_datas[0].write_queue_nums
        ),
        (4, 4)
    );
    assert_eq!(route.queue_datas[0].perm, perm::READ_WRITE);
    assert_eq!(route.broker_datas[0].cluster, "DefaultCluster");

    let old = client.invoke(route_request("TopicTest", 333));
    let text = String::from_utf8(old.body.to_vec()).unwrap();
    assert!(
        text.contains(r#""brokerAddrs":{0:"127.0.0.1:10911"}"#),
        "{text}"
    );
    assert_eq!(TopicRouteData::decode(&old.body).unwrap(), route);

    let cluster = client.invoke(RemotingCommand::bare_request(rc::GET_BROKER_CLUSTER_INFO));
    let cluster = ClusterInfo::decode(&cluster.body).unwrap();
    assert!(cluster.cluster_addr_table["DefaultCluster"].contains("broker-a"));
    assert_eq!(
        cluster.broker_addr_table["broker-a"].master_addr(),
        Some("127.0.0.1:10911")
    );

    let topics = client.invoke(RemotingCommand::bare_request(
        rc::GET_ALL_TOPIC_LIST_FROM_NAMESERVER,
    ));
    let topics: TopicList = body::decode_lenient("TopicList", &topics.body).unwrap();
    assert!(topics.topic_list.contains("TopicTest"));

    let missing = client.invoke(route_request("Nope", 409));
    assert_eq!(missing.code, response_code::TOPIC_NOT_EXIST);
    assert!(missing
        .remark
        .unwrap()
        .contains("No topic route info in name server for the topic: Nope"));

    // Silent for longer than 1.5 s: the scan (every 100 ms) removes it.
    let expired = wait_until(Duration::from_secs(15), || {
        client.invoke(route_request("TopicTest", 409)).code == response_code::TOPIC_NOT_EXIST
    });
    assert!(expired, "broker never expired");
    assert!(
        registered_at.elapsed() >= Duration::from_millis(1_500),
        "expired before its timeout"
    );
    let cluster = client.invoke(RemotingCommand::bare_request(rc::GET_BROKER_CLUSTER_INFO));
    assert!(ClusterInfo::decode(&cluster.body)
        .unwrap()
        .broker_addr_table
        .is_empty());
    assert!(namesrv.log().contains("broker expired"));
}

#[test]
fn re_registration_keeps_a_broker_alive_and_unregister_removes_it() {
    let namesrv = start_namesrv(1_000);
    let mut client = Client::connect(namesrv.addr);
    let started = Instant::now();
    // Register every 200 ms for three times the expiry: the route must never disappear.
    while started.elapsed() < Duration::from_secs(3) {
        let response = client.invoke(register_request(
            "broker-a",
            "127.0.0.1:10911",
            &[("T", 2)],
            1,
        ));
        assert_eq!(response.code, response_code::SUCCESS);
        assert_eq!(
            client.invoke(route_request("T", 409)).code,
            response_code::SUCCESS
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let unregister = BrokerIdentityHeader {
        broker_name: "broker-a".into(),
        broker_addr: "127.0.0.1:10911".into(),
        cluster_name: "DefaultCluster".into(),
        broker_id: 0,
    };
    let response = client.invoke(RemotingCommand::request(rc::UNREGISTER_BROKER, &unregister));
    assert_eq!(response.code, response_code::SUCCESS);
    assert_eq!(
        client.invoke(route_request("T", 409)).code,
        response_code::TOPIC_NOT_EXIST
    );
}

#[test]
fn register_body_crc_mismatch_is_refused() {
    let namesrv = start_namesrv(120_000);
    let mut client = Client::connect(namesrv.addr);
    let mut request = register_request("broker-a", "127.0.0.1:10911", &[("T", 2)], 1);
    let mut body = request.body.to_vec();
    body[10] ^= 0x20; // the CRC header no longer matches the body
    request.body = body.into();
    let response = client.invoke(request);
    assert_eq!(response.code, response_code::SYSTEM_ERROR);
    assert_eq!(response.remark.as_deref(), Some("crc32 not match"));
    assert_eq!(
        client.invoke(route_request("T", 409)).code,
        response_code::TOPIC_NOT_EXIST
    );
}

#[test]
fn data_version_kv_config_and_namesrv_config() {
    let namesrv = start_namesrv(120_000);
    let mut client = Client::connect(namesrv.addr);
    client.invoke(register_request(
        "broker-a",
        "127.0.0.1:10911",
        &[("T", 2)],
        7,
    ));

    let identity = BrokerIdentityHeader {
        broker_name: "broker-a".into(),
        broker_addr: "127.0.0.1:10911".into(),
        cluster_name: "DefaultCluster".into(),
        broker_id: 0,
    };
    let same = DataVersion {
        counter: 7,
        state_version: 0,
        timestamp: 1_700_000_000_000,
    };
    let response = client.invoke(
        RemotingCommand::request(rc::QUERY_DATA_VERSION, &identity).with_body(body::encode(&same)),
    );
    let header: QueryDataVersionResponseHeader = response.decode_header().unwrap();
    assert!(!header.changed);
    let stored: DataVersion = body::decode_lenient("DataVersion", &response.body).unwrap();
    assert_eq!(stored, same);

    let put = PutKvConfigRequestHeader {
        namespace: "ORDER_TOPIC_CONFIG".into(),
        key: "T".into(),
        value: "broker-a:2".into(),
    };
    assert_eq!(
        client
            .invoke(RemotingCommand::request(rc::PUT_KV_CONFIG, &put))
            .code,
        response_code::SUCCESS
    );
    let key = KvConfigKeyHeader {
        namespace: "ORDER_TOPIC_CONFIG".into(),
        key: "T".into(),
    };
    let got = client.invoke(RemotingCommand::request(rc::GET_KV_CONFIG, &key));
    let got: GetKvConfigResponseHeader = got.decode_header().unwrap();
    assert_eq!(got.value.as_deref(), Some("broker-a:2"));
    let list = client.invoke(RemotingCommand::request(
        rc::GET_KVLIST_BY_NAMESPACE,
        &GetKvListByNamespaceRequestHeader {
            namespace: "ORDER_TOPIC_CONFIG".into(),
        },
    ));
    let table: KvTable = body::decode_lenient("KVTable", &list.body).unwrap();
    assert_eq!(table.table["T"], "broker-a:2");

    // orderTopicConf appears in routes once enabled through UPDATE_NAMESRV_CONFIG.
    assert!(
        TopicRouteData::decode(&client.invoke(route_request("T", 409)).body)
            .unwrap()
            .order_topic_conf
            .is_none()
    );
    let update = RemotingCommand::request(rc::UPDATE_NAMESRV_CONFIG, &EmptyHeader {})
        .with_body("orderMessageEnable=true\n");
    assert_eq!(client.invoke(update).code, response_code::SUCCESS);
    let route = TopicRouteData::decode(&client.invoke(route_request("T", 409)).body).unwrap();
    assert_eq!(route.order_topic_conf.as_deref(), Some("broker-a:2"));
    let config = client.invoke(RemotingCommand::bare_request(rc::GET_NAMESRV_CONFIG));
    assert!(String::from_utf8_lossy(&config.body).contains("orderMessageEnable=true"));
    let refused = RemotingCommand::request(rc::UPDATE_NAMESRV_CONFIG, &EmptyHeader {})
        .with_body("kvConfigPath=/etc/x");
    assert_eq!(client.invoke(refused).code, response_code::SYSTEM_ERROR);

    assert_eq!(
        client
            .invoke(RemotingCommand::request(rc::DELETE_KV_CONFIG, &key))
            .code,
        response_code::SUCCESS
    );
    assert_eq!(
        client
            .invoke(RemotingCommand::request(rc::GET_KV_CONFIG, &key))
            .code,
        response_code::QUERY_NOT_FOUND
    );
}

#[test]
fn bad_input_gets_an_error_or_a_closed_connection_and_others_are_still_served() {
    let mut namesrv = start_namesrv(120_000);
    let mut bystander = Client::connect(namesrv.addr);
    bystander.invoke(register_request(
        "broker-a",
        "127.0.0.1:10911",
        &[("T", 2)],
        1,
    ));

    // Unknown code: REQUEST_CODE_NOT_SUPPORTED, and the connection stays usable.
    let mut client = Client::connect(namesrv.addr);
    let response = client.invoke(RemotingCommand::bare_request(9999));
    assert_eq!(response.code, response_code::REQUEST_CODE_NOT_SUPPORTED);
    assert_eq!(
        response.remark.as_deref(),
        Some(" request type 9999 not supported")
    );
    assert_eq!(
        client.invoke(route_request("T", 409)).code,
        response_code::SUCCESS
    );

    // Missing required header field: SYSTEM_ERROR naming it, connection still usable.
    let response = client.invoke(RemotingCommand::bare_request(rc::GET_ROUTEINFO_BY_TOPIC));
    assert_eq!(response.code, response_code::SYSTEM_ERROR);
    assert!(response.remark.unwrap().contains("<topic>"));
    assert_eq!(
        client.invoke(route_request("T", 409)).code,
        response_code::SUCCESS
    );

    // A binary-header request gets a binary-header response.
    let mut binary = route_request("T", 409);
    binary.serialize_type = SerializeType::RocketMq;
    let response = client.invoke(binary);
    assert_eq!(response.serialize_type, SerializeType::RocketMq);
    assert_eq!(response.code, response_code::SUCCESS);

    // Oversized length: closed without a response.
    let mut oversized = Client::connect(namesrv.addr);
    oversized
        .send_bytes(&[0x7F, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0])
        .unwrap();
    assert!(
        oversized.read_command().unwrap().is_none(),
        "connection should be closed"
    );

    // Garbage JSON header inside a well-formed frame: SYSTEM_ERROR, then closed.
    let mut garbage = Client::connect(namesrv.addr);
    let header = b"{\"code\":oops";
    let mut frame = Vec::new();
    frame.extend_from_slice(&((4 + header.len()) as u32).to_be_bytes());
    frame.extend_from_slice(&(header.len() as u32).to_be_bytes());
    frame.extend_from_slice(header);
    garbage.send_bytes(&frame).unwrap();
    let response = garbage.read_command().unwrap().expect("an error response");
    assert_eq!(response.code, response_code::SYSTEM_ERROR);
    assert!(response
        .remark
        .unwrap()
        .contains("undecodable request header"));
    assert!(garbage.read_command().unwrap().is_none());

    // Header length larger than the frame: closed.
    let mut liar = Client::connect(namesrv.addr);
    liar.send_bytes(&[0, 0, 0, 6, 0, 0, 1, 0, b'{', b'}'])
        .unwrap();
    assert!(liar.read_command().unwrap().is_none());

    // Truncated frame followed by end of input: closed, nothing answered.
    let mut truncated = Client::connect(namesrv.addr);
    truncated
        .send_bytes(&[0, 0, 0, 100, 0, 0, 0, 10, b'{'])
        .unwrap();
    truncated.shutdown_write();
    assert!(truncated.read_command().unwrap().is_none());

    // Pseudo-random noise.
    let mut noise = Client::connect(namesrv.addr);
    let mut x = 0x2545F491u32;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let _ = noise.send_bytes(&bytes);
    noise.shutdown_write();
    while let Ok(Some(_)) = noise.read_command() {}

    // Everyone else is still served, on old and new connections.
    assert!(namesrv.is_running());
    assert_eq!(
        bystander.invoke(route_request("T", 409)).code,
        response_code::SUCCESS
    );
    assert_eq!(
        Client::connect(namesrv.addr)
            .invoke(route_request("T", 409))
            .code,
        response_code::SUCCESS
    );
    assert!(!namesrv.log().contains("panicked"));
}
