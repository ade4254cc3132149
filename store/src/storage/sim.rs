//! A deterministic simulated disk for crash tests: in-memory files, every decision drawn from
//! one seeded PRNG (splitmix64), so a seed replays exactly (given the same sequence of calls).
//!
//! What it models:
//! - **Per file**: what reads see (`view`), what is durable (`durable`), and the writes not yet
//!   synced (`pending`, in issue order). `fdatasync` makes the file's pending writes durable.
//!   A write through a handle opened with `dsync` (O_DSYNC) is durable when it returns.
//! - **A crash** ([`SimDisk::crash`]): each pending write is independently kept, dropped or
//!   torn, so writes land in any order (a later write kept, an earlier one lost: reordering);
//!   overlapping writes that both land are applied in issue order (a device does not apply a
//!   completed write's data over a newer completed write of the same block). A torn write
//!   keeps either a prefix cut at any byte (finer than the 512-byte sector atomicity devices
//!   give, so it covers every sector-granular outcome of an in-order write) or a random subset
//!   of its 512-byte sectors (a device writing a request's sectors in any order). After a crash
//!   every file reads as its durable bytes, and handles opened before it fail with EIO (the old
//!   process is gone: a late write of its must not land on the new disk).
//! - **A process crash** ([`SimDisk::crash_process`], `kill -9`): nothing is lost, synced or
//!   not; only the old handles fail.
//! - **Directory entries**: creating and removing files changes the names at once, durably only
//!   at `sync_dir` of their directory; at a crash a random prefix of the unsynced name changes
//!   survives (journaling file systems commit metadata in order). A file whose name is lost is
//!   gone; a removed file whose removal is lost is back, with its durable bytes.
//! - **Sizes**: `allocate` (fallocate) is durable at once, as a simplification: it only ever
//!   extends with zeros, which read as the end of the log.
//! - **Faults**, when enabled, each drawn per call with a per-mille probability: EIO from a
//!   write (after a random prefix of it landed, unsynced), EIO from `fdatasync` (and from an
//!   O_DSYNC write's implicit sync), EIO from a read, EIO from a directory sync; ENOSPC when a
//!   write or allocation would take the files' total size past a capacity.
//! - **fsyncgate**: an `fdatasync` that fails settles the file's pending writes there and then
//!   (each kept, dropped or torn, as at a crash) and forgets them: a later `fdatasync` succeeds
//!   without making them durable, as Linux reports a writeback error once and drops the dirty
//!   state. Reads still see them until a crash (the device's cache still answers).
//!
//! - **Writes in flight**: a write through `StorageFile` spends 0 to 3 reactor turns in flight
//!   before it lands (drawn), so writes issued together complete in any order, and a crash can
//!   come while some are in flight.
//!
//! Not modelled: silent corruption of durable data (bit rot, misdirected writes), latency in
//! time (other operations complete at once), partial reads.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

const SECTOR_BYTES: usize = 512;

/// splitmix64: tiny, fast, good enough to drive a simulation, and no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance_per_mille(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && self.below(1000) < u64::from(per_mille)
    }
}

/// Fault injection settings (probabilities per call, in thousandths).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub write_eio_per_mille: u32,
    pub sync_eio_per_mille: u32,
    pub read_eio_per_mille: u32,
    /// ENOSPC past this many bytes in all files together.
    pub capacity_bytes: Option<u64>,
}

/// Counts of what the disk did (to check a test exercised what it claims to).
#[derive(Debug, Clone, Copy, Default)]
pub struct SimStats {
    pub writes: u64,
    pub syncs: u64,
    pub crashes: u64,
    pub process_crashes: u64,
    pub writes_kept: u64,
    pub writes_dropped: u64,
    pub writes_torn: u64,
    pub name_changes_lost: u64,
    pub write_eio: u64,
    pub sync_eio: u64,
    pub read_eio: u64,
    pub enospc: u64,
}

