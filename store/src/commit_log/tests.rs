//! The CommitLog's own tests (`on_reactor` is shared with the store's other test modules).

use std::path::Path;

use thruster_protocol::message::{self, body_crc, RecordRef};

use super::segment::align_up;
use super::{
    materialize, prepare_segment, segment_file_name, AppendError, CommitLog, CommitLogSettings,
    Slice, BLOCK_BYTES,
};
use crate::runtime::{run_reactor, ReactorConfig};
use crate::storage::Storage;

pub(crate) fn on_reactor<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
    make: impl FnOnce() -> F + Send + 'static,
) -> T {
    run_reactor(ReactorConfig::new("store-test"), make).expect("reactor")
}

fn settings(dir: &Path) -> CommitLogSettings {
    CommitLogSettings {
        dir: dir.join("commitlog"),
        base_offset: 0,
        segment_bytes: 64 << 10,
        chunk_bytes: 8 << 10,
        memory_window_bytes: 32 << 10,
        prewrite_segments: true,
        dsync_writes: false,
        storage: Storage::default(),
    }
}

fn body(i: usize) -> Vec<u8> {
    vec![(i % 251) as u8; 100 + (i * 37) % 900]
}

/// Appends record `i` (a real RocketMQ record) and returns (position, length).
fn append(log: &mut CommitLog, i: usize) -> Result<(u64, usize), AppendError> {
    let body = body(i);
    let record = |pos: u64| RecordRef {
        queue_id: 0,
        flag: 0,
        queue_offset: i as i64,
        physical_offset: pos as i64,
        sys_flag: 0,
        born_timestamp: 1,
        born_host: "127.0.0.1:1".parse().unwrap(),
        store_timestamp: 2,
        store_host: "127.0.0.1:10911".parse().unwrap(),
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body: &body,
        topic: "T",
        properties: "",
    };
    let len = record(0).encoded_len();
    let crc = body_crc(&body);
    log.append(len, |pos, w| record(pos).encode(crc, w))
        .map(|(pos, ())| (pos, len))
}

async fn append_all(
    log: &mut CommitLog,
    s: &CommitLogSettings,
    range: std::ops::Range<usize>,
) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    for i in range {
        loop {
            match append(log, i) {
                Ok(p) => {
                    out.push(p);
                    break;
                }
                Err(AppendError::NeedSegment) => {
                    let next = prepare_segment(s, log.next_segment_start()).await.unwrap();
                    log.set_next_segment(next);
                }
                Err(AppendError::NeedFlush) => flush(log).await,
            }
        }
    }
    out
}

async fn flush(log: &mut CommitLog) {
    if let Some(mut plan) = log.plan_flush() {
        plan.execute().await.unwrap();
        log.complete_flush(&plan);
    }
}

async fn check(log: &CommitLog, positions: &[(u64, usize)]) {
    for (i, (pos, len)) in positions.iter().enumerate() {
        let bytes = materialize(&log.read_slices(*pos, *len).unwrap())
            .await
            .unwrap();
        let record = message::decode_record(&bytes, true).unwrap();
        assert_eq!(record.physical_offset, *pos as i64);
        assert_eq!(&record.body[..], &body(i)[..], "record {i}");
    }
}

/// The last segment holds zeros from the log's end to `until` (its end when `None`).
fn assert_zeros_past_the_end(log: &CommitLog, s: &CommitLogSettings, until: Option<u64>) {
    let end = log.write_pos();
    let segment_start = log.segment_start_of(end);
    let file = std::fs::read(s.dir.join(segment_file_name(segment_start))).unwrap();
    let until = until.map_or(file.len(), |u| (u - segment_start) as usize);
    assert!(
        file[(end - segment_start) as usize..until]
            .iter()
            .all(|&b| b == 0),
        "old bytes past the log's end at {end}"
    );
}

/// Reopens the log: recovery finds every record, in order, and the same end.
async fn reopen_and_check(log: CommitLog, s: &CommitLogSettings, positions: &[(u64, usize)]) {
    let end = log.write_pos();
    drop(log);
    let mut seen = Vec::new();
    let log = CommitLog::open(s.clone(), 0, true, |pos, bytes| {
        seen.push((pos, bytes.len()))
    })
    .await
    .unwrap();
    assert_eq!(seen, positions);
    assert_eq!(log.write_pos(), end);
    check(&log, positions).await;
}

