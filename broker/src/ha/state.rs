//! What a shard knows about replication, owned by the shard (`Shard::ha`): on a master, its
//! slaves' connections and the highest offset any has acknowledged (SYNC_MASTER puts wait on
//! it); on a slave, where its master is and how far it has copied. Plain state, no I/O: the
//! master's server (`ha::master`), the slave's loop (`ha::slave`), the send path and runtime
//! info read and change it.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{BrokerConfig, BrokerRole};
use crate::runtime::{self, watermark::Watermark};

/// Slave connections one master shard keeps (each has a little state here).
pub const HA_CONNECTIONS_MAX: usize = 16;

/// A slave's connection to this master shard.
#[derive(Debug, Clone)]
pub struct SlaveLink {
    pub peer: SocketAddr,
    /// Passed the handshake: its log agrees with ours up to where it ends.
    pub handshaken: bool,
    /// The slave's log end, as it last said: everything before it is on the slave.
    pub acked: u64,
}

/// How a SYNC_MASTER put ended on the replication side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    Replicated,
    /// No slave connected, or the best one further behind than `haMaxGapNotInSync`.
    SlaveNotAvailable,
    /// No slave reached the put's end within `syncFlushTimeout`.
    Timeout,
}

/// A master shard's replication state.
#[derive(Debug)]
pub struct MasterState {
    /// The highest log offset any slave has acknowledged.
    pub acked: Watermark,
    links: RefCell<BTreeMap<u64, SlaveLink>>,
    max_gap_bytes: u64,
    timeout: Duration,
}

impl MasterState {
    pub fn new(config: &BrokerConfig) -> MasterState {
        MasterState {
            acked: Watermark::new(0),
            links: RefCell::new(BTreeMap::new()),
            max_gap_bytes: config.ha_max_gap_not_in_sync_bytes,
            timeout: Duration::from_millis(config.sync_flush_timeout_ms),
        }
    }

    /// A new connection; `false` when `HA_CONNECTIONS_MAX` are open.
    pub fn connect(&self, id: u64, peer: SocketAddr) -> bool {
        let mut links = self.links.borrow_mut();
        if links.len() >= HA_CONNECTIONS_MAX && !links.contains_key(&id) {
            return false;
        }
        links.entry(id).or_insert(SlaveLink {
            peer,
            handshaken: false,
            acked: 0,
        });
        true
    }

    pub fn disconnect(&self, id: u64) {
        self.links.borrow_mut().remove(&id);
    }

    pub fn link(&self, id: u64) -> Option<SlaveLink> {
        self.links.borrow().get(&id).cloned()
    }

    /// The slave on `id` passed the handshake with its log ending at `end`.
    pub fn handshaken(&self, id: u64, end: u64) {
        if let Some(link) = self.links.borrow_mut().get_mut(&id) {
            link.handshaken = true;
            link.acked = end;
        }
        self.acked.advance(end);
    }

    /// The slave on `id` has everything before `offset`. `Err` if it says less than before
    /// (its log went back: not the slave this connection started with).
    pub fn ack(&self, id: u64, offset: u64) -> Result<(), String> {
        let mut links = self.links.borrow_mut();
        let Some(link) = links.get_mut(&id) else {
            return Err("no such slave connection".into());
        };
        if offset < link.acked {
            return Err(format!(
                "acknowledged {offset} after {}: the slave's log went back",
                link.acked
            ));
        }
        link.acked = offset;
        drop(links);
        self.acked.advance(offset);
        Ok(())
    }

    /// Handshaken slaves: (peer, acknowledged offset).
    pub fn slaves(&self) -> Vec<(SocketAddr, u64)> {
        self.links
            .borrow()
            .values()
            .filter(|l| l.handshaken)
            .map(|l| (l.peer, l.acked))
            .collect()
    }

    /// The best connected slave's acknowledged offset.
    pub fn best_ack(&self) -> Option<u64> {
        self.slaves().into_iter().map(|(_, acked)| acked).max()
    }

    /// SYNC_MASTER: waits until a slave has acknowledged `end` (a put's end offset), as
    /// RocketMQ's `handleHA`: refused at once when no slave is close enough.
    pub async fn wait_replicated(&self, end: u64) -> SyncOutcome {
        if self.acked.get() >= end && self.best_ack().is_some() {
            return SyncOutcome::Replicated;
        }
        match self.best_ack() {
            Some(acked) if end.saturating_sub(acked) < self.max_gap_bytes => {}
            _ => return SyncOutcome::SlaveNotAvailable,
        }
        match runtime::timeout(self.timeout, self.acked.wait_for(end)).await {
            Some(_) => SyncOutcome::Replicated,
            None => SyncOutcome::Timeout,
        }
    }
}

/// Where a slave shard's master is: its broker address (for metadata) and HA address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterAddrs {
    pub broker: Option<SocketAddr>,
    pub ha: Option<SocketAddr>,
}

/// A slave shard's replication state.
#[derive(Debug)]
pub struct SlaveState {
    master: Cell<MasterAddrs>,
    /// Bumped when `master` changes: the loops waiting for an address wake.
    pub master_changed: Watermark,
    /// Where this slave's copy ends (the next byte it asks for).
    pub copied: Cell<u64>,
    /// Where the master's log ended at its last answer.
    pub master_end: Cell<u64>,
    pub connected: Cell<bool>,
    /// Bumped when copied records name a topic this broker does not know yet: the metadata
    /// loop syncs at once instead of at its next period (shard 0's).
    pub sync_wanted: Watermark,
    /// The last replication error, for runtime info.
    pub last_error: RefCell<Option<String>>,
}

