//! The storage seam: everything the CommitLog and the checkpoint do to files goes through
//! [`Storage`] (the file system: open, list, remove, directory sync, whole-file read and
//! synced write) and [`StorageFile`] (one open file: `read_at`, `write_at`, `fdatasync`,
//! `size_bytes`, `allocate`).
//!
//! Two implementations: the real one, which is exactly what the store did before the seam
//! (`runtime::DirectFile`, O_DIRECT through io_uring, and `std::fs` on the helper thread), and,
//! in test builds, a deterministic simulated disk ([`sim`]) that tears, loses and reorders
//! unsynced writes at a crash and injects EIO / ENOSPC, all from a seed.
//!
//! Design choices:
//! - **An enum, not a trait object or a generic parameter.** The set of implementations is
//!   closed (real, simulated), and the simulated one is compiled only under `cfg(test)`: in the
//!   broker and the bench, `Storage` and `StorageFile` are one-variant enums and every call is
//!   the `DirectFile` call it was before, inlined, so the hot append/flush path cannot be
//!   slower. A trait would need boxed futures behind `Rc<dyn>` (an allocation per write) or a
//!   type parameter on `Segment`, `CommitLog`, `FlushPlan`, `Slice` and `MessageStore`, which
//!   would reach the network layer (`Slice` is sent by it).
//! - **How the store gets one**: `StoreConfig::storage` (default [`Storage::Real`]), copied
//!   into `CommitLogSettings::storage`; `Checkpoint::load`/`store` take it. Production code
//!   never sets it.
//! - **The ConsumeQueue and IndexFile files** are memory-mapped (`mapped_file.rs`) and reach
//!   the seam through `MappedFile::open(&Storage, ..)`. Real storage is the mmap as before. On
//!   the simulated disk a `MappedFile` is a heap buffer (the process's view, read from the
//!   disk's view at open) plus the set of 4 KiB pages written through `bytes_mut_range`; the
//!   kernel's write-back is modelled by handing each dirty page to the disk as one unsynced
//!   write of its current bytes: at each sync (then fdatasync makes them durable), when the
//!   process goes away (the `MappedFile` is dropped: the page cache outlives the process), and
//!   at random (on a write to a clean page, with a small chance, all dirty pages first: an
//!   earlier version of a page may reach the disk and a later one not). At a crash each such
//!   page write is kept, lost or torn (at any byte or by 512-byte sectors) like any other, so
//!   a page written but not synced may or may not survive, possibly torn, and pages survive
//!   in any combination. Mapping a file neither reads (no read EIO) nor allocates (no ENOSPC):
//!   write-back failures surface at the next sync, as on Linux. A newly created file's name
//!   is made durable by syncing its directory with its first sync. Not modelled: a torn write
//!   inside a page that is then written again before any write-back (the buffer holds only
//!   the newest bytes), SIGBUS on reading a failed page, and the mmap's own coherence with
//!   `read(2)` (nothing reads these files any other way).
//! - **What stays outside**: the store's lock and abort marker (a simulated crash is a crash
//!   of the process for them).
//! - **sendfile**: `Segment::reader`, the buffered handle the network layer sends on-disk ranges
//!   from, is a real file for real storage; a simulated segment has no such file (its handle is
//!   `/dev/null`): the simulated disk is for store tests, which read through `StorageFile`.
//!   Likewise retention reads a segment's age from the real file's mtime: simulated segments
//!   never expire by age (disk-usage forcing still applies).

use std::io;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use crate::runtime::{self, DirectFile, IoBuffer};

#[cfg(test)]
pub mod sim;

/// Where a store's CommitLog segments and checkpoint live.
#[derive(Clone, Default)]
pub enum Storage {
    /// The file system: O_DIRECT segments through io_uring (`runtime::DirectFile`).
    #[default]
    Real,
    /// A deterministic simulated disk (test builds only).
    #[cfg(test)]
    Sim(Arc<sim::SimDisk>),
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storage::Real => write!(f, "Real"),
            #[cfg(test)]
            Storage::Sim(disk) => write!(f, "Sim(seed {})", disk.seed()),
        }
    }
}

