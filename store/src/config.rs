//! Store settings, named after RocketMQ's `MessageStoreConfig` keys where one exists.

use std::path::PathBuf;

/// When a put is acknowledged relative to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// `SYNC_FLUSH`: after an fdatasync that covers the record (group commit).
    Sync,
    /// `ASYNC_FLUSH`: at once; data is flushed every `flush_interval_ms` or when
    /// `flush_least_bytes` are dirty.
    Async,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `storePathRootDir`.
    pub root_dir: PathBuf,
    /// This shard's id; its physical offsets carry it in their high bits.
    pub shard_id: u8,
    /// Shards of the broker: unless `consume_queue_per_shard`, this store opens only the
    /// ConsumeQueues its shard owns (`crate::shard::owner_of`), since all shards share the
    /// `consumequeue/` tree.
    pub shard_count: u8,
    /// The shard's ConsumeQueues live in `consumequeue/<shard>/` and are all its own (each
    /// shard a broker of its own, with its own queue ids).
    pub consume_queue_per_shard: bool,
    /// `mappedFileSizeCommitLog` (default 1 GiB). A multiple of `chunk_bytes`.
    pub segment_bytes: u64,
    /// Unit of the in-memory write buffer and of zero-copy writes. A multiple of 4096.
    pub chunk_bytes: usize,
    /// Recently written CommitLog bytes kept in memory for tail reads.
    pub memory_window_bytes: usize,
    /// Write the next segment full of zeros ahead of the writer: fdatasync into already-written
    /// blocks is an order of magnitude cheaper here than into blocks that grow the file. Worth it
    /// under SYNC_FLUSH (latency); under ASYNC_FLUSH it doubles the bytes written for little, so
    /// [`StoreConfig::with_flush_mode`] turns it on only for SYNC_FLUSH.
    pub prewrite_segments: bool,
    /// `flushDiskType`.
    pub flush_mode: FlushMode,
    /// CommitLog writes in flight at once, in a flush and in the ASYNC_FLUSH write-out
    /// (`commit_log::WRITES_IN_FLIGHT_MAX` unless `io-properties.json` says more).
    pub writes_in_flight_max: usize,
    /// SYNC_FLUSH: a group smaller than this lets already-runnable puts join it before its
    /// flush starts (0: flush at once); from `io-properties.json`.
    pub group_commit_bytes: u64,
    /// `flushIntervalCommitLog`.
    pub flush_interval_ms: u64,
    /// `flushCommitLogLeastPages` × [`PAGE_BYTES`]: under ASYNC_FLUSH, an interval's fdatasync
    /// is skipped while less than this is unflushed (as Java's flush service does)...
    pub flush_least_bytes: u64,
    /// `flushCommitLogThoroughInterval`: ...unless the last fdatasync is this old.
    pub flush_thorough_interval_ms: u64,
    /// `syncFlushTimeout`: past it a sync put answers FLUSH_DISK_TIMEOUT.
    pub sync_flush_timeout_ms: u64,
    /// `mappedFileSizeConsumeQueue` / 20: entries per ConsumeQueue file.
    pub consume_queue_entries_per_file: u64,
    /// `flushIntervalConsumeQueue`: ConsumeQueue / IndexFile msync and checkpoint interval.
    pub flush_consume_queue_interval_ms: u64,
    /// `flushConsumeQueueLeastPages`: a checkpoint pass syncs a ConsumeQueue once this many
    /// 4 KiB pages of it were written since its last sync...
    pub flush_consume_queue_least_pages: u64,
    /// `flushConsumeQueueThoroughInterval`: ...or once its oldest unsynced write is this old.
    pub flush_consume_queue_thorough_interval_ms: u64,
    /// `maxMessageSize`: largest record accepted.
    pub max_message_bytes: usize,
    /// `checkCRCOnRecover`.
    pub check_crc_on_recover: bool,
    /// `messageIndexEnable`.
    pub message_index_enable: bool,
    /// `maxHashSlotNum`.
    pub index_hash_slots: u32,
    /// `maxIndexNum`.
    pub index_entries: u32,
    /// `fileReservedTime`, hours.
    pub file_reserved_time_hours: u64,
    /// `deleteWhen`: hours of the day (local time) at which expired files are deleted, e.g. "04"
    /// or "01;04".
    pub delete_when: String,
    /// `diskMaxUsedSpaceRatio`, percent: above it expired files are deleted at any hour.
    pub disk_max_used_space_ratio: u32,
    /// `diskSpaceCleanForciblyRatio`, percent: above it the oldest files are deleted even
    /// before they expire.
    pub disk_space_clean_forcibly_ratio: u32,
    /// `diskSpaceWarningLevelRatio`, percent: above it puts are refused until space returns.
    pub disk_space_warning_level_ratio: u32,
    /// `accessMessageInMemoryMaxRatio`, percent of physical memory: a read further than this
    /// behind the end of the CommitLog is "cold" (likely not in the page cache) and gets the
    /// smaller per-pull transfer limits.
    pub access_message_in_memory_max_ratio: u32,
    /// How much one pull may carry, hot and cold.
    pub transfer_limits: TransferLimits,
    /// Where the CommitLog and the checkpoint are written: the real file system, or in crash
    /// tests a simulated disk (`storage::sim`).
    pub storage: super::storage::Storage,
}