impl SlaveState {
    pub fn new(configured_ha: Option<SocketAddr>) -> SlaveState {
        SlaveState {
            master: Cell::new(MasterAddrs {
                broker: None,
                ha: configured_ha,
            }),
            master_changed: Watermark::new(0),
            copied: Cell::new(0),
            master_end: Cell::new(0),
            connected: Cell::new(false),
            sync_wanted: Watermark::new(0),
            last_error: RefCell::new(None),
        }
    }

    pub fn master(&self) -> MasterAddrs {
        self.master.get()
    }

    /// What the name servers said about this shard's master. A configured HA address
    /// (`haMasterAddress`) wins over a learned one.
    pub fn learn(&self, learned: MasterAddrs, configured_ha: Option<SocketAddr>) {
        let next = MasterAddrs {
            broker: learned.broker.or(self.master.get().broker),
            ha: configured_ha.or(learned.ha).or(self.master.get().ha),
        };
        if next != self.master.get() {
            self.master.set(next);
            self.master_changed.advance(self.master_changed.get() + 1);
        }
    }
}

/// A shard's replication role and state.
#[derive(Debug)]
pub enum ShardHa {
    Master { sync: bool, state: MasterState },
    Slave(SlaveState),
}

impl ShardHa {
    pub fn new(config: &BrokerConfig, shard: usize) -> ShardHa {
        match config.broker_role {
            BrokerRole::Slave => {
                ShardHa::Slave(SlaveState::new(config.shard_ha_master_address(shard)))
            }
            role => ShardHa::Master {
                sync: role == BrokerRole::SyncMaster,
                state: MasterState::new(config),
            },
        }
    }

    pub fn master(&self) -> Option<&MasterState> {
        match self {
            ShardHa::Master { state, .. } => Some(state),
            ShardHa::Slave(_) => None,
        }
    }

    pub fn slave(&self) -> Option<&SlaveState> {
        match self {
            ShardHa::Slave(state) => Some(state),
            ShardHa::Master { .. } => None,
        }
    }

    /// A SYNC_MASTER's state (puts wait for a slave).
    pub fn sync_master(&self) -> Option<&MasterState> {
        match self {
            ShardHa::Master { sync: true, state } => Some(state),
            _ => None,
        }
    }

    /// Runtime-info keys for this shard (suffixed `_shard<i>` by the caller when needed).
    pub fn runtime_info(
        &self,
        log_end: u64,
        ha_addr: Option<SocketAddr>,
    ) -> Vec<(&'static str, String)> {
        match self {
            ShardHa::Master { sync, state } => {
                let slaves = state.slaves();
                let best = state.best_ack();
                vec![
                    (
                        "haServerAddr",
                        ha_addr.map_or(String::new(), |a| a.to_string()),
                    ),
                    (
                        "brokerRole",
                        if *sync { "SYNC_MASTER" } else { "ASYNC_MASTER" }.into(),
                    ),
                    ("haConnectionCount", slaves.len().to_string()),
                    (
                        "haSlaveAckOffset",
                        best.map_or("-1".into(), |a| a.to_string()),
                    ),
                    // Bytes the best slave lacks (RocketMQ's "slave fall behind").
                    (
                        "masterSlaveDiff",
                        best.map_or("-1".into(), |a| log_end.saturating_sub(a).to_string()),
                    ),
                ]
            }
            ShardHa::Slave(state) => {
                let master = state.master();
                vec![
                    ("brokerRole", "SLAVE".into()),
                    (
                        "haMasterAddress",
                        master.ha.map_or(String::new(), |a| a.to_string()),
                    ),
                    (
                        "masterAddr",
                        master.broker.map_or(String::new(), |a| a.to_string()),
                    ),
                    ("haConnected", state.connected.get().to_string()),
                    ("haSlaveOffset", state.copied.get().to_string()),
                    ("haMasterEndOffset", state.master_end.get().to_string()),
                    (
                        "masterSlaveDiff",
                        state
                            .master_end
                            .get()
                            .saturating_sub(state.copied.get())
                            .to_string(),
                    ),
                    (
                        "haLastError",
                        state.last_error.borrow().clone().unwrap_or_default(),
                    ),
                ]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BrokerConfig {
        BrokerConfig {
            broker_role: BrokerRole::SyncMaster,
            sync_flush_timeout_ms: 50,
            ha_max_gap_not_in_sync_bytes: 1000,
            ..BrokerConfig::default()
        }
    }

    #[test]
    fn sync_waits_need_a_close_enough_slave_and_time_out() {
        runtime::run_reactor(runtime::ReactorConfig::new("ha-state-test"), || async {
            let state = MasterState::new(&config());
            assert_eq!(
                state.wait_replicated(10).await,
                SyncOutcome::SlaveNotAvailable
            );
            let peer = "127.0.0.1:1".parse().unwrap();
            assert!(state.connect(7, peer));
            assert_eq!(
                state.wait_replicated(10).await,
                SyncOutcome::SlaveNotAvailable,
                "not handshaken yet"
            );
            state.handshaken(7, 100);
            assert_eq!(state.wait_replicated(100).await, SyncOutcome::Replicated);
            assert_eq!(
                state.wait_replicated(5000).await,
                SyncOutcome::SlaveNotAvailable,
                "gap"
            );
            assert_eq!(state.wait_replicated(200).await, SyncOutcome::Timeout);
            state.ack(7, 300).unwrap();
            assert_eq!(state.wait_replicated(200).await, SyncOutcome::Replicated);
            assert!(state.ack(7, 250).is_err(), "a log does not go back");
            state.disconnect(7);
            assert_eq!(
                state.wait_replicated(250).await,
                SyncOutcome::SlaveNotAvailable
            );
            for id in 0..HA_CONNECTIONS_MAX as u64 {
                assert!(state.connect(id, peer));
            }
            assert!(!state.connect(99, peer), "bounded");
        })
        .unwrap();
    }
}
