//! `thruster-tune apply` and `undo`: the fixes of the items to tune (sysctls, I/O scheduler,
//! `nr_requests`, CPU governor, IRQ affinity), with each file's previous value recorded first in
//! a state file, so `undo` puts every one back.
//!
//! State file layout (JSON): `{ "version": 1, "changes": [ { "item": "vm.swappiness",
//! "path": "/proc/sys/vm/swappiness", "previous": "60", "value": "1" }, … ] }`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::check::{Item, Verdict};
use crate::host::{self, Host};

const STATE_VERSION: u32 = 1;
/// Where the record of an `apply` goes unless `--state` says otherwise (under the root).
pub const DEFAULT_STATE_PATH: &str = "/var/lib/thruster-tune/applied.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub item: String,
    pub path: String,
    pub previous: String,
    pub value: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    version: u32,
    changes: Vec<Change>,
}

pub fn default_state_path(host: &Host) -> PathBuf {
    host.path(DEFAULT_STATE_PATH)
}

/// The changes `apply` would make: every fix of every item to tune, with the value now in its
/// file (the selected entry of a choice file such as `scheduler`).
pub fn planned(host: &Host, items: &[Item]) -> Vec<Change> {
    items
        .iter()
        .filter(|item| item.verdict == Verdict::Tune)
        .flat_map(|item| {
            item.fixes.iter().filter_map(|fix| {
                let now = host.read(&fix.path)?;
                let previous = host::selected(&now).unwrap_or(now);
                (previous != fix.value).then(|| Change {
                    item: item.name.clone(),
                    path: fix.path.clone(),
                    previous,
                    value: fix.value.clone(),
                })
            })
        })
        .collect()
}

/// Writing to the real `/proc/sys` and `/sys` takes root; a fake root (tests) does not.
fn require_root(host: &Host, what: &str) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if host.is_real() && unsafe { libc::geteuid() } != 0 {
        return Err(format!(
            "{what} writes to /proc/sys and /sys, which takes root: run `sudo thruster-tune {what}` \
             (`thruster-tune apply --dry-run` shows the changes without root)"
        ));
    }
    Ok(())
}

/// What an `apply` did: the changes made (and recorded), and the writes the kernel refused
/// (a managed interrupt's affinity, a scheduler the driver rejects), which change nothing.
#[derive(Debug, Default)]
pub struct Applied {
    pub changes: Vec<Change>,
    pub refused: Vec<String>,
}

/// Records the planned changes in `state_path`, then makes them. Refuses while an earlier
/// apply is not undone (its record holds the values to go back to).
pub fn apply(host: &Host, items: &[Item], state_path: &Path) -> Result<Applied, String> {
    require_root(host, "apply")?;
    if state_path.exists() {
        return Err(format!(
            "{} records an earlier apply: run `thruster-tune undo` first",
            state_path.display()
        ));
    }
    let planned = planned(host, items);
    if planned.is_empty() {
        return Ok(Applied::default());
    }
    // Recorded before anything changes, so an interrupted apply can still be undone.
    write_record(state_path, &planned)?;
    let mut applied = Applied::default();
    for change in planned {
        match host.write(&change.path, &change.value) {
            Ok(()) => applied.changes.push(change),
            Err(e) => applied.refused.push(format!("{} ({})", e, change.item)),
        }
    }
    if applied.changes.is_empty() {
        std::fs::remove_file(state_path)
            .map_err(|e| format!("removing {}: {e}", state_path.display()))?;
    } else {
        write_record(state_path, &applied.changes)?;
    }
    Ok(applied)
}

fn write_record(state_path: &Path, changes: &[Change]) -> Result<(), String> {
    if let Some(parent) = state_path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    let record = Record {
        version: STATE_VERSION,
        changes: changes.to_vec(),
    };
    let json = serde_json::to_string_pretty(&record).map_err(|e| e.to_string())?;
    std::fs::write(state_path, json).map_err(|e| format!("writing {}: {e}", state_path.display()))
}

/// Puts back every value the record in `state_path` holds (last change first), then removes
/// the record. A value that cannot be restored is reported, and the record kept.
pub fn undo(host: &Host, state_path: &Path) -> Result<Vec<Change>, String> {
    require_root(host, "undo")?;
    let text = std::fs::read_to_string(state_path)
        .map_err(|e| format!("{}: {e} (nothing applied to undo?)", state_path.display()))?;
    let record: Record = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a thruster-tune record: {e}", state_path.display()))?;
    if record.version != STATE_VERSION {
        return Err(format!(
            "{}: record version {} unknown",
            state_path.display(),
            record.version
        ));
    }
    let failures: Vec<String> = record
        .changes
        .iter()
        .rev()
        .filter_map(|c| {
            host.write(&c.path, &c.previous)
                .err()
                .map(|e| e.to_string())
        })
        .collect();
    if !failures.is_empty() {
        return Err(format!(
            "could not restore: {}; {} kept",
            failures.join("; "),
            state_path.display()
        ));
    }
    std::fs::remove_file(state_path)
        .map_err(|e| format!("removing {}: {e}", state_path.display()))?;
    Ok(record.changes)
}
