//! RocketMQ 5's timer messages are not built: a send asking for one is refused as a 5.x broker
//! with `timerWheelEnable=false` refuses it, never stored to be delivered at once.

use thruster_client::tokio::{ClientError, Message, Producer, ProducerConfig, SendStatus};
use thruster_tests::ServerProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_messages_are_refused_and_delay_levels_still_work() {
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let _broker = ServerProcess::broker(namesrv.addr, 2, &[]);
    let ns = namesrv.addr.to_string();
    let mut config = ProducerConfig::new("timer-producer", &ns).unwrap();
    config.retry_times = 0;
    let producer = Producer::new(config);
    producer
        .send(Message::new("Timers", "create"))
        .await
        .unwrap();
    for name in ["TIMER_DELIVER_MS", "TIMER_DELAY_SEC", "TIMER_DELAY_MS"] {
        let error = producer
            .send(Message::new("Timers", "later").with_property(name, "5000"))
            .await
            .expect_err("refused");
        let ClientError::Broker { code, remark, .. } = &error else {
            panic!("{name}: {error}");
        };
        assert_eq!(*code, 1, "{name}");
        assert!(remark.contains("timerWheelEnable"), "{name}: {remark}");
    }
    // A delay level wins over timer properties, as in RocketMQ.
    let sent = producer
        .send(
            Message::new("Timers", "level")
                .with_delay_level(1)
                .with_property("TIMER_DELAY_SEC", "5"),
        )
        .await
        .unwrap();
    assert_eq!(sent.status, SendStatus::SendOk);
}
