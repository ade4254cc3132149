//! Model-based test: random puts, batches, flushes, clean restarts and simulated crashes
//! against an in-memory model of what was acknowledged. After every step each queue must read
//! back exactly as the model says; after a crash, each queue must hold a prefix of the model
//! that contains at least everything known durable (under SYNC_FLUSH: everything acknowledged).

use std::rc::Rc;

use bytes::Bytes;
use proptest::prelude::*;
use thruster_protocol::message;

use super::commit_log::tests::on_reactor;
use super::message_store::{GetStatus, MessageStore, PutMessage, PutStatus};
use super::{FlushMode, StoreConfig};

#[derive(Debug, Clone)]
enum Op {
    Put { queue: i32, len: usize },
    Batch { queue: i32, count: usize },
    Flush,
    Restart,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..3i32, 1..2500usize).prop_map(|(queue, len)| Op::Put { queue, len }),
        2 => (0..3i32, 1..6usize).prop_map(|(queue, count)| Op::Batch { queue, count }),
        1 => Just(Op::Flush),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
    ]
}

fn body(queue: i32, seq: usize, len: usize) -> Vec<u8> {
    let mut body = format!("q{queue}-{seq}:").into_bytes();
    body.resize(len.max(body.len()), b'a' + (seq % 26) as u8);
    body
}

fn put_message(queue: i32, body: Vec<u8>) -> PutMessage {
    PutMessage::new(
        "Model",
        queue,
        Bytes::from(body),
        "127.0.0.1:10911".parse().unwrap(),
    )
}

fn config(dir: &std::path::Path, mode: FlushMode) -> StoreConfig {
    // Segments prepared as in production: allocated under ASYNC_FLUSH, prewritten under SYNC.
    StoreConfig {
        // Async: flush only when asked (Flush, restart, full memory window), so a crash
        // really loses the unflushed tail.
        flush_interval_ms: 60_000,
        flush_least_bytes: 1 << 40,
        flush_consume_queue_interval_ms: 30,
        segment_bytes: 32 << 10,
        chunk_bytes: 4 << 10,
        memory_window_bytes: 16 << 10,
        max_message_bytes: 8 << 10,
        consume_queue_entries_per_file: 16,
        ..StoreConfig::small_for_tests(dir).with_flush_mode(mode)
    }
}

async fn read_queue(store: &MessageStore, queue: i32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = store.min_offset("Model", queue).unwrap_or(0);
    loop {
        let result = store.get_messages("Model", queue, offset, 32, &|_| true);
        if result.status != GetStatus::Found {
            break;
        }
        for found in &result.messages {
            let bytes = found.bytes().await.unwrap();
            let record = message::decode_record(&bytes, true).expect("intact record");
            assert_eq!(record.queue_offset as u64, found.queue_offset);
            out.push(record.body.to_vec());
        }
        offset = result.next_begin_offset;
    }
    out
}

fn run(mode: FlushMode, ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    on_reactor(move || async move {
        let cfg = config(&root, mode);
        let mut store: Rc<MessageStore> = MessageStore::open(cfg.clone()).await.unwrap();
        let mut model: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 3];
        let mut durable: Vec<usize> = vec![0; 3];
        let mut seq = 0usize;
        for op in ops {
            match op {
                Op::Put { queue, len } => {
                    seq += 1;
                    let b = body(queue, seq, len);
                    let result = store.put(put_message(queue, b.clone())).await;
                    assert_eq!(result.status, PutStatus::Ok);
                    assert_eq!(result.queue_offset as usize, model[queue as usize].len());
                    model[queue as usize].push(b);
                }
                Op::Batch { queue, count } => {
                    let bodies: Vec<Vec<u8>> = (0..count)
                        .map(|_| {
                            seq += 1;
                            body(queue, seq, 50 + seq % 300)
                        })
                        .collect();
                    let result = store
                        .put_batch(
                            bodies
                                .iter()
                                .map(|b| put_message(queue, b.clone()))
                                .collect(),
                        )
                        .await;
                    assert_eq!(result.status, PutStatus::Ok);
                    assert_eq!(result.phys_offsets.len(), count);
                    model[queue as usize].extend(bodies);
                }
                Op::Flush => {
                    store.flush_now().await.unwrap();
                    durable = model.iter().map(Vec::len).collect();
                }
                Op::Restart => {
                    store.shutdown().await.unwrap();
                    drop(store);
                    store = MessageStore::open(cfg.clone()).await.unwrap();
                    durable = model.iter().map(Vec::len).collect();
                }
                Op::Crash => {
                    store.abandon().await;
                    drop(store);
                    store = MessageStore::open(cfg.clone()).await.unwrap();
                    for queue in 0..3 {
                        let actual = read_queue(&store, queue as i32).await;
                        let expected = &model[queue];
                        assert!(
                            actual.len() <= expected.len(),
                            "queue {queue}: more than was written"
                        );
                        assert_eq!(
                            &actual[..],
                            &expected[..actual.len()],
                            "queue {queue}: not a prefix"
                        );
                        let must_keep = if mode == FlushMode::Sync {
                            expected.len()
                        } else {
                            durable[queue]
                        };
                        assert!(
                            actual.len() >= must_keep,
                            "queue {queue}: lost durable messages ({} < {must_keep})",
                            actual.len()
                        );
                        model[queue].truncate(actual.len());
                    }
                    durable = model.iter().map(Vec::len).collect();
                }
            }
            for (queue, expected) in model.iter().enumerate() {
                let actual = read_queue(&store, queue as i32).await;
                assert_eq!(&actual, expected, "queue {queue} after {op:?}");
                assert_eq!(
                    store.max_offset("Model", queue as i32) as usize,
                    expected.len()
                );
            }
        }
        store.shutdown().await.unwrap();
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn sync_flush_store_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(FlushMode::Sync, ops);
    }

    #[test]
    fn async_flush_store_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(FlushMode::Async, ops);
    }
}
