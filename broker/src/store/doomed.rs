//! Files the store has taken out of its tables and deletes off the reactor: unlinking a
//! segment of up to 1 GiB, and the last close that frees its blocks, can block.

use std::io;
use std::path::PathBuf;

use crate::runtime;

/// Files taken out of the store's tables, to be deleted off the reactor. A segment's read handle
/// travels along, so its last close (which frees the blocks of an unlinked file) happens there
/// too, unless a pull still holds it.
#[derive(Default)]
pub struct Doomed {
    pub paths: Vec<PathBuf>,
    pub handles: Vec<std::sync::Arc<std::fs::File>>,
}

impl Doomed {
    /// Unlinks the files and drops the handles on the helper thread.
    pub async fn delete(self) -> io::Result<()> {
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