#[test]
fn chunk_buffers_are_allocated_once_per_window_not_once_per_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    on_reactor(move || async move {
        // A window of 32 chunks, written out only when full: every write-out frees a burst
        // of chunks at once.
        let s = CommitLogSettings {
            memory_window_bytes: 256 << 10,
            segment_bytes: 1 << 20,
            ..settings(&root)
        };
        let mut log = CommitLog::open(s.clone(), 0, true, |_, _| {})
            .await
            .unwrap();
        append_all(&mut log, &s, 0..8000).await;
        let chunks_used = log.write_pos() / s.chunk_bytes as u64;
        let window_chunks = (s.memory_window_bytes / s.chunk_bytes) as u64;
        assert!(chunks_used > 4 * window_chunks, "{chunks_used} chunks");
        assert!(
            log.chunk_buffers_allocated <= log.chunk_buffers_max(),
            "{} buffers allocated for {chunks_used} chunks through a {window_chunks}-chunk window",
            log.chunk_buffers_allocated
        );
    });
}

#[test]
fn the_file_gets_zeros_past_the_last_record_even_from_a_reused_chunk_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    on_reactor(move || async move {
        let s = CommitLogSettings {
            prewrite_segments: false,
            ..settings(&root)
        };
        let mut log = CommitLog::open(s.clone(), 0, true, |_, _| {})
            .await
            .unwrap();
        // Many chunks through a 4-chunk window: evicted buffers, full of records, are kept.
        append_all(&mut log, &s, 0..200).await;
        flush(&mut log).await;
        assert!(
            !log.free_chunks.is_empty(),
            "evicted chunk buffers are kept"
        );
        // Cross into a new chunk, which takes a reused buffer, and stop mid-block.
        let chunk = s.chunk_bytes as u64;
        let mut i = 200;
        let first_chunk = log.write_pos() / chunk;
        while log.write_pos() / chunk == first_chunk {
            append_all(&mut log, &s, i..i + 1).await;
            i += 1;
        }
        append_all(&mut log, &s, i..i + 1).await;
        flush(&mut log).await;
        let end = log.write_pos();
        assert_ne!(end % BLOCK_BYTES, 0, "the last block is partly used");
        assert_zeros_past_the_end(&log, &s, Some(align_up(end)));
    });
}

#[test]
fn an_o_dsync_group_commit_spanning_chunks_is_one_write_per_segment_and_recovers_whole() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    on_reactor(move || async move {
        let s = CommitLogSettings {
            dsync_writes: true,
            ..settings(&root)
        };
        let mut log = CommitLog::open(s.clone(), 0, true, |_, _| {})
            .await
            .unwrap();
        let mut positions = Vec::new();
        let (mut coalesced, mut across_segments) = (0, 0);
        let mut i = 0;
        while i < 600 {
            // Groups of 1 to 40 records (up to ~40 KiB: up to 6 chunks of 8 KiB).
            let group = 1 + (i * 7) % 40;
            for j in i..i + group {
                // Without flushing in between: the group is one commit.
                match append(&mut log, j) {
                    Ok(p) => positions.push(p),
                    Err(AppendError::NeedSegment) => {
                        let next = prepare_segment(&s, log.next_segment_start()).await.unwrap();
                        log.set_next_segment(next);
                        positions.push(append(&mut log, j).unwrap());
                    }
                    Err(AppendError::NeedFlush) => break,
                }
            }
            i = positions.len();
            let mut plan = log.plan_flush().expect("dirty");
            let segments = plan.synced.len();
            let dirty_chunks = plan.marks.len();
            assert_eq!(plan.writes.len(), segments, "one write per segment");
            coalesced += usize::from(dirty_chunks > segments);
            across_segments += usize::from(segments > 1);
            plan.execute().await.unwrap();
            log.complete_flush(&plan);
            assert_eq!(log.flushed_pos(), log.write_pos());
            // Past the last record the file holds zeros, whatever a reused buffer held.
            assert_zeros_past_the_end(&log, &s, None);
        }
        assert!(coalesced > 20, "{coalesced} groups spanned chunks");
        assert!(across_segments > 0, "a group crossed into a new segment");
        check(&log, &positions).await;
        reopen_and_check(log, &s, &positions).await;
    });
}

