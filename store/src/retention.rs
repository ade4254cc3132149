//! Retention: refuse writes when the disk is nearly full, delete expired CommitLog segments and
//! the ConsumeQueue and index files below the log's new start. Everything that may block (statvfs,
//! file metadata, unlinking a segment of up to 1 GiB, the last close that frees its blocks) runs
//! on the reactor's helper thread; the reactor only decides and updates its tables.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tracing::{info, warn};

use super::doomed::Doomed;
use super::message_store::MessageStore;
use crate::runtime;
use crate::runtime::tasks::StopSignal;

/// Time between retention passes.
const PASS_INTERVAL: Duration = Duration::from_secs(10);

impl MessageStore {
    /// One retention pass: refuse or accept writes by disk usage, delete expired segments.
    pub async fn enforce_retention(&self, now_ms: i64, hour_of_day: u32) -> io::Result<()> {
        let at_delete_hour = self
            .config
            .delete_when
            .split(';')
            .filter_map(|h| h.trim().parse::<u32>().ok())
            .any(|h| h == hour_of_day);
        self.retention_pass(now_ms, at_delete_hour).await
    }

    /// A retention pass now that deletes expired segments (and the queue and index files
    /// below the new log start) whatever the hour: DELETE_EXPIRED_COMMITLOG and
    /// CLEAN_EXPIRED_CONSUMEQUEUE, as Java's `executeDeleteFilesManually`.
    pub async fn delete_expired_now(&self, now_ms: i64) -> io::Result<()> {
        self.retention_pass(now_ms, true).await
    }

    /// Measures the disk usage (on the helper thread) and acts on it: refuse or accept
    /// writes, prepare segments ahead or not. Returns it.
    pub async fn refresh_disk_usage(&self) -> io::Result<u32> {
        let probe = self.disk_usage.borrow().clone();
        let used = runtime::spawn_blocking(move || probe()).await?;
        self.note_disk_usage(used);
        Ok(used)
    }

    async fn retention_pass(&self, now_ms: i64, at_delete_hour: bool) -> io::Result<()> {
        let used = self.refresh_disk_usage().await?;
        // As RocketMQ: past diskMaxUsedSpaceRatio expired files go at any hour; past
        // diskSpaceCleanForciblyRatio the oldest go even unexpired (one per pass here).
        let space_to_delete = used >= self.config.disk_max_used_space_ratio;
        let clean_forcibly = used >= self.config.disk_space_clean_forcibly_ratio;
        if !at_delete_hour && !space_to_delete && !clean_forcibly {
            return Ok(());
        }
        let modified_ms = self.segment_modified_ms().await;
        let reserved_ms = self.config.file_reserved_time_hours as i64 * 3_600_000;
        let mut forced_left = usize::from(clean_forcibly);
        let mut doomed = Doomed::default();
        let min = self.log.borrow_mut().delete_segments(
            |segment| {
                let expired = modified_ms
                    .iter()
                    .find(|(start, _)| *start == segment.start)
                    .and_then(|(_, ms)| *ms)
                    .is_some_and(|ms| now_ms - ms >= reserved_ms);
                if expired {
                    info!(segment = segment.start, reserved_hours = reserved_ms / 3_600_000, "commit log segment expired");
                    return true;
                }
                // Critically full: one more segment goes per pass, expired or not.
                if forced_left > 0 {
                    forced_left -= 1;
                    warn!(
                        segment = segment.start,
                        used_percent = used,
                        clean_forcibly_ratio = self.config.disk_space_clean_forcibly_ratio,
                        "disk critically full: deleting a commit log segment before it expired (its unconsumed messages are lost)"
                    );
                    return true;
                }
                false
            },
            &mut doomed,
        );
        for queue in self.queues.borrow_mut().values_mut() {
            queue.delete_below(min, &mut doomed);
        }
        self.index.borrow_mut().delete_below(min, &mut doomed);
        doomed.delete(&self.config.storage).await
    }

    fn note_disk_usage(&self, used_percent: u32) {
        self.state.disk_used_percent.set(Some(used_percent));
        let full = used_percent >= self.config.disk_space_warning_level_ratio;
        if full != self.state.disk_full.get() {
            if full {
                warn!(used_percent, "disk nearly full: refusing writes");
            } else {
                info!(used_percent, "disk space back: accepting writes");
            }
            self.state.disk_full.set(full);
        }
    }

    /// Last modification of each segment before the active one (`None`: unreadable), read on
    /// the helper thread.
    async fn segment_modified_ms(&self) -> Vec<(u64, Option<i64>)> {
        let candidates: Vec<(u64, PathBuf)> = {
            let log = self.log.borrow();
            let active = log.segment_start_of(log.write_pos());
            log.segments()
                .filter(|s| s.start < active)
                .map(|s| (s.start, s.path().to_path_buf()))
                .collect()
        };
        runtime::spawn_blocking(move || {
            candidates
                .into_iter()
                .map(|(start, path)| {
                    let ms = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|t| t.as_millis() as i64);
                    (start, ms)
                })
                .collect()
        })
        .await
    }
}

/// Starts the store's retention task.
pub fn start(store: &std::rc::Rc<MessageStore>) {
    store.spawn_background("retention", retention_loop);
}

/// A pass every [`PASS_INTERVAL`] until the stop.
async fn retention_loop(store: std::rc::Weak<MessageStore>, stop: StopSignal) {
    while stop.sleep(PASS_INTERVAL).await {
        let Some(s) = store.upgrade() else { return };
        let now = runtime::now_ms();
        if let Err(e) = s.enforce_retention(now, local_hour(now)).await {
            warn!(error = %e, "retention pass failed");
        }
    }
}

fn local_hour(ms: i64) -> u32 {
    super::index_file::local_time_name(ms)[8..10]
        .parse()
        .unwrap_or(0)
}