/// How much one pull may carry: RocketMQ's `maxTransfer{Count,Bytes}OnMessageIn{Memory,Disk}`.
/// A pull stops before the message that would pass either limit of the kind (hot or cold) of
/// that message, and never carries more than the client asked for.
///
/// Choice: Thruster's defaults are larger than RocketMQ's (32 messages / 256 KiB hot, 8 / 64 KiB
/// cold). A client asking for 32 (the Java and C++ default `pullBatchSize`) gets what it gets
/// from RocketMQ; one asking for more (Java allows up to 1024) gets up to 1024 messages / 1 MiB
/// hot, 256 / 256 KiB cold, so a catch-up reader pays one round trip per megabyte, not per 32
/// messages. Set RocketMQ's values to get its behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLimits {
    pub memory_count_max: usize,
    pub memory_bytes_max: usize,
    pub disk_count_max: usize,
    pub disk_bytes_max: usize,
}

impl TransferLimits {
    /// The most messages any pull carries: the larger count limit.
    pub fn count_max(&self) -> usize {
        self.memory_count_max.max(self.disk_count_max)
    }
}

impl Default for TransferLimits {
    fn default() -> TransferLimits {
        TransferLimits {
            memory_count_max: 1024,
            memory_bytes_max: 1 << 20,
            disk_count_max: 256,
            disk_bytes_max: 256 << 10,
        }
    }
}

