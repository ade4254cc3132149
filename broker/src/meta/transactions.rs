//! One shard's transaction table: the half messages waiting for a decision, and where the
//! shard's transaction check may start after a restart. Pure bookkeeping (no I/O, no clock);
//! `processor::transaction` stores the records and drives it. Each shard owns its own table
//! (its own half queue, as each RocketMQ broker has its own).
//!
//! The records it summarizes, all in the shard's store:
//! - `RMQ_SYS_TRANS_HALF_TOPIC` queue 0: half messages. A check re-appends the waiting message
//!   (a "copy", with `TRANSACTION_CHECK_TIMES` counted up and `TRAN_PREPARED_QUEUE_OFFSET`
//!   naming the first copy's offset, its *root*), and a decision names a copy by its queue
//!   offset (`tranStateTableOffset`) and CommitLog offset.
//! - `RMQ_SYS_TRANS_OP_HALF_TOPIC` queue 0: one op record per decision (tag `d`, body the
//!   decided copy's half-queue offset and a comma, RocketMQ's layout).
//! - Consumer offsets of group `CID_RMQ_SYS_TRANS` on both queues: the *half cursor* (every
//!   half record below it is superseded or decided) and the *op cursor* (no op record below it
//!   names a copy at or above the half cursor). Recovery reads both queues from there.

use std::collections::{BTreeMap, BTreeSet};

/// Memory the table may take per shard, as accounted below: a prepared message that would
/// grow it past this is refused (decisions, which shrink it, never are).
pub const TRANSACTION_TABLE_BYTES_MAX: usize = 64 << 20;
/// What one waiting message costs besides its producer group name (two map nodes, struct).
const PENDING_OVERHEAD_BYTES: usize = 160;
/// What one remembered op record costs (map node, two offsets).
const OP_OVERHEAD_BYTES: usize = 48;

/// A half message waiting for its decision: where its latest copy is, and its check state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Half-queue offset of the latest copy.
    pub copy_offset: u64,
    /// CommitLog offset of the latest copy.
    pub phys_offset: i64,
    pub born_ms: i64,
    /// Store time of the latest copy (a check happens at most once per copy).
    pub store_ms: i64,
    /// Checks sent so far (`TRANSACTION_CHECK_TIMES` of the latest copy).
    pub check_times: u32,
    /// `CHECK_IMMUNITY_TIME_IN_SECONDS` in ms, when the producer set it.
    pub immunity_ms: Option<i64>,
    pub producer_group: String,
    /// Loaded by recovery: a commit of it may have been stored without its op record (a
    /// crash between the two), so a commit looks for the stored message first.
    pub recovered: bool,
}

impl Pending {
    fn bytes(&self) -> usize {
        PENDING_OVERHEAD_BYTES + self.producer_group.len()
    }

    /// When the message is first checked: `transactionTimeOut` after its birth, or later
    /// when its own immunity time is longer (RocketMQ's `getImmunityTime`).
    pub fn first_check_ms(&self, transaction_timeout_ms: i64) -> i64 {
        self.born_ms
            + self
                .immunity_ms
                .map_or(transaction_timeout_ms, |ms| ms.max(transaction_timeout_ms))
    }
}

/// What became of a decision's lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Waiting: the decision applies to it.
    Pending(Pending),
    /// Not waiting: decided before, discarded, or never stored.
    NotPending,
}

#[derive(Debug, Default)]
pub struct TransactionTable {
    /// Root offset → the waiting message.
    pending: BTreeMap<u64, Pending>,
    /// Latest copy offset → root, to find the half cursor.
    by_copy: BTreeMap<u64, u64>,
    /// Op records still needed: op-queue offset → decided copy's half-queue offset.
    ops: BTreeMap<u64, u64>,
    /// The same records by decided copy (recovery asks whether a copy was decided).
    decided_copies: BTreeSet<u64>,
    /// Half-queue offset past the last half record known.
    half_end: u64,
    /// Op-queue offset past the last op record known.
    op_end: u64,
    /// The half cursor recovery started reading at.
    recovery_start: u64,
    /// Roots with records being written for them right now (a decision or a check).
    busy: BTreeSet<u64>,
    table_bytes: usize,
}

