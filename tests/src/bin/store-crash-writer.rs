//! Test helper for the crash tests: opens a store (recovering it), verifies
//! what it holds, then (in `write` mode) appends until killed, printing each acknowledgement.
//!
//! Output lines (stdout):
//! * `RECOVERED <queue> <count>`: after verification, per queue. Every queue must hold
//!   messages `0..count` exactly, in order, each record intact (CRC checked); otherwise the
//!   helper prints `CORRUPT <why>` and exits 1.
//! * `ACK <queue> <seq>`: message `seq` of `queue` was acknowledged (durable under SYNC_FLUSH).
//! * `REFUSED <queue> <seq> <status>`: the put of `seq` was refused. In `write` mode the queue's
//!   writer stops there; in `write-retry` mode it waits and goes on (a refused put may still
//!   have been stored: then the writer continues after it, as a client retrying would find).
//!
//! Usage: `store-crash-writer <dir> write|write-retry|verify [async]`: SYNC_FLUSH unless `async`
//! is given (then `ACK` means stored in memory, not durable).

use std::io::Write;
use std::process::ExitCode;
use std::rc::Rc;

use bytes::Bytes;
use thruster_broker::runtime::{self, ReactorConfig};
use thruster_broker::store::{
    FlushMode, GetStatus, MessageStore, PutMessage, PutStatus, StoreConfig,
};
use thruster_client::protocol::message;

pub const QUEUES: i32 = 4;
const TOPIC: &str = "Crash";

fn body(queue: i32, seq: u64) -> Vec<u8> {
    let mut body = format!("{queue}:{seq}:").into_bytes();
    let len = 40 + (seq * 7919 % 3000) as usize;
    body.resize(len, b'a' + (seq % 26) as u8);
    body
}

fn config(dir: &str, flush_mode: FlushMode) -> StoreConfig {
    StoreConfig {
        // Async: a short interval, so a failing write shows within the test's patience.
        flush_interval_ms: 100,
        segment_bytes: 256 << 10,
        chunk_bytes: 16 << 10,
        memory_window_bytes: 128 << 10,
        max_message_bytes: 16 << 10,
        flush_consume_queue_interval_ms: 100,
        ..StoreConfig::small_for_tests(dir).with_flush_mode(flush_mode)
    }
}

async fn verify(store: &MessageStore) -> Result<Vec<u64>, String> {
    let mut counts = Vec::new();
    for queue in 0..QUEUES {
        let mut offset = 0;
        loop {
            let result = store.get_messages(TOPIC, queue, offset, 32, &|_| true);
            match result.status {
                GetStatus::Found => {}
                GetStatus::OffsetOverflowOne
                | GetStatus::NoMatchedLogicQueue
                | GetStatus::NoMessageInQueue => break,
                other => return Err(format!("queue {queue} offset {offset}: {other:?}")),
            }
            for found in &result.messages {
                let bytes = found.bytes().await.map_err(|e| e.to_string())?;
                let record = message::decode_record(&bytes, true)
                    .map_err(|e| format!("queue {queue} offset {}: {e}", found.queue_offset))?;
                if record.body[..] != body(queue, found.queue_offset)[..] {
                    return Err(format!(
                        "queue {queue} offset {}: wrong body",
                        found.queue_offset
                    ));
                }
                if found.queue_offset != offset {
                    return Err(format!(
                        "queue {queue}: offset {} where {offset} was expected",
                        found.queue_offset
                    ));
                }
                offset += 1;
            }
        }
        counts.push(offset);
    }
    Ok(counts)
}

fn main() -> ExitCode {
    thruster_broker::logging::init("warn,thruster_broker::store=info");
    runtime::ignore_file_size_signal();
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(mode)) = (args.get(1).cloned(), args.get(2).cloned()) else {
        eprintln!("usage: store-crash-writer <dir> write|write-retry|verify [async]");
        return ExitCode::from(2);
    };
    let flush_mode = match args.get(3).map(String::as_str) {
        Some("async") => FlushMode::Async,
        _ => FlushMode::Sync,
    };
    let reactor = ReactorConfig {
        io_memory_bytes: 1 << 20,
        ..ReactorConfig::new("crash-writer")
    };
    let code = runtime::run_reactor(reactor, move || async move {
        let store = match MessageStore::open(config(&dir, flush_mode)).await {
            Ok(store) => store,
            Err(e) => {
                println!("CORRUPT open failed: {e}");
                return 1u8;
            }
        };
        let counts = match verify(&store).await {
            Ok(counts) => counts,
            Err(why) => {
                println!("CORRUPT {why}");
                return 1;
            }
        };
        let mut out = std::io::stdout().lock();
        for (queue, count) in counts.iter().enumerate() {
            let _ = writeln!(out, "RECOVERED {queue} {count}");
        }
        let _ = out.flush();
        drop(out);
        if mode != "write" && mode != "write-retry" {
            let _ = store.shutdown().await;
            return 0;
        }
        let retry = mode == "write-retry";
        // One writer task per queue: concurrent puts share group commits.
        let mut writers = Vec::new();
        for (queue, start) in counts.into_iter().enumerate() {
            let store: Rc<MessageStore> = store.clone();
            let (done_tx, done_rx) = runtime::bounded_channel::<()>(1);
            runtime::spawn_detached(async move {
                let mut seq = start;
                loop {
                    let put = PutMessage {
                        born_timestamp: runtime::now_ms(),
                        ..PutMessage::new(
                            TOPIC,
                            queue as i32,
                            Bytes::from(body(queue as i32, seq)),
                            "127.0.0.1:10911".parse().unwrap(),
                        )
                    };
                    let result = store.put(put).await;
                    if result.status != PutStatus::Ok {
                        println!("REFUSED {queue} {seq} {:?}", result.status);
                        if !retry {
                            break;
                        }
                        // Under SYNC_FLUSH a refused put may have been appended and become
                        // durable (readable) later; readable messages are never put again.
                        runtime::sleep(std::time::Duration::from_millis(20)).await;
                        seq = seq.max(store.max_offset(TOPIC, queue as i32));
                        continue;
                    }
                    assert_eq!(
                        result.queue_offset, seq,
                        "queue offsets follow the sequence"
                    );
                    println!("ACK {queue} {seq}");
                    seq += 1;
                }
                let _ = done_tx.send(()).await;
            });
            writers.push(done_rx);
        }
        for done in writers {
            let _ = done.recv().await;
        }
        1
    });
    match code {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            println!("CORRUPT reactor: {e}");
            ExitCode::FAILURE
        }
    }
}
