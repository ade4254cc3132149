//! The host as files: `/sys` and `/proc` read (and written) under a root directory, `/` on a
//! real host and a fake tree in tests. Anything missing reads as `None`, never an error: in
//! containers and VMs much of `/sys` is absent, and a check then says "unknown".

use std::io;
use std::path::{Path, PathBuf};

pub struct Host {
    pub root: PathBuf,
}

/// A mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub mount_point: String,
    /// `major:minor` of the mounted device.
    pub device: String,
    pub fs_type: String,
    /// Per-mount options and the file system's own, in that order.
    pub options: Vec<String>,
}

impl Host {
    pub fn new(root: impl Into<PathBuf>) -> Host {
        Host { root: root.into() }
    }

    /// Whether this is the real host (`/`) rather than a fake tree.
    pub fn is_real(&self) -> bool {
        self.root == Path::new("/")
    }

    pub fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    /// The file's content, trimmed; `None` when it cannot be read.
    pub fn read(&self, absolute: &str) -> Option<String> {
        std::fs::read_to_string(self.path(absolute))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    pub fn exists(&self, absolute: &str) -> bool {
        self.path(absolute).exists()
    }

    /// The names in a directory, sorted; empty when it cannot be read.
    pub fn list(&self, absolute: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(absolute))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    pub fn write(&self, absolute: &str, value: &str) -> io::Result<()> {
        std::fs::write(self.path(absolute), value)
            .map_err(|e| io::Error::new(e.kind(), format!("writing {value:?} to {absolute}: {e}")))
    }

    /// The mount holding `dir` (the longest mount point that contains it).
    pub fn mount_of(&self, dir: &Path) -> Option<Mount> {
        let info = self.read("/proc/self/mountinfo")?;
        info.lines()
            .filter_map(parse_mountinfo_line)
            .filter(|m| contains(&m.mount_point, dir))
            .max_by_key(|m| m.mount_point.len())
    }

    /// The whole disks under block device `major:minor`: itself, the disk of a partition, the
    /// disks under a device-mapper (or md) device's `slaves/`, recursively.
    pub fn disks_of(&self, device: &str) -> Vec<String> {
        let Some(name) = self
            .read(&format!("/sys/dev/block/{device}/uevent"))
            .and_then(|uevent| uevent_value(&uevent, "DEVNAME"))
        else {
            return Vec::new();
        };
        let mut disks = Vec::new();
        self.resolve_disks(&name, 0, &mut disks);
        disks.dedup();
        disks
    }

    fn resolve_disks(&self, name: &str, depth: usize, disks: &mut Vec<String>) {
        // Stacks deeper than this are a loop in a broken tree, not a real device.
        if depth > 8 {
            return;
        }
        if self.exists(&format!("/sys/block/{name}")) {
            let slaves = self.list(&format!("/sys/block/{name}/slaves"));
            if slaves.is_empty() {
                disks.push(name.to_owned());
            }
            for slave in slaves {
                self.resolve_disks(&slave, depth + 1, disks);
            }
            return;
        }
        // A partition: its disk is the /sys/block entry that holds it.
        if let Some(disk) = self
            .list("/sys/block")
            .into_iter()
            .find(|disk| self.exists(&format!("/sys/block/{disk}/{name}")))
        {
            self.resolve_disks(&disk, depth + 1, disks);
        }
    }
}

fn uevent_value(uevent: &str, key: &str) -> Option<String> {
    uevent
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
}

/// Whether `dir` is `mount_point` or below it (whole path components).
fn contains(mount_point: &str, dir: &Path) -> bool {
    dir.starts_with(Path::new(mount_point))
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
pub fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let (before, after) = line.split_once(" - ")?;
    let fields: Vec<&str> = before.split(' ').collect();
    let tail: Vec<&str> = after.split(' ').collect();
    let mut options: Vec<String> = fields.get(5)?.split(',').map(str::to_owned).collect();
    for option in tail.get(2).unwrap_or(&"").split(',') {
        if !option.is_empty() && !options.iter().any(|o| o == option) {
            options.push(option.to_owned());
        }
    }
    Some(Mount {
        mount_point: unescape(fields.get(4)?),
        device: fields.get(2)?.to_string(),
        fs_type: tail.first()?.to_string(),
        options,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal.and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A CPU list as in `/sys/devices/system/cpu/online` (`0-3,8,10-11`); `None` if malformed.
pub fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.trim().parse::<usize>().ok()?..=b.trim().parse().ok()?),
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    Some(cpus)
}

/// The inverse of [`parse_cpu_list`] (sorted, ranges folded).
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            sorted[i].to_string()
        } else {
            format!("{}-{}", sorted[i], sorted[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// The selected entry of a sysfs choice file (`[mq-deadline] none` gives `mq-deadline`).
pub fn selected(choices: &str) -> Option<String> {
    let start = choices.find('[')?;
    let end = choices[start..].find(']')? + start;
    Some(choices[start + 1..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes_and_optional_fields() {
        let mount = parse_mountinfo_line(
            "36 35 8:2 / /mnt/my\\040store rw,noatime shared:1 master:2 - xfs /dev/sda2 rw,discard",
        )
        .unwrap();
        assert_eq!(mount.mount_point, "/mnt/my store");
        assert_eq!(mount.device, "8:2");
        assert_eq!(mount.fs_type, "xfs");
        assert_eq!(mount.options, ["rw", "noatime", "discard"]);
        assert_eq!(parse_mountinfo_line("garbage"), None);
    }

    #[test]
    fn cpu_lists_round_trip() {
        assert_eq!(parse_cpu_list("0-2,5,7-8"), Some(vec![0, 1, 2, 5, 7, 8]));
        assert_eq!(format_cpu_list(&[8, 0, 1, 2, 5, 7]), "0-2,5,7-8");
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(
            selected("mq-deadline [none] kyber").as_deref(),
            Some("none")
        );
        assert_eq!(selected("none"), None);
    }
}