impl StoreConfig {
    pub fn new(root_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            root_dir: root_dir.into(),
            shard_id: 0,
            shard_count: 1,
            consume_queue_per_shard: false,
            segment_bytes: 1 << 30,
            chunk_bytes: 256 << 10,
            memory_window_bytes: 64 << 20,
            prewrite_segments: false,
            flush_mode: FlushMode::Async,
            writes_in_flight_max: crate::commit_log::WRITES_IN_FLIGHT_MAX,
            group_commit_bytes: 0,
            flush_interval_ms: 500,
            flush_least_bytes: 4 * PAGE_BYTES,
            flush_thorough_interval_ms: 10_000,
            sync_flush_timeout_ms: 5_000,
            consume_queue_entries_per_file: 300_000,
            flush_consume_queue_interval_ms: 1_000,
            flush_consume_queue_least_pages: 2,
            flush_consume_queue_thorough_interval_ms: 60_000,
            max_message_bytes: 4 << 20,
            check_crc_on_recover: true,
            message_index_enable: true,
            index_hash_slots: 5_000_000,
            index_entries: 20_000_000,
            file_reserved_time_hours: 72,
            delete_when: "04".into(),
            disk_max_used_space_ratio: 75,
            disk_space_clean_forcibly_ratio: 85,
            disk_space_warning_level_ratio: 90,
            access_message_in_memory_max_ratio: 40,
            transfer_limits: TransferLimits::default(),
            storage: Default::default(),
        }
    }

    /// Sets the flush mode and the segment preparation that suits it.
    pub fn with_flush_mode(mut self, mode: FlushMode) -> StoreConfig {
        self.flush_mode = mode;
        self.prewrite_segments = mode == FlushMode::Sync;
        self
    }

    /// Small files for tests: 1 MiB segments, 64 KiB chunks, 1000-entry ConsumeQueue files, a
    /// small index.
    pub fn small_for_tests(root_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            segment_bytes: 1 << 20,
            chunk_bytes: 64 << 10,
            memory_window_bytes: 256 << 10,
            consume_queue_entries_per_file: 1000,
            index_hash_slots: 1024,
            index_entries: 4096,
            max_message_bytes: 256 << 10,
            prewrite_segments: true,
            ..StoreConfig::new(root_dir)
        }
    }

    /// Panics on settings that break the store's invariants (a startup error, not a runtime one).
    pub fn validate(&self) -> Result<(), String> {
        if self.chunk_bytes == 0 || !self.chunk_bytes.is_multiple_of(4096) {
            return Err(format!(
                "chunk_bytes {} must be a positive multiple of 4096",
                self.chunk_bytes
            ));
        }
        if !self.segment_bytes.is_multiple_of(self.chunk_bytes as u64)
            || self.segment_bytes < self.chunk_bytes as u64
        {
            return Err(format!(
                "segment_bytes {} must be a multiple of chunk_bytes {}",
                self.segment_bytes, self.chunk_bytes
            ));
        }
        if self.memory_window_bytes < 2 * self.chunk_bytes {
            return Err(format!(
                "memory_window_bytes {} must hold at least two chunks of {} bytes",
                self.memory_window_bytes, self.chunk_bytes
            ));
        }
        let limits = &self.transfer_limits;
        if [
            limits.memory_count_max,
            limits.memory_bytes_max,
            limits.disk_count_max,
            limits.disk_bytes_max,
        ]
        .contains(&0)
        {
            return Err(format!("transfer limits must be positive: {limits:?}"));
        }
        if self.writes_in_flight_max == 0 {
            return Err("writes_in_flight_max must be positive".into());
        }
        if self.max_message_bytes as u64 + 8 > self.segment_bytes {
            return Err("max_message_bytes must fit in a segment".into());
        }
        if self.consume_queue_entries_per_file == 0
            || self.index_hash_slots == 0
            || self.index_entries < 2
        {
            return Err("consume queue and index sizes must be positive".into());
        }
        if self.shard_count == 0 || self.shard_id >= self.shard_count {
            return Err(format!(
                "shard_id {} must be below shard_count {}",
                self.shard_id, self.shard_count
            ));
        }
        if usize::from(self.shard_count) > SHARDS_MAX {
            return Err(format!("shard_count must be at most {SHARDS_MAX}"));
        }
        Ok(())
    }

    /// How far behind the CommitLog's end a read still counts as hot, bytes.
    pub fn hot_window_bytes(&self) -> u64 {
        // SAFETY: sysconf has no preconditions.
        let (pages, page_size) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let physical = (pages.max(0) as u64).saturating_mul(page_size.max(0) as u64);
        physical / 100 * u64::from(self.access_message_in_memory_max_ratio)
    }

    pub fn commit_log_dir(&self) -> PathBuf {
        self.root_dir
            .join("commitlog")
            .join(self.shard_id.to_string())
    }

    pub fn consume_queue_dir(&self) -> PathBuf {
        let shared = self.root_dir.join("consumequeue");
        if self.consume_queue_per_shard {
            shared.join(self.shard_id.to_string())
        } else {
            shared
        }
    }

    pub fn index_dir(&self) -> PathBuf {
        self.root_dir.join("index").join(self.shard_id.to_string())
    }

    pub fn checkpoint_path(&self) -> PathBuf {
        self.root_dir.join(format!("checkpoint-{}", self.shard_id))
    }

    /// Topics deleted while their records are still in the log (`topic_removal`).
    pub fn deleted_topics_path(&self) -> PathBuf {
        self.root_dir
            .join(format!("deleted-topics-{}", self.shard_id))
    }

    pub fn abort_path(&self) -> PathBuf {
        self.root_dir.join(format!("abort-{}", self.shard_id))
    }
}

/// Bits of a physical offset below the shard id.
pub const SHARD_OFFSET_BITS: u32 = 56;

/// Shards of one broker (`shards`). Every shard id fits above [`SHARD_OFFSET_BITS`] with the
/// sign bit clear: physical offsets travel as Java longs and must stay positive.
pub const SHARDS_MAX: usize = 64;
const _: () = assert!(SHARDS_MAX <= 1 << (63 - SHARD_OFFSET_BITS));

/// The page of `flushCommitLogLeastPages` (RocketMQ's `OS_PAGE_SIZE`).
pub const PAGE_BYTES: u64 = 4096;

/// First physical offset of a shard: offsets are unique broker-wide because clients see them
/// (offsetMsgId) and send them back (VIEW_MESSAGE_BY_ID, CONSUMER_SEND_MSG_BACK).
pub fn shard_base_offset(shard_id: u8) -> u64 {
    u64::from(shard_id) << SHARD_OFFSET_BITS
}

/// The shard a physical offset belongs to.
pub fn shard_of_offset(offset: u64) -> u8 {
    (offset >> SHARD_OFFSET_BITS) as u8
}
