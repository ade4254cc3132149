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
            }
        }
        if self.paths.is_empty() {
            return Ok(());
        }
        runtime::spawn_blocking(move || {
            for path in &self.paths {
                std::fs::remove_file(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("removing {}: {e}", path.display()))
                })?;
            }
            drop(self.handles);
            Ok(())
        })
        .await
    }
}