fn annotate(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

impl Storage {
    /// Opens `path` for O_DIRECT reads and writes, creating it if missing; with `dsync`, each
    /// completed write is durable (O_DSYNC).
    pub async fn open(&self, path: &Path, dsync: bool) -> io::Result<StorageFile> {
        match self {
            Storage::Real => Ok(StorageFile::Direct(if dsync {
                DirectFile::open_dsync(path).await?
            } else {
                DirectFile::open(path).await?
            })),
            #[cfg(test)]
            Storage::Sim(disk) => Ok(StorageFile::Sim(disk.open(path, dsync)?)),
        }
    }

    /// A buffered, `Send` read handle on `path` (for sendfile by the network layer).
    pub fn reader(&self, path: &Path) -> io::Result<Arc<std::fs::File>> {
        match self {
            Storage::Real => std::fs::File::open(path)
                .map(Arc::new)
                .map_err(|e| annotate("opening", path, e)),
            #[cfg(test)]
            Storage::Sim(_) => std::fs::File::open("/dev/null")
                .map(Arc::new)
                .map_err(|e| annotate("opening", path, e)),
        }
    }

    pub fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        match self {
            Storage::Real => std::fs::create_dir_all(dir).map_err(|e| annotate("creating", dir, e)),
            #[cfg(test)]
            Storage::Sim(_) => Ok(()),
        }
    }

    /// Whether `dir` exists (on the simulated disk: whether any file is under it).
    pub fn dir_exists(&self, dir: &Path) -> bool {
        match self {
            Storage::Real => dir.exists(),
            #[cfg(test)]
            Storage::Sim(disk) => !disk.list_dir(dir).is_empty(),
        }
    }

    /// The names of the files (and directories) in `dir`.
    pub fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        match self {
            Storage::Real => {
                let mut names = Vec::new();
                let entries = std::fs::read_dir(dir).map_err(|e| annotate("listing", dir, e))?;
                for entry in entries {
                    let entry = entry.map_err(|e| annotate("listing", dir, e))?;
                    if let Some(name) = entry.file_name().to_str() {
                        names.push(name.to_owned());
                    }
                }
                Ok(names)
            }
            #[cfg(test)]
            Storage::Sim(disk) => Ok(disk.list_dir(dir)),
        }
    }

    pub fn remove_file(&self, path: &Path) -> io::Result<()> {
        match self {
            Storage::Real => std::fs::remove_file(path).map_err(|e| annotate("removing", path, e)),
            #[cfg(test)]
            Storage::Sim(disk) => disk.remove_file(path),
        }
    }

    /// fsyncs a directory so a created or removed file name is durable.
    pub async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        match self {
            Storage::Real => {
                let dir = dir.to_owned();
                runtime::spawn_blocking(move || {
                    std::fs::File::open(&dir)
                        .and_then(|f| f.sync_all())
                        .map_err(|e| annotate("syncing directory", &dir, e))
                })
                .await
            }
            #[cfg(test)]
            Storage::Sim(disk) => disk.sync_dir(dir),
        }
    }

    /// A whole (small) file's bytes; `None` when it does not exist.
    pub fn read_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match self {
            Storage::Real => match std::fs::read(path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(annotate("reading", path, e)),
            },
            #[cfg(test)]
            Storage::Sim(disk) => disk.read_file(path),
        }
    }

    /// Writes `bytes` at the start of `path` (created if missing, not truncated) and
    /// fdatasyncs it, off the reactor thread.
    pub async fn write_file_synced(&self, path: &Path, bytes: Vec<u8>) -> io::Result<()> {
        match self {
            Storage::Real => {
                let path = path.to_owned();
                runtime::spawn_blocking(move || {
                    use std::io::Write;
                    let mut file = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&path)?;
                    file.write_all(&bytes)?;
                    file.sync_data()
                })
                .await
            }
            #[cfg(test)]
            Storage::Sim(disk) => disk.write_file_synced(path, &bytes),
        }
    }
}

/// One open file of a [`Storage`]. Offsets and lengths of writes are 4 KiB aligned (O_DIRECT).
pub enum StorageFile {
    Direct(DirectFile),
    #[cfg(test)]
    Sim(sim::SimFile),
}

impl StorageFile {
    pub fn path(&self) -> &Path {
        match self {
            StorageFile::Direct(file) => file.path(),
            #[cfg(test)]
            StorageFile::Sim(file) => file.path(),
        }
    }

    /// Writes all of `buffer` at `pos`.
    #[inline]
    pub async fn write_at(&self, buffer: IoBuffer, pos: u64) -> io::Result<()> {
        match self {
            StorageFile::Direct(file) => file.write_at(buffer, pos).await,
            #[cfg(test)]
            StorageFile::Sim(file) => {
                file.in_flight().await;
                file.write_at(buffer.as_bytes(), pos)
            }
        }
    }

    /// Like `write_at`, keeping the buffer shared (no copy).
    #[inline]
    pub async fn write_shared_at(&self, buffer: Rc<IoBuffer>, pos: u64) -> io::Result<()> {
        match self {
            StorageFile::Direct(file) => file.write_shared_at(buffer, pos).await,
            #[cfg(test)]
            StorageFile::Sim(file) => {
                file.in_flight().await;
                file.write_at(buffer.as_bytes(), pos)
            }
        }
    }

    /// Reads up to `len` bytes at `pos`; fewer at the end of the file.
    pub async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        match self {
            StorageFile::Direct(file) => file.read_at(pos, len).await,
            #[cfg(test)]
            StorageFile::Sim(file) => file.read_at(pos, len),
        }
    }

    /// Makes completed writes durable (nothing to do when opened with `dsync`).
    #[inline]
    pub async fn fdatasync(&self) -> io::Result<()> {
        match self {
            StorageFile::Direct(file) => file.fdatasync().await,
            #[cfg(test)]
            StorageFile::Sim(file) => file.fdatasync(),
        }
    }

    pub async fn size_bytes(&self) -> io::Result<u64> {
        match self {
            StorageFile::Direct(file) => file.size_bytes().await,
            #[cfg(test)]
            StorageFile::Sim(file) => file.size_bytes(),
        }
    }

    /// Allocates the file's blocks up to `size_bytes` (size extended).
    pub async fn allocate(&self, size_bytes: u64) -> io::Result<()> {
        match self {
            StorageFile::Direct(file) => file.allocate(size_bytes).await,
            #[cfg(test)]
            StorageFile::Sim(file) => file.allocate(size_bytes),
        }
    }
}
