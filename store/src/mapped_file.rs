//! A fixed-size file mapped into memory (ConsumeQueue and IndexFile files, as in RocketMQ).
//!
//! Small random writes (20-byte entries, hash slots) go to the page cache through the mapping;
//! durability comes from `sync`, an fdatasync run on the reactor's helper thread (Linux writes
//! back dirty pages of a shared mapping on fdatasync of the file).
//!
//! The mapping is only ever touched by the owning reactor; nothing else writes these files
//! while the store runs (the store directory is this process's alone).
//!
//! Writes go through [`MappedFile::bytes_mut_range`], which names the bytes written: on the real
//! file system that is the mapping's slice and nothing else; on the simulated disk (test builds)
//! the file is a heap buffer whose written 4 KiB pages are tracked, to be handed to the
//! simulated disk as unsynced writes the way the kernel writes back dirty pages (see
//! `storage`).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::MmapMut;

use crate::runtime;
use crate::storage::Storage;

/// How much of a new file is mapped without readahead: its head, where a queue that only ever
/// holds a few entries writes (3276 ConsumeQueue entries). Past it, a queue that keeps growing
/// is written and read in order with the kernel's readahead as usual.
const NO_READAHEAD_HEAD_BYTES: usize = 64 << 10;

/// Space is allocated ahead of the writes in steps of this many bytes (`reserve`): a write
/// through the map into a hole of a full file system kills the process with SIGBUS, an
/// `fallocate` that finds no space is an error the store can answer with.
pub const ALLOCATE_STEP_BYTES: u64 = 1 << 20;

pub struct MappedFile {
    path: PathBuf,
    backing: Backing,
    /// Bytes from the start known to have disk blocks (`reserve`): writes stay below it.
    allocated_bytes: u64,
    /// Directories whose entries this open created (the file's own, and any directory
    /// `create_dir_all` made for it), deepest first: fsynced with the file's first sync, so a
    /// synced file cannot lose its name at a power loss. Emptied when a sync handle takes them.
    unsynced_dirs: Vec<PathBuf>,
}

enum Backing {
    Mmap {
        file: Arc<File>,
        map: MmapMut,
    },
    #[cfg(test)]
    Sim(sim::SimMapped),
}

impl MappedFile {
    /// Opens (creating if needed) `path` at exactly `size_bytes`. A new file reads as zeros.
    /// `no_readahead_when_new`: a file created here is mapped without readahead (below).
    pub fn open(
        storage: &Storage,
        path: &Path,
        size_bytes: u64,
        no_readahead_when_new: bool,
    ) -> io::Result<MappedFile> {
        match storage {
            Storage::Real => Self::open_real(path, size_bytes, no_readahead_when_new),
            #[cfg(test)]
            Storage::Sim(disk) => {
                let (mapped, created) = sim::SimMapped::open(disk, path, size_bytes)?;
                Ok(MappedFile {
                    path: path.to_owned(),
                    backing: Backing::Sim(mapped),
                    // The simulated disk has no holes to fault on (ENOSPC is injected into its
                    // writes instead).
                    allocated_bytes: size_bytes,
                    // Simulated directories have no entries of their own: the file's name is
                    // the only one to make durable.
                    unsynced_dirs: if created {
                        path.parent().map(Path::to_owned).into_iter().collect()
                    } else {
                        Vec::new()
                    },
                })
            }
        }
    }

    fn open_real(
        path: &Path,
        size_bytes: u64,
        no_readahead_when_new: bool,
    ) -> io::Result<MappedFile> {
        let annotate = |what: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
        };
        // The file's directory, and each directory created for it up to the first that
        // existed (a created directory's name is an entry of its parent).
        let mut unsynced_dirs = Vec::new();
        if let Some(dir) = path.parent() {
            let mut d = dir;
            while !d.as_os_str().is_empty() {
                let existed = d.exists();
                unsynced_dirs.push(d.to_owned());
                match d.parent() {
                    Some(parent) if !existed => d = parent,
                    _ => break,
                }
            }
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
        if !created {
            unsynced_dirs.clear();
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
            backing: Backing::Mmap {
                file: Arc::new(file),
                map,
            },
            // Unknown for a file that existed (allocating an allocated range again is cheap).
            allocated_bytes: 0,
            unsynced_dirs,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    #[inline]
    pub fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Mmap { map, .. } => map,
            #[cfg(test)]
            Backing::Sim(sim) => sim.bytes(),
        }
    }