struct Write {
    pos: u64,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct Inode {
    view: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Write>,
}

enum NameChange {
    Link(PathBuf, usize),
    Unlink(PathBuf),
}

struct State {
    rng: Rng,
    faults: Faults,
    faults_on: bool,
    generation: u64,
    inodes: Vec<Inode>,
    names: BTreeMap<PathBuf, usize>,
    durable_names: BTreeMap<PathBuf, usize>,
    name_changes: Vec<NameChange>,
    stats: SimStats,
}

pub struct SimDisk {
    seed: u64,
    state: Mutex<State>,
}

fn put(target: &mut Vec<u8>, pos: u64, bytes: &[u8]) {
    let pos = pos as usize;
    if target.len() < pos + bytes.len() {
        target.resize(pos + bytes.len(), 0);
    }
    target[pos..pos + bytes.len()].copy_from_slice(bytes);
}

fn error(errno: i32, what: &str, path: &Path, pos: u64) -> io::Error {
    let kind = io::Error::from_raw_os_error(errno).kind();
    let name = if errno == libc::ENOSPC {
        "ENOSPC"
    } else {
        "EIO"
    };
    io::Error::new(
        kind,
        format!(
            "{what} {} at {pos}: simulated {name} ({})",
            path.display(),
            io::Error::from_raw_os_error(errno)
        ),
    )
}

impl State {
    /// What survives of a write that was not synced: (kept, dropped or torn) pieces.
    fn settle(&mut self, write: Write, into: &mut Vec<u8>) {
        if write.bytes.is_empty() {
            return; // what a failed write left of itself: nothing (nothing to cut below)
        }
        match self.rng.below(10) {
            0..=3 => {
                self.stats.writes_kept += 1;
                put(into, write.pos, &write.bytes);
            }
            4..=6 => self.stats.writes_dropped += 1,
            _ => {
                self.stats.writes_torn += 1;
                let len = write.bytes.len();
                if self.rng.below(2) == 0 || len <= SECTOR_BYTES {
                    let cut = self.rng.below(len as u64) as usize;
                    put(into, write.pos, &write.bytes[..cut]);
                } else {
                    for (i, sector) in write.bytes.chunks(SECTOR_BYTES).enumerate() {
                        if self.rng.below(2) == 0 {
                            put(into, write.pos + (i * SECTOR_BYTES) as u64, sector);
                        }
                    }
                }
            }
        }
    }

    fn settle_pending(&mut self, inode: usize) {
        let pending = std::mem::take(&mut self.inodes[inode].pending);
        let mut durable = std::mem::take(&mut self.inodes[inode].durable);
        for write in pending {
            self.settle(write, &mut durable);
        }
        self.inodes[inode].durable = durable;
    }

    fn used_bytes(&self) -> u64 {
        let mut inodes: Vec<usize> = self.names.values().copied().collect();
        inodes.sort_unstable();
        inodes.dedup();
        inodes
            .iter()
            .map(|&i| self.inodes[i].view.len() as u64)
            .sum()
    }

    fn check_space(&mut self, inode: usize, new_len: u64, path: &Path) -> io::Result<()> {
        let growth = new_len.saturating_sub(self.inodes[inode].view.len() as u64);
        if let (true, Some(capacity)) = (self.faults_on, self.faults.capacity_bytes) {
            if growth > 0 && self.used_bytes() + growth > capacity {
                self.stats.enospc += 1;
                return Err(error(libc::ENOSPC, "writing", path, new_len));
            }
        }
        Ok(())
    }

    fn fault(&mut self, per_mille: impl Fn(&Faults) -> u32) -> bool {
        let p = per_mille(&self.faults);
        self.faults_on && self.rng.chance_per_mille(p)
    }

