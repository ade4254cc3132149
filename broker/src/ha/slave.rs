//! A slave shard's replication loop: connect to the master shard's HA port (configured, or
//! learned from the name servers), handshake with where this log ends, then ask for the bytes
//! after it again and again, appending them at the same offsets (`put_replicated`). Each
//! request's offset acknowledges what is stored before it. On any error the connection is
//! dropped and made again from this log's end: a restart of either side resumes where the
//! slave's log ends, with nothing skipped and nothing stored twice.

use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use thruster_protocol::header::ha::{
    HaHandshakeRequestHeader, HaTransferRequestHeader, HaTransferResponseHeader,
};
use thruster_protocol::{request_code as rc, response_code, RemotingCommand};
use tracing::{info, warn};

use super::state::SlaveState;
use crate::remoting::client::RemotingClient;
use crate::runtime;
use crate::shard::Shard;
use crate::store::replica::ReplicaError;

/// Pause before connecting again after a lost connection.
const RECONNECT_WAIT: Duration = Duration::from_secs(1);
/// Pause after the master refused this slave (a mismatch an operator must fix).
const REFUSED_WAIT: Duration = Duration::from_secs(5);
/// Socket reads of a replication connection.
const READ_BYTES: usize = 256 * 1024;

/// Why one replication session ended.
enum SessionEnd {
    Stopped,
    Lost(String),
    Refused(String),
}

/// The slave loop of one shard, until the shard stops.
pub async fn run(shard: Rc<Shard>) {
    let state = shard.ha.slave().expect("only slaves replicate");
    let stop = shard.tasks.stop_signal();
    loop {
        if stop.is_set() {
            return;
        }
        let Some(ha_addr) = state.master().ha else {
            // Not known yet: the registration's answer names it.
            let seen = state.master_changed.get();
            let changed = async {
                state.master_changed.wait_for(seen + 1).await;
            };
            futures_lite::future::or(changed, stop.wait()).await;
            continue;
        };
        let wait = match session(&shard, state, ha_addr).await {
            SessionEnd::Stopped => return,
            SessionEnd::Lost(error) => {
                warn!(shard = shard.id, master = %ha_addr, %error, "replication connection lost");
                *state.last_error.borrow_mut() = Some(error);
                RECONNECT_WAIT
            }
            SessionEnd::Refused(error) => {
                warn!(shard = shard.id, master = %ha_addr, %error, "replication refused");
                *state.last_error.borrow_mut() = Some(error);
                REFUSED_WAIT
            }
        };
        state.connected.set(false);
        runtime::timeout(wait, stop.wait()).await;
    }
}

/// One connection: handshake, then transfers until an error or the stop.
async fn session(shard: &Shard, state: &SlaveState, ha_addr: std::net::SocketAddr) -> SessionEnd {
    let stop = shard.tasks.stop_signal();
    let config = &shard.config;
    let timeout = Duration::from_millis(config.register_broker_timeout_ms);
    let mut client =
        match RemotingClient::connect_with_read_bytes(ha_addr, timeout, READ_BYTES).await {
            Ok(client) => client,
            Err(e) => return SessionEnd::Lost(e.to_string()),
        };
    let store = &shard.store;
    let end = store.commit_log_max_offset();
    let (from, to) = store.tail_range(end);
    let tail_crc = match store.log_tail_crc(to, to - from).await {
        Ok(crc) => crc,
        Err(e) => return SessionEnd::Lost(format!("reading this log's tail: {e}")),
    };
    let handshake = RemotingCommand::request(
        rc::THRUSTER_HA_HANDSHAKE,
        &HaHandshakeRequestHeader {
            broker_name: shard.broker_name.clone(),
            shard_id: shard.id as i32,
            shard_count: shard.count as i32,
            segment_bytes: config.mapped_file_size_commit_log as i64,
            end_offset: end as i64,
            tail_len: (to - from) as i32,
            tail_crc: i64::from(tail_crc),
        },
    );
    match client.invoke(handshake, timeout).await {
        Ok(r) if r.code == response_code::SUCCESS => {}
        Ok(r) => return SessionEnd::Refused(r.remark.unwrap_or_default()),
        Err(e) => return SessionEnd::Lost(e.to_string()),
    }
    info!(shard = shard.id, master = %ha_addr, end, "replicating");
    state.connected.set(true);
    *state.last_error.borrow_mut() = None;
    let hold_ms = config.ha_send_heartbeat_interval_ms;
    let answer_timeout = Duration::from_millis(hold_ms) + timeout;
    let mut next_pos = end;
    let mut carry = BytesMut::new();
    loop {
        let read_pos = next_pos + carry.len() as u64;
        state.copied.set(next_pos);
        let request = RemotingCommand::request(
            rc::THRUSTER_HA_TRANSFER,
            &HaTransferRequestHeader {
                offset: read_pos as i64,
                max_bytes: config.ha_transfer_batch_bytes as i32,
                hold_ms: hold_ms as i64,
            },
        );
        let answer = futures_lite::future::or(
            async { Some(client.invoke(request, answer_timeout).await) },
            async {
                stop.wait().await;
                None
            },
        )
        .await;
        let response = match answer {
            None => return SessionEnd::Stopped,
            Some(Err(e)) => return SessionEnd::Lost(e.to_string()),
            Some(Ok(r)) if r.code != response_code::SUCCESS => {
                return SessionEnd::Refused(r.remark.unwrap_or_default())
            }
            Some(Ok(r)) => r,
        };
        let header: HaTransferResponseHeader = match response.decode_header() {
            Ok(h) => h,
            Err(e) => return SessionEnd::Lost(format!("transfer answer: {e}")),
        };
        if header.offset != read_pos as i64 {
            return SessionEnd::Lost(format!(
                "asked for {read_pos}, the master answered from {}",
                header.offset
            ));
        }
        state.master_end.set(header.end_offset.max(0) as u64);
        if response.body.is_empty() {
            continue;
        }
        let bytes: Bytes = if carry.is_empty() {
            response.body
        } else {
            carry.extend_from_slice(&response.body);
            carry.split().freeze()
        };
        match store.put_replicated(next_pos, &bytes).await {
            Ok(done) => {
                carry.extend_from_slice(&bytes[done.consumed..]);
                next_pos = done.next_pos;
                let unknown = {
                    let topics = shard.topics.borrow();
                    done.queues.iter().any(|(t, _)| topics.get(t).is_none())
                };
                if unknown {
                    shard.want_metadata_sync().await;
                }
            }
            Err(e @ (ReplicaError::Diverged { .. } | ReplicaError::Corrupt { .. })) => {
                return SessionEnd::Refused(e.to_string())
            }
            Err(e) => return SessionEnd::Lost(e.to_string()),
        }
    }
}
