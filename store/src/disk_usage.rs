//! How full the store's file system is, as RocketMQ measures it.

use std::io;

/// Reports the used share of the store's file system, in percent. Called on the reactor's
/// helper thread (statvfs may block); tests replace it to simulate a full disk.
pub type DiskUsageProbe = std::sync::Arc<dyn Fn() -> io::Result<u32> + Send + Sync>;

/// Used share of the file system holding `path`, in percent. Blocking (statvfs).
pub fn disk_used_percent(path: &std::path::Path) -> io::Result<u32> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs fills the struct we own; the path is a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(used_percent(stat.f_blocks, stat.f_bfree, stat.f_bavail))
}

/// Sizes of the file system holding a path, in bytes (Java `File.getTotalSpace`,
/// `getFreeSpace`, `getUsableSpace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub usable_bytes: u64,
}

impl DiskSpace {
    /// Used share as RocketMQ reports it in runtime info (`getDiskPartitionSpaceUsedPercent`):
    /// (total − free) / total, a fraction; −1 when the size is unknown.
    pub fn used_ratio(&self) -> f64 {
        if self.total_bytes == 0 {
            return -1.0;
        }
        self.total_bytes.saturating_sub(self.free_bytes) as f64 / self.total_bytes as f64
    }
}

/// The sizes of the file system holding `path`. Blocking (statvfs).
pub fn disk_space(path: &std::path::Path) -> io::Result<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs fills the struct we own; the path is a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let block = stat.f_frsize as u64;
    Ok(DiskSpace {
        total_bytes: stat.f_blocks as u64 * block,
        free_bytes: stat.f_bfree as u64 * block,
        usable_bytes: stat.f_bavail as u64 * block,
    })
}

/// Used share of a file system from statvfs block counts, as RocketMQ (and `df`) compute it:
/// used / (used + available to us), rounded up. Blocks reserved for root count in neither, so a
/// file system with a large reserve does not look fuller than it is.
pub fn used_percent(blocks: u64, free: u64, available: u64) -> u32 {
    let used = u128::from(blocks.saturating_sub(free));
    let entire = used + u128::from(available);
    if entire == 0 {
        return 0;
    }
    (used * 100).div_ceil(entire) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_use_counts_like_rocketmq_not_the_root_reserve() {
        // 100 blocks, 30 free of which 10 reserved for root: 70 used of 90 usable -> 78 %.
        assert_eq!(used_percent(100, 30, 20), 78);
        assert_eq!(used_percent(100, 100, 100), 0);
        assert_eq!(used_percent(100, 0, 0), 100);
        assert_eq!(used_percent(0, 0, 0), 0);
        // This machine's root file system at one point: 252 G, 68 G used, 24 G available. The
        // old formula, (blocks - available) / blocks, said 90 % and refused writes.
        assert_eq!(used_percent(252, 184, 24), 74);
    }
}
