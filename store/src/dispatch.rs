//! Dispatch: a stored record's ConsumeQueue entry and index keys, written inline by the put
//! and again by recovery (idempotent).

use std::io;

use thruster_protocol::message::{self, property, sys_flag};

use super::config::StoreConfig;
use super::consume_queue::{ConsumeQueue, CqEntry, QueueTable};
use super::index_file::IndexService;

pub(super) fn queue_entry<'a>(
    config: &StoreConfig,
    queues: &'a mut QueueTable,
    topic: &str,
    queue_id: i32,
) -> io::Result<&'a mut ConsumeQueue> {
    queues.get_or_open(topic, queue_id, || {
        ConsumeQueue::open(
            &config.storage,
            &config.consume_queue_dir(),
            topic,
            queue_id,
            config.consume_queue_entries_per_file,
        )
    })
}

/// Writes a record's ConsumeQueue entry and index keys. Idempotent (recovery re-dispatches).
#[allow(clippy::too_many_arguments)]
pub(super) fn dispatch(
    config: &StoreConfig,
    queues: &mut QueueTable,
    index: &mut IndexService,
    pos: u64,
    topic: &str,
    queue_id: i32,
    queue_offset: u64,
    size: u32,
    sys_flag: i32,
    properties: &str,
    store_timestamp: i64,
) -> io::Result<()> {
    let queue = if dispatches_to_queue(sys_flag) {
        Some(queue_entry(config, queues, topic, queue_id)?)
    } else {
        None
    };
    let record = DispatchRecord {
        pos,
        topic,
        queue_offset,
        size,
        sys_flag,
        properties,
        store_timestamp,
    };
    dispatch_to(config, queue, index, &record)
}

/// Whether a record gets a ConsumeQueue entry (not a prepared or rolled-back half message).
pub(super) fn dispatches_to_queue(sys_flag: i32) -> bool {
    matches!(
        sys_flag::transaction_type(sys_flag),
        sys_flag::TRANSACTION_NOT_TYPE | sys_flag::TRANSACTION_COMMIT
    )
}

/// What dispatching one stored record needs.
pub(super) struct DispatchRecord<'a> {
    pub(super) pos: u64,
    pub(super) topic: &'a str,
    pub(super) queue_offset: u64,
    pub(super) size: u32,
    pub(super) sys_flag: i32,
    pub(super) properties: &'a str,
    pub(super) store_timestamp: i64,
}

/// `dispatch` with the record's queue already looked up (`None` when it gets no entry).
pub(super) fn dispatch_to(
    config: &StoreConfig,
    queue: Option<&mut ConsumeQueue>,
    index: &mut IndexService,
    record: &DispatchRecord<'_>,
) -> io::Result<()> {
    // One pass over the properties for everything dispatch reads (the last duplicate wins).
    let (mut tags, mut uniq, mut keys) = (None, None, None);
    for (name, value) in message::property_pairs(record.properties) {
        let slot = match name {
            property::TAGS => &mut tags,
            property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX => &mut uniq,
            property::KEYS => &mut keys,
            _ => continue,
        };
        if !value.is_empty() {
            *slot = Some(value);
        }
    }
    if let Some(queue) = queue {
        queue
            .put(
                record.queue_offset,
                CqEntry {
                    phys_offset: record.pos,
                    size: record.size,
                    tags_code: tags.map_or(0, message::tag_code),
                },
            )
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    }
    let rolled_back = sys_flag::transaction_type(record.sys_flag) == sys_flag::TRANSACTION_ROLLBACK;
    if config.message_index_enable && !rolled_back && (uniq.is_some() || keys.is_some()) {
        let all = uniq
            .into_iter()
            .chain(keys.into_iter().flat_map(|k| k.split(' ')));
        index.put_keys(record.topic, all, record.pos, record.store_timestamp)?;
    }
    Ok(())
}