    /// Removes `[pos, end)` from older pending writes: a newer durable write supersedes them.
    fn supersede(&mut self, inode: usize, pos: u64, end: u64) {
        let pending = std::mem::take(&mut self.inodes[inode].pending);
        let mut kept = Vec::with_capacity(pending.len());
        for w in pending {
            let w_end = w.pos + w.bytes.len() as u64;
            if w_end <= pos || w.pos >= end {
                kept.push(w);
                continue;
            }
            if w.pos < pos {
                kept.push(Write {
                    pos: w.pos,
                    bytes: w.bytes[..(pos - w.pos) as usize].to_vec(),
                });
            }
            if w_end > end {
                kept.push(Write {
                    pos: end,
                    bytes: w.bytes[(end - w.pos) as usize..].to_vec(),
                });
            }
        }
        self.inodes[inode].pending = kept;
    }
}

impl SimDisk {
    /// An empty disk; faults start enabled.
    pub fn new(seed: u64, faults: Faults) -> Arc<SimDisk> {
        Arc::new(SimDisk {
            seed,
            state: Mutex::new(State {
                rng: Rng::new(seed ^ 0x5EED_D15C),
                faults,
                faults_on: true,
                generation: 0,
                inodes: Vec::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                name_changes: Vec::new(),
                stats: SimStats::default(),
            }),
        })
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the seed behind a poisoned lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Turns fault injection (EIO, ENOSPC) on or off.
    pub fn set_faults(&self, on: bool) {
        self.state().faults_on = on;
    }

    pub fn stats(&self) -> SimStats {
        self.state().stats
    }

    /// Power loss: unsynced writes and name changes are kept, lost or torn (see the module
    /// docs); handles opened before it fail from now on.
    pub fn crash(&self) {
        let mut s = self.state();
        s.stats.crashes += 1;
        s.generation += 1;
        for inode in 0..s.inodes.len() {
            s.settle_pending(inode);
            let durable = s.inodes[inode].durable.clone();
            s.inodes[inode].view = durable;
        }
        let changes = std::mem::take(&mut s.name_changes);
        let survive = s.rng.below(changes.len() as u64 + 1) as usize;
        s.stats.name_changes_lost += (changes.len() - survive) as u64;
        for change in changes.into_iter().take(survive) {
            match change {
                NameChange::Link(path, inode) => {
                    s.durable_names.insert(path, inode);
                }
                NameChange::Unlink(path) => {
                    s.durable_names.remove(&path);
                }
            }
        }
        s.names = s.durable_names.clone();
    }

    /// A crash of the process only (`kill -9`), not of the machine: every completed write and
    /// name change is still there (the kernel's page cache and the device keep them, synced or
    /// not, and may still lose them at a later power loss); handles opened before it fail from
    /// now on. Writes never half-done here: each completes at once (see the module doc).
    pub fn crash_process(&self) {
        let mut s = self.state();
        s.stats.process_crashes += 1;
        s.generation += 1;
    }

    pub(crate) fn open(self: &Arc<Self>, path: &Path, dsync: bool) -> io::Result<SimFile> {
        let mut s = self.state();
        let inode = match s.names.get(path) {
            Some(&inode) => inode,
            None => {
                let inode = s.inodes.len();
                s.inodes.push(Inode::default());
                s.names.insert(path.to_owned(), inode);
                s.name_changes
                    .push(NameChange::Link(path.to_owned(), inode));
                inode
            }
        };
        Ok(SimFile {
            disk: self.clone(),
            inode,
            generation: s.generation,
            path: path.to_owned(),
            dsync,
        })
    }

    /// The names in `dir`: its files, and the directories leading to files below it
    /// (simulated directories exist only through the files under them).
    pub(super) fn list_dir(&self, dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = self
            .state()
            .names
            .keys()
            .filter_map(|p| p.strip_prefix(dir).ok()?.components().next())
            .filter_map(|c| c.as_os_str().to_str().map(str::to_owned))
            .collect();
        names.dedup();
        names
    }

    /// Draws from the disk's PRNG (for simulated events outside the disk, such as the
    /// kernel's background write-back of a mapped file's pages).
    pub(crate) fn chance_per_mille(&self, per_mille: u32) -> bool {
        self.state().rng.chance_per_mille(per_mille)
    }

    pub(super) fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        if s.names.remove(path).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("removing {}: no such file (simulated)", path.display()),
            ));
        }
        s.name_changes.push(NameChange::Unlink(path.to_owned()));
        Ok(())
    }

    pub(crate) fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        if s.fault(|f| f.sync_eio_per_mille) {
            s.stats.sync_eio += 1;
            return Err(error(libc::EIO, "syncing directory", dir, 0));
        }
        let changes = std::mem::take(&mut s.name_changes);
        for change in changes {
            match change {
                NameChange::Link(path, inode) if path.parent() == Some(dir) => {
                    s.durable_names.insert(path, inode);
                }
                NameChange::Unlink(path) if path.parent() == Some(dir) => {
                    s.durable_names.remove(&path);
                }
                other => s.name_changes.push(other),
            }
        }
        Ok(())
    }

    pub(super) fn read_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let mut s = self.state();
        let Some(&inode) = s.names.get(path) else {
            return Ok(None);
        };
        if s.fault(|f| f.read_eio_per_mille) {
            s.stats.read_eio += 1;
            return Err(error(libc::EIO, "reading", path, 0));
        }
        Ok(Some(s.inodes[inode].view.clone()))
    }

    pub(super) fn write_file_synced(self: &Arc<Self>, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let file = self.open(path, false)?;
        file.write_at(bytes, 0)?;
        file.fdatasync()
    }
}