impl TransactionTable {
    /// A table whose queues are read from the given cursors (recovery adds what follows).
    pub fn starting_at(half_cursor: u64, op_cursor: u64) -> TransactionTable {
        TransactionTable {
            half_end: half_cursor,
            op_end: op_cursor,
            recovery_start: half_cursor,
            ..TransactionTable::default()
        }
    }

    pub fn table_bytes(&self) -> usize {
        self.table_bytes
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Whether a new half message of `producer_group` fits within the table's bound.
    pub fn admits(&self, producer_group: &str) -> Result<(), String> {
        let bytes = PENDING_OVERHEAD_BYTES + producer_group.len();
        if self.table_bytes + bytes > TRANSACTION_TABLE_BYTES_MAX {
            return Err(format!(
                "transaction table full ({} of {TRANSACTION_TABLE_BYTES_MAX} bytes, {} half \
                 messages waiting): prepared message refused",
                self.table_bytes,
                self.pending.len()
            ));
        }
        Ok(())
    }

    /// A half record of `root` was stored at `entry.copy_offset` (a new message has itself as
    /// root). Recovery calls it for every record it reads, in order.
    pub fn stored(&mut self, root: u64, entry: Pending) {
        self.half_end = self.half_end.max(entry.copy_offset + 1);
        if self.decided_copies.contains(&entry.copy_offset) {
            // Recovery: an op record names this copy, so its message was decided.
            self.forget(root);
            return;
        }
        match self.pending.get(&root) {
            Some(old) if old.copy_offset >= entry.copy_offset => return,
            Some(_) => {
                self.forget(root);
            }
            // A copy of a message not waiting: recovery takes it when the message's first
            // record lies below where it started reading; otherwise the message was decided.
            None if root != entry.copy_offset && root >= self.recovery_start => return,
            None => {}
        }
        self.by_copy.insert(entry.copy_offset, root);
        self.table_bytes += entry.bytes();
        self.pending.insert(root, entry);
    }

    fn forget(&mut self, root: u64) -> Option<Pending> {
        let entry = self.pending.remove(&root)?;
        self.by_copy.remove(&entry.copy_offset);
        self.table_bytes -= entry.bytes();
        Some(entry)
    }

    /// The waiting message a decision or check names by its root.
    pub fn lookup(&self, root: u64) -> Lookup {
        match self.pending.get(&root) {
            Some(entry) => Lookup::Pending(entry.clone()),
            None => Lookup::NotPending,
        }
    }

    /// Marks `root` as having records written for it; `false` when it already has (one
    /// decision or check at a time per message, so no copy is made after its decision).
    pub fn begin(&mut self, root: u64) -> bool {
        self.busy.insert(root)
    }

    pub fn end(&mut self, root: u64) {
        self.busy.remove(&root);
    }

    /// A decision of `root` may have been applied without its op record: the next one looks
    /// for what it would store first.
    pub fn mark_recovered(&mut self, root: u64) {
        if let Some(entry) = self.pending.get_mut(&root) {
            entry.recovered = true;
        }
    }

    /// `root` was decided (or discarded) with an op record at `op_offset` naming its latest
    /// copy: it stops waiting.
    pub fn decided(&mut self, root: u64, op_offset: u64) {
        if let Some(entry) = self.forget(root) {
            self.op_recorded(op_offset, entry.copy_offset);
        }
    }

    /// An op record at `op_offset` names the copy at `copy_offset` (recovery reads them before
    /// the half queue; a decision adds its own).
    pub fn op_recorded(&mut self, op_offset: u64, copy_offset: u64) {
        self.op_end = self.op_end.max(op_offset + 1);
        if self.ops.insert(op_offset, copy_offset).is_none() {
            self.table_bytes += OP_OVERHEAD_BYTES;
        }
        self.decided_copies.insert(copy_offset);
    }

    /// Roots waiting, oldest first, with their entries.
    pub fn waiting(&self) -> Vec<(u64, Pending)> {
        self.pending
            .iter()
            .map(|(root, entry)| (*root, entry.clone()))
            .collect()
    }

    /// Where the check must start reading after a restart: the oldest latest copy still
    /// waiting, or past every half record.
    pub fn half_cursor(&self) -> u64 {
        self.by_copy.keys().next().copied().unwrap_or(self.half_end)
    }

    /// Forgets op records that name copies below the half cursor (recovery never reads those
    /// copies again) and returns the op cursor: the oldest op record still needed.
    pub fn trim_ops(&mut self) -> u64 {
        let half_cursor = self.half_cursor();
        let before = self.ops.len();
        self.ops.retain(|_, copy| *copy >= half_cursor);
        self.decided_copies = self.decided_copies.split_off(&half_cursor);
        self.table_bytes -= (before - self.ops.len()) * OP_OVERHEAD_BYTES;
        self.ops.keys().next().copied().unwrap_or(self.op_end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(copy_offset: u64, check_times: u32) -> Pending {
        Pending {
            copy_offset,
            phys_offset: copy_offset as i64 * 100,
            born_ms: 1_000,
            store_ms: 1_000 + copy_offset as i64,
            check_times,
            immunity_ms: None,
            producer_group: "pg".into(),
            recovered: false,
        }
    }

    #[test]
    fn decisions_move_the_cursors_and_free_memory() {
        let mut table = TransactionTable::starting_at(0, 0);
        table.stored(0, entry(0, 0));
        table.stored(1, entry(1, 0));
        assert_eq!(table.half_cursor(), 0);
        // Message 0 is checked: its copy at 2 replaces it.
        table.stored(0, entry(2, 1));
        assert_eq!(table.half_cursor(), 1);
        table.decided(1, 0);
        assert_eq!(table.half_cursor(), 2);
        assert_eq!(table.lookup(1), Lookup::NotPending);
        assert_eq!(
            table.trim_ops(),
            1,
            "the op names copy 1, below the half cursor"
        );
        table.decided(0, 1);
        assert_eq!(table.half_cursor(), 3);
        assert_eq!(table.trim_ops(), 2);
        assert_eq!(table.table_bytes(), 0);
        assert_eq!(table.pending_count(), 0);
    }

    #[test]
    fn recovery_skips_decided_copies_and_takes_copies_of_old_roots() {
        // Recovery from half cursor 5: ops name copies 6 and 8.
        let mut table = TransactionTable::starting_at(5, 3);
        table.op_recorded(3, 6);
        table.op_recorded(4, 8);
        table.stored(2, entry(5, 1)); // a copy of root 2 (below the start): waiting
        table.stored(6, entry(6, 0)); // decided at once
        table.stored(7, entry(7, 0)); // waiting
        table.stored(2, entry(8, 2)); // root 2's newer copy, decided
        table.stored(6, entry(9, 1)); // a copy of a root read and decided: ignored
        let waiting: Vec<u64> = table.waiting().into_iter().map(|(root, _)| root).collect();
        assert_eq!(waiting, vec![7]);
        assert_eq!(table.half_cursor(), 7);
        assert_eq!(
            table.trim_ops(),
            4,
            "the op naming copy 6 is below the cursor"
        );
    }

    #[test]
    fn one_writer_per_message_and_the_memory_bound() {
        let mut table = TransactionTable::starting_at(0, 0);
        assert!(table.begin(4));
        assert!(!table.begin(4));
        table.end(4);
        assert!(table.begin(4));
        let group = "g".repeat(TRANSACTION_TABLE_BYTES_MAX);
        assert!(table.admits(&group).is_err());
        assert!(table.admits("g").is_ok());
    }

    #[test]
    fn first_check_honours_a_longer_immunity_only() {
        let mut e = entry(0, 0);
        assert_eq!(e.first_check_ms(6_000), 7_000);
        e.immunity_ms = Some(2_000);
        assert_eq!(e.first_check_ms(6_000), 7_000);
        e.immunity_ms = Some(60_000);
        assert_eq!(e.first_check_ms(6_000), 61_000);
    }
}
