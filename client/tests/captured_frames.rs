//! Decoding of frames as real clients put them on the wire: byte-exact fixtures built from what
//! the Java 4.9.8 client (fastjson), the C++ 2.x client (jsoncpp FastWriter: sorted keys, some
//! ext values as JSON numbers, trailing newline, `Signature`/`AccessKey`/`OnsChannel` always
//! present) and the Go client (no `serializeTypeCurrentRPC`, empty remark, long names) send.

use bytes::{BufMut, BytesMut};
use thruster_client::protocol::header::pull::PullMessageRequestHeader;
use thruster_client::protocol::header::send::{
    SendMessageRequestHeader, SendMessageRequestHeaderV2,
};
use thruster_client::protocol::{
    decode_frame, request_code, LanguageCode, RemotingCommand, FRAME_MAX_BYTES_DEFAULT,
};

fn frame(header_json: &str, body: &[u8]) -> BytesMut {
    let mut wire = BytesMut::new();
    wire.put_u32((4 + header_json.len() + body.len()) as u32);
    wire.put_u32(header_json.len() as u32); // serialize type 0 in the high byte
    wire.put_slice(header_json.as_bytes());
    wire.put_slice(body);
    wire
}

fn decode(mut wire: BytesMut) -> RemotingCommand {
    let command = decode_frame(&mut wire, FRAME_MAX_BYTES_DEFAULT)
        .expect("frame boundaries")
        .expect("a whole frame")
        .into_command()
        .expect("header");
    assert!(wire.is_empty(), "the frame consumed exactly its bytes");
    command
}

#[test]
fn java_4_9_8_send_message_v2() {
    let header = r#"{"code":310,"extFields":{"a":"ProducerGroupName","b":"TopicTest","c":"TBW102","d":"4","e":"2","f":"0","g":"1700000000123","h":"0","i":"KEYS\u0001OrderID188\u0002UNIQ_KEY\u00017F0000010D3418B4AAC2A1B2C3D40000\u0002WAIT\u0001true\u0002TAGS\u0001TagA\u0002","j":"0","k":"false","m":"false","n":"broker-a"},"flag":0,"language":"JAVA","opaque":5,"serializeTypeCurrentRPC":"JSON","version":409}"#;
    let command = decode(frame(header, b"Hello RocketMQ"));
    assert_eq!(command.code, request_code::SEND_MESSAGE_V2);
    assert_eq!(command.language, LanguageCode::Java);
    assert_eq!((command.version, command.opaque, command.flag), (409, 5, 0));
    assert_eq!(&command.body[..], b"Hello RocketMQ");
    let v2: SendMessageRequestHeaderV2 = command.decode_header().unwrap();
    let send = SendMessageRequestHeader::from(v2);
    assert_eq!(send.producer_group, "ProducerGroupName");
    assert_eq!(send.topic, "TopicTest");
    assert_eq!(send.queue_id, 2);
    assert_eq!(send.born_timestamp, 1_700_000_000_123);
    assert_eq!(send.broker_name.as_deref(), Some("broker-a"));
    assert_eq!(send.max_reconsume_times, None);
    let properties = send.properties.unwrap();
    assert!(properties.contains("TAGS\u{1}TagA\u{2}"));
    assert!(properties.contains("UNIQ_KEY\u{1}7F0000010D3418B4AAC2A1B2C3D40000\u{2}"));
}

#[test]
fn cpp_2_x_send_message_v2_with_numeric_ext_values_and_newline() {
    let header = "{\"code\":310,\"extFields\":{\"AccessKey\":\"\",\"OnsChannel\":\"\",\"Signature\":\"\",\"a\":\"pg\",\"b\":\"TopicTest\",\"c\":\"TBW102\",\"d\":4,\"e\":1,\"f\":0,\"g\":\"1700000000000\",\"h\":0,\"i\":\"TAGS\\u0001TagB\\u0002\",\"j\":\"0\",\"k\":\"0\",\"l\":16,\"m\":\"0\"},\"flag\":0,\"language\":\"CPP\",\"opaque\":1,\"remark\":\"\",\"version\":333}\n";
    let command = decode(frame(header, b"x"));
    assert_eq!(command.language, LanguageCode::Cpp);
    assert_eq!(command.version, 333);
    assert_eq!(command.ext_fields.get("Signature"), Some(""));
    let v2: SendMessageRequestHeaderV2 = command.decode_header().unwrap();
    assert_eq!((v2.d, v2.e, v2.f, v2.h, v2.l), (4, 1, 0, 0, Some(16)));
    assert_eq!(v2.k, Some(false));
    assert_eq!(v2.i.as_deref(), Some("TAGS\u{1}TagB\u{2}"));
}

#[test]
fn go_send_message_and_pull_with_long_names() {
    let header = r#"{"code":10,"language":"GO","version":317,"opaque":9,"flag":0,"remark":"","extFields":{"producerGroup":"pg","topic":"T","defaultTopic":"TBW102","defaultTopicQueueNums":"4","queueId":"0","sysFlag":"0","bornTimestamp":"1","flag":"0","properties":"","reconsumeTimes":"0","unitMode":"false","maxReconsumeTimes":"0","batch":"false"}}"#;
    let command = decode(frame(header, b""));
    let send: SendMessageRequestHeader = command.decode_header().unwrap();
    assert_eq!(send.topic, "T");
    assert_eq!(send.batch, Some(false));
    let pull = r#"{"code":11,"language":"GO","version":317,"opaque":10,"flag":0,"remark":"","extFields":{"consumerGroup":"cg","topic":"T","queueId":"3","queueOffset":"42","maxMsgNums":"32","sysFlag":"6","commitOffset":"0","suspendTimeoutMillis":"20000","subscription":"*","subVersion":"0","expressionType":"TAG"}}"#;
    let pull: PullMessageRequestHeader = decode(frame(pull, b"")).decode_header().unwrap();
    assert_eq!(
        (
            pull.queue_id,
            pull.queue_offset,
            pull.suspend_timeout_millis
        ),
        (3, 42, 20000)
    );
    assert_eq!(pull.subscription.as_deref(), Some("*"));
}

#[test]
fn java_heartbeat_without_ext_fields() {
    let header = r#"{"code":34,"flag":0,"language":"JAVA","opaque":0,"serializeTypeCurrentRPC":"JSON","version":409}"#;
    let command = decode(frame(
        header,
        br#"{"clientID":"c","consumerDataSet":[],"producerDataSet":[]}"#,
    ));
    assert_eq!(command.code, request_code::HEART_BEAT);
    assert!(command.ext_fields.is_empty());
}
