//! The Prometheus endpoint (`metricsPort`) scraped over HTTP during a produce/consume run, its
//! text parsed with a Prometheus text parser (`prometheus-parse`): counters move by exactly the
//! messages sent and pulled, the lag goes up then back to zero, histograms get observations.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use thruster_client::protocol::header::offset::UpdateConsumerOffsetRequestHeader;
use thruster_client::protocol::message::{decode_records, encode_properties};
use thruster_client::protocol::{request_code as rc, response_code, RemotingCommand};
use thruster_tests::wire::{group_pull_request, send_v2};
use thruster_tests::{free_port_block, wait_until, Client, ServerProcess};

const TOPIC: &str = "Metered";
const GROUP: &str = "MeteredGroup";

/// GET `path` from the endpoint: (status line, body).
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// One scrape, parsed: metric name -> [(labels, value)].
fn scrape(port: u16) -> Scrape {
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.ends_with("# EOF\n"), "a whole exposition");
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text")
}

fn number(value: &Value) -> f64 {
    match value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("not a number: {other:?}"),
    }
}

/// Sum of `metric` over the samples whose labels include every pair of `with`.
fn sum(scrape: &Scrape, metric: &str, with: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| with.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| number(&s.value))
        .sum()
}

fn send(client: &mut Client, i: usize) {
    let body = format!("metered-{i}");
    send_v2(
        client,
        TOPIC,
        0,
        encode_properties([("TAGS", "t")]),
        body.as_bytes(),
    );
}

fn commit(client: &mut Client, offset: i64) {
    let response = client.invoke(RemotingCommand::request(
        rc::UPDATE_CONSUMER_OFFSET,
        &UpdateConsumerOffsetRequestHeader {
            consumer_group: GROUP.into(),
            topic: TOPIC.into(),
            queue_id: 0,
            commit_offset: offset,
            broker_name: None,
        },
    ));
    assert_eq!(response.code, response_code::SUCCESS);
}

/// Pulls queue 0 from `offset`; the records' count.
fn pull(client: &mut Client, offset: i64) -> usize {
    let response = client.invoke(group_pull_request(GROUP, TOPIC, 0, offset, 0));
    if response.code != response_code::SUCCESS {
        return 0;
    }
    decode_records(&response.body, true).unwrap().len()
}

#[test]
fn scraped_counters_follow_a_produce_and_consume_run_exactly() {
    let port = free_port_block(&[0]);
    let metrics_port = format!("metricsPort={port}");
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    // A few KiB are sent, less than flushCommitLogLeastPages: they are synced on the thorough
    // interval (10 s by default), made short here.
    let broker = ServerProcess::broker(
        namesrv.addr,
        2,
        &[&metrics_port, "flushCommitLogThoroughInterval=1000"],
    );
    let mut client = Client::connect(broker.addr);
    client.create_topic(TOPIC, 1);
    let shard = thruster_tests::route_brokers(namesrv.addr, TOPIC)[0].addr;
    let mut client = Client::connect(shard);

    let before = scrape(port);
    let topic = [("topic", TOPIC)];
    assert_eq!(sum(&before, "thruster_messages_in_total", &topic), 0.0);
    let puts_before = sum(&before, "thruster_store_put_duration_seconds_count", &[]);

    let sent = 30;
    for i in 0..sent {
        send(&mut client, i);
    }
    commit(&mut client, 0);
    let produced = scrape(port);
    assert_eq!(
        sum(&produced, "thruster_messages_in_total", &topic),
        sent as f64
    );
    let bytes = sum(&produced, "thruster_bytes_in_total", &topic);
    assert!(
        bytes > (sent * "metered-0".len()) as f64,
        "records are stored with headers: {bytes}"
    );
    assert_eq!(
        sum(&produced, "thruster_store_put_duration_seconds_count", &[]) - puts_before,
        sent as f64,
        "one store observation per send"
    );
    assert_eq!(
        sum(
            &produced,
            "thruster_request_duration_seconds_count",
            &[("code", "310")]
        ),
        sent as f64
    );
    assert_eq!(
        sum(&produced, "thruster_requests_total", &[("code", "310")]),
        sent as f64
    );
    assert_eq!(
        sum(
            &produced,
            "thruster_request_errors_total",
            &[("code", "310")]
        ),
        0.0
    );
    let group = [("group", GROUP), ("topic", TOPIC)];
    assert_eq!(
        sum(&produced, "thruster_consumer_lag", &group),
        sent as f64,
        "nothing consumed yet"
    );
    assert_eq!(sum(&produced, "rocketmq_group_diff", &group), sent as f64);
    assert_eq!(
        sum(&produced, "rocketmq_producer_offset", &topic),
        sent as f64
    );
    assert!(sum(&produced, "thruster_connections", &[]) >= 2.0);

    // Consume everything and commit: the lag goes back to zero, the out counters move by the
    // messages pulled.
    let mut offset = 0;
    while offset < sent {
        let got = pull(&mut client, offset as i64);
        assert!(got > 0, "pulled {offset} of {sent}");
        offset += got;
    }
    commit(&mut client, sent as i64);
    let consumed = scrape(port);
    assert_eq!(
        sum(&consumed, "thruster_messages_out_total", &group),
        sent as f64
    );
    assert_eq!(sum(&consumed, "thruster_consumer_lag", &group), 0.0);
    assert_eq!(sum(&consumed, "rocketmq_group_diff", &group), 0.0);
    assert!(sum(&consumed, "thruster_pulls_found_total", &[]) >= 1.0);
    // The flusher runs on its interval: its histograms get observations, and its groups
    // cover every byte sent (an ASYNC_FLUSH put waits for its write, not its fdatasync, so a
    // first flush may cover only the first sends).
    assert!(
        wait_until(Duration::from_secs(10), || sum(
            &scrape(port),
            "thruster_flush_group_bytes_sum",
            &[]
        ) >= bytes),
        "flushes did not cover the {bytes} bytes sent"
    );
    let flushed = scrape(port);
    assert!(sum(&flushed, "thruster_flush_duration_seconds_count", &[]) > 0.0);
    // Every family the README lists is there.
    let names: BTreeMap<&str, ()> = flushed
        .samples
        .iter()
        .map(|s| (s.metric.as_str(), ()))
        .collect();
    for name in [
        "rocketmq_broker_tps",
        "rocketmq_brokeruntime_msg_put_total_today_now",
        "thruster_disk_used_ratio",
        "thruster_cross_shard_hops_total",
    ] {
        assert!(names.contains_key(name), "{name} missing");
    }

    // Other paths and methods are refused; the broker keeps serving.
    assert_eq!(http_get(port, "/").0, "HTTP/1.1 404 Not Found");
    send(&mut client, sent);
    assert_eq!(
        sum(&scrape(port), "thruster_messages_in_total", &topic),
        (sent + 1) as f64
    );
}
