//! Files the store has taken out of its tables and deletes off the reactor: unlinking a
//! segment of up to 1 GiB, and the last close that frees its blocks, can block.

use std::io;
use std::path::PathBuf;

use super::storage::Storage;
use crate::runtime;

/// Files taken out of the store's tables, to be deleted off the reactor. A segment's read handle
/// travels along, so its last close (which frees the blocks of an unlinked file) happens there
/// too, unless a pull still holds it.
#[derive(Default)]
pub struct Doomed {
    /// CommitLog segments: removed through the store's [`Storage`].
    pub segments: Vec<PathBuf>,
    /// Memory-mapped ConsumeQueue and index files: removed through the store's [`Storage`]
    /// too.
    pub paths: Vec<PathBuf>,
    pub handles: Vec<std::sync::Arc<std::fs::File>>,
    /// Directories the deletion of those files empties (a deleted topic's queue directories,
    /// then its own), removed after them, deepest first as listed. One that still holds
    /// something stays (with one broker name, another shard's queues of the topic share its
    /// directory; the last shard to delete its queues removes it).
    pub dirs: Vec<PathBuf>,
}

impl Doomed {
    /// Unlinks the files and drops the handles on the helper thread (a simulated disk removes
    /// its files itself: nothing there blocks).
    pub async fn delete(mut self, storage: &Storage) -> io::Result<()> {
        match storage {
            Storage::Real => self.paths.append(&mut self.segments),
            #[cfg(test)]
            Storage::Sim(_) => {
                let mut files = std::mem::take(&mut self.segments);
                files.append(&mut self.paths);
                for file in files {
                    storage.remove_file(&file)?;
                }
                self.dirs.clear(); // the simulated disk has names, no directories
            }
        }
        if self.paths.is_empty() && self.dirs.is_empty() {
            return Ok(());
        }
        runtime::spawn_blocking(move || {
            for path in &self.paths {
                std::fs::remove_file(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("removing {}: {e}", path.display()))
                })?;
            }
            drop(self.handles);
            for dir in &self.dirs {
                remove_empty_dir(dir)?;
            }
            Ok(())
        })
        .await
    }
}

/// Removes `dir` if it exists and is empty.
fn remove_empty_dir(dir: &std::path::Path) -> io::Result<()> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("removing {}: {e}", dir.display()),
        )),
    }
}
