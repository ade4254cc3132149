//! A fixed-size file mapped into memory (ConsumeQueue and IndexFile files, as in RocketMQ).
//!
//! Small random writes (20-byte entries, hash slots) go to the page cache through the mapping;
//! durability comes from `sync`, an fdatasync run on the reactor's helper thread (Linux writes
//! back dirty pages of a shared mapping on fdatasync of the file).
//!
//! The mapping is only ever touched by the owning reactor; nothing else writes these files
//! while the store runs (the store directory is this process's alone).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::MmapMut;

use crate::runtime;

/// How much of a new file is mapped without readahead: its head, where a queue that only ever
/// holds a few entries writes (3276 ConsumeQueue entries). Past it, a queue that keeps growing
/// is written and read in order with the kernel's readahead as usual.
const NO_READAHEAD_HEAD_BYTES: usize = 64 << 10;

pub struct MappedFile {
    path: PathBuf,
    file: Arc<File>,
    map: MmapMut,
}

impl MappedFile {
    /// Opens (creating if needed) `path` at exactly `size_bytes`. A new file reads as zeros.
    /// `no_readahead_when_new`: a file created here is mapped without readahead (below).
    pub fn open(
        path: &Path,
        size_bytes: u64,
        no_readahead_when_new: bool,
    ) -> io::Result<MappedFile> {
        let annotate = |what: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| annotate("creating the directory of", e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| annotate("opening", e))?;
        let len = file.metadata().map_err(|e| annotate("stat", e))?.len();
        let created = len == 0;
        if len != size_bytes {
            if len > size_bytes {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} has {len} bytes, expected {size_bytes}", path.display()),
                ));
            }
            file.set_len(size_bytes)
                .map_err(|e| annotate("sizing", e))?;
        }
        // SAFETY: the file is this store's own and is not resized or written by anyone else
        // while mapped (see the module docs).
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(|e| annotate("mapping", e))?;
        if created && no_readahead_when_new {
            // A new file is one hole. Without this, the first write's page fault makes the
            // kernel read ahead (zero-fill) a large range of it: 61 % of the broker's CPU while
            // topics were being created (4000 topics, `perf`), most of it for ConsumeQueues
            // that then hold a few entries. Written pages stay in the page cache for reads; a
            // file reopened after a restart gets the default advice back.
            let head_bytes = NO_READAHEAD_HEAD_BYTES.min(map.len());
            map.advise_range(memmap2::Advice::Random, 0, head_bytes)
                .map_err(|e| annotate("advising", e))?;
        }
        Ok(MappedFile {
            path: path.to_owned(),
            file: Arc::new(file),
            map,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }

    /// Makes every write so far durable, off the reactor thread.
    pub async fn sync(&self) -> io::Result<()> {
        let file = self.file.clone();
        let path = self.path.clone();
        runtime::spawn_blocking(move || {
            file.sync_data()
                .map_err(|e| io::Error::new(e.kind(), format!("fdatasync {}: {e}", path.display())))
        })
        .await
    }

    /// A handle that syncs the file later without borrowing the mapping.
    pub fn sync_handle(&self) -> (Arc<File>, PathBuf) {
        (self.file.clone(), self.path.clone())
    }

    /// Deletes the file now (the mapping goes with `self`). For recovery, before serving;
    /// retention uses [`MappedFile::unmap`] and deletes off the reactor.
    pub fn remove(self) -> io::Result<()> {
        let path = self.unmap();
        std::fs::remove_file(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("removing {}: {e}", path.display())))
    }

    /// Drops the mapping and returns the file's path, for the caller to delete off the reactor
    /// (unlinking can block).
    pub fn unmap(self) -> PathBuf {
        self.path.clone()
    }
}

/// fdatasyncs files collected with `sync_handle`, off the reactor thread.
pub async fn sync_all(handles: Vec<(Arc<File>, PathBuf)>) -> io::Result<()> {
    if handles.is_empty() {
        return Ok(());
    }
    runtime::spawn_blocking(move || {
        for (file, path) in handles {
            file.sync_data().map_err(|e| {
                io::Error::new(e.kind(), format!("fdatasync {}: {e}", path.display()))
            })?;
        }
        Ok(())
    })
    .await
}