#[test]
fn appends_cross_chunks_and_segments_and_read_back_from_memory_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    on_reactor(move || async move {
        let s = settings(&root);
        let mut log = CommitLog::open(s.clone(), 0, true, |_, _| {})
            .await
            .unwrap();
        let positions = append_all(&mut log, &s, 0..400).await;
        assert!(log.segments().count() >= 3, "rolled across segments");
        flush(&mut log).await;
        assert_eq!(log.flushed_pos(), log.write_pos());
        // Old data is no longer in memory: served as file ranges.
        let (pos, len) = positions[0];
        assert!(matches!(
            log.read_slices(pos, len).unwrap()[0],
            Slice::File { .. }
        ));
        check(&log, &positions).await;
        assert!(log.read_slices(log.write_pos(), 1).is_err());

        reopen_and_check(log, &s, &positions).await;
    });
}

#[test]
fn unflushed_data_is_bounded_by_the_memory_window() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    on_reactor(move || async move {
        let s = settings(&root);
        let mut log = CommitLog::open(s.clone(), 0, true, |_, _| {})
            .await
            .unwrap();
        let mut refused = false;
        for i in 0..200 {
            match append(&mut log, i) {
                Err(AppendError::NeedFlush) => {
                    refused = true;
                    break;
                }
                Err(AppendError::NeedSegment) => {
                    let next = prepare_segment(&s, log.next_segment_start()).await.unwrap();
                    log.set_next_segment(next);
                }
                Ok(_) => {
                    assert!(log.unflushed_bytes() <= (s.memory_window_bytes + 2048) as u64)
                }
            }
        }
        assert!(
            refused,
            "appends must stop when unflushed data exceeds the window"
        );
    });
}

/// Writes records 0..30 into the first segment, lets `damage` change the file's bytes
/// (given the records' positions), reopens: the positions, how many records recovery
/// found, and the log.
async fn thirty_records_damaged(
    s: &CommitLogSettings,
    damage: impl FnOnce(&mut [u8], &[(u64, usize)]),
) -> (Vec<(u64, usize)>, usize, CommitLog) {
    let mut log = CommitLog::open(s.clone(), 0, true, |_, _| {})
        .await
        .unwrap();
    let positions = append_all(&mut log, s, 0..30).await;
    flush(&mut log).await;
    drop(log);
    let path = s.dir.join(segment_file_name(0));
    let mut data = std::fs::read(&path).unwrap();
    damage(&mut data, &positions);
    std::fs::write(&path, &data).unwrap();
    let mut seen = 0;
    let log = CommitLog::open(s.clone(), 0, true, |_, _| seen += 1)
        .await
        .unwrap();
    (positions, seen, log)
}

#[test]
fn a_record_whose_end_never_reached_the_disk_is_cut_though_its_body_crc_holds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    on_reactor(move || async move {
        let s = settings(&root);
        // As if the write holding record 20's last bytes (its topic and properties
        // length) and everything after had not landed: zeros from there on.
        let (positions, seen, log) = thirty_records_damaged(&s, |data, positions| {
            let (pos, len) = positions[20];
            let end = (positions[29].0 as usize) + positions[29].1;
            data[pos as usize + len - 3..end].fill(0);
        })
        .await;
        let pos = positions[20].0;
        assert_eq!(
            seen, 20,
            "record 20 is torn: size, position and body CRC still hold"
        );
        assert_eq!(log.write_pos(), pos);
    });
}

#[test]
fn torn_tail_is_cut_at_the_last_intact_record_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    on_reactor(move || async move {
        let s = settings(&root);
        // Flip a body byte of record 20: records 20.. are lost, 0..20 survive.
        let (positions, seen, mut log) = thirty_records_damaged(&s, |data, positions| {
            data[positions[20].0 as usize + 95] ^= 0xFF;
        })
        .await;
        let (pos, _) = positions[20];
        let path = s.dir.join(segment_file_name(0));
        assert_eq!(seen, 20);
        assert_eq!(log.write_pos(), pos);
        // What followed the cut was zeroed, so it can never come back.
        let data = std::fs::read(&path).unwrap();
        assert!(data[pos as usize..positions[29].0 as usize]
            .iter()
            .all(|b| *b == 0));
        let more = append_all(&mut log, &s, 20..25).await;
        assert_eq!(more[0].0, pos);
        flush(&mut log).await;
        drop(log);
        let mut seen = 0;
        let log = CommitLog::open(s.clone(), 0, true, |_, _| seen += 1)
            .await
            .unwrap();
        assert_eq!(seen, 25);
        check(&log, &[&positions[..20], &more[..]].concat()).await;
    });
}
