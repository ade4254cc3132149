//! A master shard's replication server, on its HA port: the handshake that refuses a slave
//! whose log is not a prefix of this one (or that belongs to another broker, shard count or
//! segment size), then transfers of the log's bytes as they are, zero-copy like a pull
//! (sealed chunks from memory, older data with sendfile). A transfer request acknowledges
//! what the slave has; it is held (long-poll) until there is something new or
//! `haSendHeartbeatInterval` passes. Runs on the shard's own reactor: an acknowledgement
//! wakes the SYNC_MASTER puts it covers without crossing cores (a hop between cores costs
//! 1-3 ms at p99 on the hosts measured, more than the replication round trip itself).

use std::rc::Rc;
use std::time::Duration;

use thruster_protocol::header::ha::{
    HaHandshakeRequestHeader, HaHandshakeResponseHeader, HaTransferRequestHeader,
    HaTransferResponseHeader,
};
use thruster_protocol::{request_code as rc, response_code, RemotingCommand};
use tracing::{info, warn};

use super::state::MasterState;
use crate::remoting::{BodyPart, ConnectionContext, Reply, RequestProcessor};
use crate::shard::Shard;

/// ASYNC_MASTER: an answer waits (up to `haAsyncCoalesceUs`) for this much new log to gather.
const HA_COALESCE_BYTES: u64 = 256 * 1024;

pub struct HaServer {
    pub shard: Rc<Shard>,
}

impl HaServer {
    fn state(&self) -> &MasterState {
        self.shard
            .ha
            .master()
            .expect("only masters serve the HA port")
    }

    async fn handshake(
        &self,
        context: &ConnectionContext,
        request: &RemotingCommand,
    ) -> Result<RemotingCommand, String> {
        let h: HaHandshakeRequestHeader = request.decode_header().map_err(|e| e.to_string())?;
        let shard = &self.shard;
        let config = &shard.config;
        if h.shard_count as usize != shard.count {
            return Err(format!(
                "the master has {} shards, the slave {}: shard i copies shard i, so both \
                 need the same `shards`",
                shard.count, h.shard_count
            ));
        }
        if h.broker_name != shard.broker_name || h.shard_id as usize != shard.id {
            return Err(format!(
                "this is {} (shard {}); the slave replicates {} (shard {})",
                shard.broker_name, shard.id, h.broker_name, h.shard_id
            ));
        }
        if h.segment_bytes as u64 != config.mapped_file_size_commit_log {
            return Err(format!(
                "mappedFileSizeCommitLog differs (master {}, slave {}): logs are copied byte \
                 for byte at the same offsets",
                config.mapped_file_size_commit_log, h.segment_bytes
            ));
        }
        let store = &shard.store;
        let end = u64::try_from(h.end_offset).map_err(|_| "negative end offset".to_string())?;
        let (master_min, master_end) =
            (store.commit_log_min_offset(), store.commit_log_max_offset());
        if end > master_end {
            return Err(format!(
                "the slave's log ends at {end}, past this master's end {master_end}: it holds \
                 records this master does not have (lost by an unclean stop under \
                 ASYNC_FLUSH/ASYNC_MASTER?). Refused, nothing deleted: copy the slave's store \
                 to the master, or empty the slave's store to copy the master afresh"
            ));
        }
        if end < master_min {
            return Err(format!(
                "the slave's log ends at {end}, before this master's oldest record \
                 {master_min} (expired): empty the slave's store (it then starts from \
                 {master_min}) or copy the master's store"
            ));
        }
        let (from, to) = store.tail_range(end);
        let crc = store
            .log_tail_crc(to, to - from)
            .await
            .map_err(|e| format!("reading the log tail before {end}: {e}"))?;
        if (to - from) as i32 != h.tail_len || i64::from(crc) != h.tail_crc {
            return Err(format!(
                "the slave's log diverges from this master's before {end} (the {} bytes \
                 there differ): it was not copied from this master",
                to - from
            ));
        }
        if !self.state().connect(context.id, context.peer) {
            return Err("too many slave connections".into());
        }
        self.state().handshaken(context.id, end);
        info!(peer = %context.peer, shard = shard.id, end, "slave connected");
        let header = HaHandshakeResponseHeader {
            min_offset: master_min as i64,
            end_offset: master_end as i64,
        };
        Ok(request.success().with_header(&header))
    }