    /// Makes sure the file has disk blocks for its first `end` bytes, allocating up to the
    /// next `ALLOCATE_STEP_BYTES` boundary (at most the file's size). ENOSPC and friends come
    /// back as errors naming the file; writes below `end` then cannot fault.
    pub fn reserve(&mut self, end: usize) -> io::Result<()> {
        let end = end as u64;
        if end <= self.allocated_bytes {
            return Ok(());
        }
        let (file, map) = match &self.backing {
            Backing::Mmap { file, map } => (file, map),
            #[cfg(test)]
            Backing::Sim(_) => return Ok(()),
        };
        let size = map.len() as u64;
        assert!(
            end <= size,
            "reserve past the end of {}",
            self.path.display()
        );
        let target = end
            .div_ceil(ALLOCATE_STEP_BYTES)
            .saturating_mul(ALLOCATE_STEP_BYTES)
            .min(size);
        use std::os::fd::AsRawFd;
        let from = self.allocated_bytes;
        // SAFETY: a valid descriptor; the range lies within the file's size.
        let rc = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                0,
                from as libc::off_t,
                (target - from) as libc::off_t,
            )
        };
        if rc != 0 {
            let error = io::Error::last_os_error();
            // A file system without fallocate (rare) keeps the old behaviour: nothing to
            // reserve with.
            if error.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(io::Error::new(
                    error.kind(),
                    format!(
                        "allocating {}..{target} of {}: {error}",
                        from,
                        self.path.display()
                    ),
                ));
            }
        }
        self.allocated_bytes = target;
        Ok(())
    }

    /// The `len` bytes at `offset`, to be written (the only way to write the file); they must
    /// have been `reserve`d.
    #[inline]
    pub fn bytes_mut_range(&mut self, offset: usize, len: usize) -> &mut [u8] {
        debug_assert!(
            (offset + len) as u64 <= self.allocated_bytes,
            "write to {} at {offset}+{len} past its reserved {} bytes",
            self.path.display(),
            self.allocated_bytes
        );
        match &mut self.backing {
            Backing::Mmap { map, .. } => &mut map[offset..offset + len],
            #[cfg(test)]
            Backing::Sim(sim) => sim.bytes_mut_range(offset, len),
        }
    }

    /// A handle that syncs the file later without borrowing it. Takes the directories still to
    /// be synced (a failed sync leaves the store refusing checkpoints until a restart, so they
    /// need not be given back). On the simulated disk, the dirty pages are written back now.
    pub fn sync_handle(&mut self) -> SyncHandle {
        let dirs = std::mem::take(&mut self.unsynced_dirs);
        match &mut self.backing {
            Backing::Mmap { file, .. } => SyncHandle::Real {
                file: file.clone(),
                path: self.path.clone(),
                dirs,
            },
            #[cfg(test)]
            Backing::Sim(sim) => SyncHandle::Sim(sim.sync_handle(dirs)),
        }
    }

    /// After a crash: what this file holds may be the dead process's unsynced writes (still in
    /// the page cache, or, on the simulated disk, pending), and its name and those of the
    /// `dir_levels` directories above it may be unsynced too. The next sync covers them all.
    pub fn assume_unsynced(&mut self, dir_levels: usize) {
        self.unsynced_dirs = self
            .path
            .ancestors()
            .skip(1)
            .take(dir_levels)
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_owned)
            .collect();
    }

    /// Deletes the file now (the mapping goes with `self`). For recovery, before serving;
    /// retention uses [`MappedFile::unmap`] and deletes off the reactor.
    pub fn remove(self, storage: &Storage) -> io::Result<()> {
        storage.remove_file(&self.unmap())
    }

    /// Drops the mapping and returns the file's path, for the caller to delete off the reactor
    /// (unlinking can block).
    pub fn unmap(self) -> PathBuf {
        self.path.clone()
    }
}

/// What syncing a [`MappedFile`] later takes (see [`MappedFile::sync_handle`]).
pub enum SyncHandle {
    Real {
        file: Arc<File>,
        path: PathBuf,
        /// Directories to fsync after the file (its name, new directories' names).
        dirs: Vec<PathBuf>,
    },
    #[cfg(test)]
    Sim(sim::SimSync),
}

