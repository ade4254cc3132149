//! Broker metadata: topic configs, subscription groups, consumer offsets, client registrations. Each table says
//! which shard writes it and how the others learn of changes.

pub mod bounded_table;
pub mod clients;
pub mod consumer_offset;
pub mod queue_locks;
pub mod subscription_group;
pub mod topic_config;
pub mod transactions;

use std::io;
use std::path::Path;

/// What is wrong with a topic or group name, if anything: RocketMQ allows 1 to `max_bytes`
/// bytes of `[A-Za-z0-9%|_-]` (`Validators`).
pub fn name_problem(name: &str, max_bytes: usize, kind: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is blank".into());
    }
    if name.len() > max_bytes {
        return Some(format!("is longer than {kind} max length {max_bytes}"));
    }
    let legal = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'|' | b'_' | b'-');
    if !name.bytes().all(legal) {
        return Some("contains illegal characters, allowing only ^[%|a-zA-Z0-9_-]+$".into());
    }
    None
}

/// Writes `bytes` to `path` through a temporary file and a rename, keeping the previous
/// content as `<path>.bak` (as RocketMQ's `MixAll.string2File` does), so a crash mid-write
/// never leaves a torn file.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let context = |e: io::Error, what: &str, p: &Path| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| context(e, "creating", dir))?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(|e| context(e, "creating", &tmp))?;
    file.write_all(bytes)
        .map_err(|e| context(e, "writing", &tmp))?;
    file.sync_data().map_err(|e| context(e, "syncing", &tmp))?;
    if path.exists() {
        let bak = path.with_extension("json.bak");
        std::fs::copy(path, &bak).map_err(|e| context(e, "backing up to", &bak))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| context(e, "renaming to", path))?;
    Ok(())
}

/// Reads a JSON config file, falling back to its `.bak` when the main file is missing or
/// unreadable; `None` when neither exists.
pub fn read_json_file<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> io::Result<Option<T>> {
    for candidate in [path.to_path_buf(), path.with_extension("json.bak")] {
        match std::fs::read(&candidate) {
            Ok(bytes) => match thruster_protocol::body::decode_lenient::<T>(what, &bytes) {
                Ok(value) => return Ok(Some(value)),
                Err(error) => {
                    tracing::warn!(file = %candidate.display(), %error, "unreadable config file")
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("reading {}: {e}", candidate.display()),
                ))
            }
        }
    }
    Ok(None)
}
