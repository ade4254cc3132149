//! Loading `plain_acl.yml` at start and reloading it when it changes (RocketMQ's
//! `AclFileWatchService` polls the modification time every 5 s).
//!
//! Shard 0 polls the file's modification time and size every `aclReloadIntervalMs` on the
//! helper thread; on a change it parses the file there too, takes the new rules and sends
//! them to the other shards (`MeshMessage::AclChanged`). A file that fails to read or parse
//! keeps the rules in force and logs the error once per change of the file.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{error, info};

use super::config::{AclRules, ACL_FILE_BYTES_MAX};
use crate::runtime;
use crate::shard::{MeshMessage, Shard};

/// What identifies one version of the file: its modification time and size.
pub type FileStamp = (SystemTime, u64);

/// Reads and parses the file; the error names the file.
pub fn load(path: &Path) -> Result<(AclRules, FileStamp), String> {
    let describe = |e: io::Error| format!("{}: {e}", path.display());
    let metadata = std::fs::metadata(path).map_err(describe)?;
    if metadata.len() > ACL_FILE_BYTES_MAX {
        return Err(format!(
            "{}: {} bytes, more than the {ACL_FILE_BYTES_MAX} an ACL file may have",
            path.display(),
            metadata.len()
        ));
    }
    let stamp = (metadata.modified().map_err(describe)?, metadata.len());
    let text = std::fs::read_to_string(path).map_err(describe)?;
    let rules = AclRules::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((rules, stamp))
}

fn stamp_of(path: &Path) -> io::Result<FileStamp> {
    let metadata = std::fs::metadata(path)?;
    Ok((metadata.modified()?, metadata.len()))
}

/// Shard 0's task: reload the file whenever its stamp differs from the one last loaded.
pub async fn run(shard: Rc<Shard>, path: PathBuf, loaded: FileStamp, interval: Duration) {
    let stop = shard.tasks.stop_signal();
    // `None` while the file cannot be read (reported once).
    let mut last_seen = Some(loaded);
    while stop.sleep(interval).await {
        let watched = path.clone();
        let stamp = match runtime::spawn_blocking(move || stamp_of(&watched)).await {
            Ok(stamp) if Some(stamp) == last_seen => continue,
            Ok(stamp) => stamp,
            Err(e) => {
                // A missing file (being replaced, or removed) keeps the rules in force.
                if last_seen.take().is_some() {
                    error!(path = %path.display(), error = %e, "ACL file unreadable; the rules in force are kept");
                }
                continue;
            }
        };
        let reading = path.clone();
        match runtime::spawn_blocking(move || load(&reading)).await {
            Ok((rules, stamp)) => {
                last_seen = Some(stamp);
                info!(path = %path.display(), accounts = rules.accounts.len(), "ACL file reloaded");
                let rules = Arc::new(rules);
                *shard.acl.borrow_mut() = Some(rules.clone());
                shard
                    .broadcast(|| MeshMessage::AclChanged(rules.clone()))
                    .await;
            }
            Err(e) => {
                last_seen = Some(stamp);
                error!(path = %path.display(), error = %e, "ACL file rejected; the rules in force are kept");
            }
        }
    }
}