/// fdatasyncs files collected with `sync_handle` (and fsyncs the directories of new ones), off
/// the reactor thread.
pub async fn sync_all(handles: Vec<SyncHandle>) -> io::Result<()> {
    let mut real = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle {
            SyncHandle::Real { file, path, dirs } => real.push((file, path, dirs)),
            #[cfg(test)]
            SyncHandle::Sim(sim) => sim.sync()?,
        }
    }
    if real.is_empty() {
        return Ok(());
    }
    runtime::spawn_blocking(move || {
        let mut dirs_synced = std::collections::HashSet::new();
        for (file, path, dirs) in real {
            file.sync_data().map_err(|e| {
                io::Error::new(e.kind(), format!("fdatasync {}: {e}", path.display()))
            })?;
            for dir in dirs {
                if dirs_synced.contains(&dir) {
                    continue;
                }
                File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| {
                    io::Error::new(e.kind(), format!("fsync {}: {e}", dir.display()))
                })?;
                dirs_synced.insert(dir);
            }
        }
        Ok(())
    })
    .await
}

/// The simulated twin of the mapping (test builds): the process's view in a heap buffer, and
/// the kernel's write-back of its dirty pages to the simulated disk as unsynced writes.
#[cfg(test)]
mod sim {
    use std::collections::BTreeSet;
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use crate::storage::sim::{SimDisk, SimFile};

    /// The page cache's unit of write-back.
    pub const PAGE_BYTES: usize = 4096;
    /// Chance, per write to a clean page, that the kernel writes the file's dirty pages back
    /// first (per mille): earlier versions of a page then reach the disk between syncs.
    const BACKGROUND_WRITEBACK_PER_MILLE: u32 = 60;

    pub struct SimMapped {
        disk: Arc<SimDisk>,
        file: Arc<SimFile>,
        buf: Vec<u8>,
        /// Pages written since they were last handed to the disk.
        dirty: BTreeSet<usize>,
        /// A write-back that failed (EIO), reported by the next sync as the kernel does.
        writeback_error: Option<String>,
    }

    impl SimMapped {
        /// The file and whether it was created.
        pub fn open(
            disk: &Arc<SimDisk>,
            path: &Path,
            size_bytes: u64,
        ) -> io::Result<(SimMapped, bool)> {
            let file = disk.open(path, false)?;
            let (buf, created) = file.map_in(size_bytes)?;
            let mapped = SimMapped {
                disk: disk.clone(),
                file: Arc::new(file),
                buf,
                dirty: BTreeSet::new(),
                writeback_error: None,
            };
            Ok((mapped, created))
        }

        pub fn bytes(&self) -> &[u8] {
            &self.buf
        }

        pub fn bytes_mut_range(&mut self, offset: usize, len: usize) -> &mut [u8] {
            let pages = offset / PAGE_BYTES..=(offset + len).saturating_sub(1) / PAGE_BYTES;
            if pages.clone().any(|p| !self.dirty.contains(&p))
                && self.disk.chance_per_mille(BACKGROUND_WRITEBACK_PER_MILLE)
            {
                self.write_back();
            }
            self.dirty.extend(pages);
            &mut self.buf[offset..offset + len]
        }

        /// Hands every dirty page to the disk as an unsynced write of its current bytes (each
        /// page its own write: at a crash each is kept, lost or torn on its own).
        fn write_back(&mut self) {
            for page in std::mem::take(&mut self.dirty) {
                let from = page * PAGE_BYTES;
                let to = (from + PAGE_BYTES).min(self.buf.len());
                if let Err(e) = self.file.write_at(&self.buf[from..to], from as u64) {
                    self.writeback_error.get_or_insert(e.to_string());
                }
            }
        }

        pub fn sync_handle(&mut self, dirs: Vec<PathBuf>) -> SimSync {
            self.write_back();
            SimSync {
                disk: self.disk.clone(),
                file: self.file.clone(),
                error: self.writeback_error.take(),
                dirs,
            }
        }
    }

    impl Drop for SimMapped {
        /// The process is gone, not the page cache: what it wrote reaches the disk as unsynced
        /// writes (a clean restart reads it back; a crash keeps, loses or tears it).
        fn drop(&mut self) {
            self.write_back();
        }
    }

    pub struct SimSync {
        disk: Arc<SimDisk>,
        file: Arc<SimFile>,
        error: Option<String>,
        dirs: Vec<PathBuf>,
    }

    impl SimSync {
        pub fn sync(self) -> io::Result<()> {
            if let Some(e) = self.error {
                // fsyncgate: the failed write-back is reported once, its pages settled.
                let _ = self.file.fdatasync();
                return Err(io::Error::other(format!("write-back failed: {e}")));
            }
            self.file.fdatasync()?;
            for dir in &self.dirs {
                self.disk.sync_dir(dir)?;
            }
            Ok(())
        }
    }
}