    async fn transfer(
        &self,
        context: &ConnectionContext,
        request: &RemotingCommand,
    ) -> Result<Reply, String> {
        let h: HaTransferRequestHeader = request.decode_header().map_err(|e| e.to_string())?;
        let state = self.state();
        if !state.link(context.id).is_some_and(|l| l.handshaken) {
            return Err("transfer before handshake".into());
        }
        let offset = u64::try_from(h.offset).map_err(|_| "negative offset".to_string())?;
        state.ack(context.id, offset)?;
        let store = &self.shard.store;
        let hold = Duration::from_millis(h.hold_ms.clamp(0, 60_000) as u64);
        let stop = self.shard.tasks.stop_signal();
        if store.commit_log_max_offset() <= offset && !hold.is_zero() {
            let more = store.wait_for_log(offset);
            crate::runtime::timeout(hold, futures_lite::future::or(more, stop.wait())).await;
        }
        // ASYNC_MASTER: nobody waits for this copy, so let a little more gather first; one
        // answer then carries many messages, not one wake-up and round trip each.
        let coalesce_us = self.shard.config.ha_async_coalesce_us;
        if self.shard.ha.sync_master().is_none() && coalesce_us > 0 {
            let enough = offset + HA_COALESCE_BYTES;
            if store.commit_log_max_offset() > offset && store.commit_log_max_offset() < enough {
                let more = store.wait_for_log(enough - 1);
                let wait = Duration::from_micros(coalesce_us);
                crate::runtime::timeout(wait, futures_lite::future::or(more, stop.wait())).await;
            }
        }
        let max_bytes =
            (h.max_bytes.max(0) as usize).min(self.shard.config.ha_transfer_batch_bytes);
        let slices = store
            .read_log(offset, max_bytes)
            .map_err(|e| format!("reading the log at {offset}: {e}"))?;
        let sent: u64 = slices.iter().map(|s| s.len() as u64).sum();
        if slices
            .iter()
            .any(|s| matches!(s, crate::store::Slice::File { .. }))
        {
            // Catching up from disk: the next answer's bytes are read while this one travels.
            store.prefetch_log(offset + sent, max_bytes as u64);
        }
        let header = HaTransferResponseHeader {
            offset: offset as i64,
            end_offset: store.commit_log_max_offset() as i64,
        };
        Ok(Reply {
            command: request.success().with_header(&header),
            tail: slices.into_iter().map(BodyPart::from_slice).collect(),
        })
    }
}

impl RequestProcessor for HaServer {
    async fn process(
        &self,
        context: &ConnectionContext,
        request: RemotingCommand,
    ) -> Option<Reply> {
        let result = match request.code {
            rc::THRUSTER_HA_HANDSHAKE => self.handshake(context, &request).await.map(Reply::from),
            rc::THRUSTER_HA_TRANSFER => self.transfer(context, &request).await,
            code => {
                return Some(
                    request
                        .error(
                            response_code::REQUEST_CODE_NOT_SUPPORTED,
                            format!("the HA port takes replication requests only, not {code}"),
                        )
                        .into(),
                )
            }
        };
        Some(result.unwrap_or_else(|remark| {
            warn!(peer = %context.peer, shard = self.shard.id, %remark, "slave refused");
            request.error(response_code::SYSTEM_ERROR, remark).into()
        }))
    }

    fn connection_closed(&self, context: &ConnectionContext) {
        if self.state().link(context.id).is_some() {
            info!(peer = %context.peer, shard = self.shard.id, "slave disconnected");
        }
        self.state().disconnect(context.id);
    }
}