/// An open simulated file.
pub struct SimFile {
    disk: Arc<SimDisk>,
    inode: usize,
    generation: u64,
    path: PathBuf,
    dsync: bool,
}

impl SimFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn state(&self, what: &str, pos: u64) -> io::Result<MutexGuard<'_, State>> {
        let s = self.disk.state();
        if s.generation != self.generation {
            return Err(io::Error::other(format!(
                "{what} {} at {pos}: simulated disk crashed since this handle was opened",
                self.path.display()
            )));
        }
        Ok(s)
    }

    /// A write's time in flight: 0 to 3 turns of the reactor, drawn, so writes in flight
    /// together complete in any order and a crash may find some still in flight (they never
    /// land: the handle is dead by then).
    pub async fn in_flight(&self) {
        let turns = self.disk.state().rng.below(4);
        for _ in 0..turns {
            futures_lite::future::yield_now().await;
        }
    }

    pub fn write_at(&self, bytes: &[u8], pos: u64) -> io::Result<()> {
        let mut s = self.state("writing", pos)?;
        s.stats.writes += 1;
        let end = pos + bytes.len() as u64;
        s.check_space(self.inode, end, &self.path)?;
        if s.fault(|f| f.write_eio_per_mille) {
            // Some of it may have reached the device before the error.
            s.stats.write_eio += 1;
            let cut = s.rng.below(bytes.len() as u64 + 1) as usize;
            put(&mut s.inodes[self.inode].view, pos, &bytes[..cut]);
            s.inodes[self.inode].pending.push(Write {
                pos,
                bytes: bytes[..cut].to_vec(),
            });
            return Err(error(libc::EIO, "writing", &self.path, pos));
        }
        put(&mut s.inodes[self.inode].view, pos, bytes);
        if !self.dsync {
            s.inodes[self.inode].pending.push(Write {
                pos,
                bytes: bytes.to_vec(),
            });
            return Ok(());
        }
        // O_DSYNC: durable on return, or, when its implicit sync fails, settled like any
        // unsynced write.
        s.stats.syncs += 1;
        s.supersede(self.inode, pos, end);
        if s.fault(|f| f.sync_eio_per_mille) {
            s.stats.sync_eio += 1;
            let mut durable = std::mem::take(&mut s.inodes[self.inode].durable);
            s.settle(
                Write {
                    pos,
                    bytes: bytes.to_vec(),
                },
                &mut durable,
            );
            s.inodes[self.inode].durable = durable;
            return Err(error(libc::EIO, "writing (O_DSYNC)", &self.path, pos));
        }
        put(&mut s.inodes[self.inode].durable, pos, bytes);
        Ok(())
    }

    pub fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let mut s = self.state("reading", pos)?;
        if s.fault(|f| f.read_eio_per_mille) {
            s.stats.read_eio += 1;
            return Err(error(libc::EIO, "reading", &self.path, pos));
        }
        let view = &s.inodes[self.inode].view;
        let from = (pos as usize).min(view.len());
        let to = (pos as usize + len).min(view.len());
        Ok(Bytes::copy_from_slice(&view[from..to]))
    }

    pub fn fdatasync(&self) -> io::Result<()> {
        if self.dsync {
            return Ok(());
        }
        let mut s = self.state("fdatasync", 0)?;
        s.stats.syncs += 1;
        if s.fault(|f| f.sync_eio_per_mille) {
            s.stats.sync_eio += 1;
            s.settle_pending(self.inode);
            return Err(error(libc::EIO, "fdatasync", &self.path, 0));
        }
        let pending = std::mem::take(&mut s.inodes[self.inode].pending);
        for write in pending {
            put(&mut s.inodes[self.inode].durable, write.pos, &write.bytes);
        }
        Ok(())
    }

    /// For a memory mapping of the file (`mapped_file`): sizes it to `size_bytes` (extending
    /// with zeros, durably, like `allocate`) and returns its bytes, without fault injection
    /// (a mapping reads nothing when it is made, and extending a sparse file takes no space;
    /// failures come at write-back) and without consuming the PRNG.
    pub fn map_in(&self, size_bytes: u64) -> io::Result<(Vec<u8>, bool)> {
        let mut s = self.state("mapping", 0)?;
        let inode = &mut s.inodes[self.inode];
        let created = inode.view.is_empty();
        if inode.view.len() as u64 > size_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} has {} bytes, expected {size_bytes}",
                    self.path.display(),
                    inode.view.len()
                ),
            ));
        }
        inode.view.resize(size_bytes as usize, 0);
        if (inode.durable.len() as u64) < size_bytes {
            inode.durable.resize(size_bytes as usize, 0);
        }
        Ok((inode.view.clone(), created))
    }

    pub fn size_bytes(&self) -> io::Result<u64> {
        let s = self.state("stat", 0)?;
        Ok(s.inodes[self.inode].view.len() as u64)
    }

    pub fn allocate(&self, size_bytes: u64) -> io::Result<()> {
        let mut s = self.state("allocating", size_bytes)?;
        s.check_space(self.inode, size_bytes, &self.path)?;
        let inode = &mut s.inodes[self.inode];
        if (inode.view.len() as u64) < size_bytes {
            inode.view.resize(size_bytes as usize, 0);
        }
        if (inode.durable.len() as u64) < size_bytes {
            inode.durable.resize(size_bytes as usize, 0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_are_kept_dropped_or_torn_at_a_crash_synced_ones_survive() {
        let mut outcomes = [0u32; 3];
        for seed in 0..200 {
            let disk = SimDisk::new(seed, Faults::default());
            let path = Path::new("/sim/f");
            let file = disk.open(path, false).unwrap();
            disk.sync_dir(Path::new("/sim")).unwrap();
            file.write_at(&[1u8; 4096], 0).unwrap();
            file.fdatasync().unwrap();
            file.write_at(&[2u8; 4096], 4096).unwrap();
            disk.crash();
            assert!(file.read_at(0, 1).is_err(), "a stale handle must fail");
            let file = disk.open(path, false).unwrap();
            let bytes = file.read_at(0, 8192).unwrap();
            assert_eq!(
                &bytes[..4096],
                &[1u8; 4096][..],
                "seed {seed}: synced data lost"
            );
            let tail = &bytes[4096..];
            if tail.iter().all(|b| *b == 2) && tail.len() == 4096 {
                outcomes[0] += 1;
            } else if tail.iter().all(|b| *b == 0) {
                outcomes[1] += 1;
            } else {
                outcomes[2] += 1;
            }
        }
        assert!(outcomes.iter().all(|&n| n > 10), "{outcomes:?}");
    }

    #[test]
    fn unsynced_names_may_vanish_synced_ones_stay() {
        let mut lost = 0;
        for seed in 0..100 {
            let disk = SimDisk::new(seed, Faults::default());
            let dir = Path::new("/sim");
            disk.open(&dir.join("a"), false).unwrap();
            disk.sync_dir(dir).unwrap();
            disk.open(&dir.join("b"), false).unwrap();
            disk.crash();
            let names = disk.list_dir(dir);
            assert!(names.contains(&"a".to_owned()));
            lost += usize::from(!names.contains(&"b".to_owned()));
        }
        assert!(lost > 10 && lost < 90, "{lost}");
    }

    #[test]
    fn a_failed_fdatasync_is_reported_once() {
        let disk = SimDisk::new(
            1,
            Faults {
                sync_eio_per_mille: 1000,
                ..Faults::default()
            },
        );
        let file = disk.open(Path::new("/sim/f"), false).unwrap();
        file.write_at(&[7u8; 512], 0).unwrap();
        assert!(file.fdatasync().is_err());
        disk.set_faults(false);
        // Succeeds, though what the failed sync covered may be gone.
        file.fdatasync().unwrap();
    }
}
