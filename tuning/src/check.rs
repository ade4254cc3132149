//! `thruster-tune check`: each item reads one property of the host and says what it is, what
//! this broker wants, why, and a verdict. An item whose source is missing says "unknown". An
//! item in the safe subset carries the file writes that tune it ([`Fix`]), which `apply` makes.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::host::{self, Host};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Tune,
    Unknown,
}

/// One file write that tunes an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fix {
    /// Absolute path on the host (under the root).
    pub path: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub name: String,
    pub current: String,
    pub recommended: String,
    pub why: String,
    pub verdict: Verdict,
    /// What `apply` writes when the verdict is "tune" (empty: not in the safe subset).
    pub fixes: Vec<Fix>,
}

/// What the checks compare the host with.
#[derive(Debug, Clone)]
pub struct Options {
    /// The broker's store directory (`storePathRootDir`).
    pub store_dir: PathBuf,
    /// The broker's `shards` (shard i runs on CPU i).
    pub shards: usize,
    /// `mappedFileSizeCommitLog`.
    pub segment_bytes: u64,
}

const UNKNOWN: &str = "unknown";
/// Free space the store should have, in segments (the active one, the next prepared one, and
/// room before retention must run).
const FREE_SEGMENTS_MIN: u64 = 4;
const NR_REQUESTS_MIN: u64 = 64;
const NR_REQUESTS_TUNED: u64 = 128;
const AIO_MAX_NR_MIN: u64 = 1_048_576;
const NOFILE_MIN: u64 = 65_536;
/// RLIMIT_MEMLOCK per shard: registered I/O buffers (`ioMemoryBytes`, 2 MiB by default) with
/// room to raise them.
const MEMLOCK_PER_SHARD_BYTES: u64 = 16 << 20;

impl Item {
    fn new(name: impl Into<String>, why: &str) -> Item {
        Item {
            name: name.into(),
            current: UNKNOWN.into(),
            recommended: String::new(),
            why: why.into(),
            verdict: Verdict::Unknown,
            fixes: Vec::new(),
        }
    }

    fn recommend(mut self, recommended: impl Into<String>) -> Item {
        self.recommended = recommended.into();
        self
    }

    /// Judges `current` (unknown when `None`); `fixes` are kept only for a "tune" verdict.
    fn judge(
        mut self,
        current: Option<String>,
        ok: impl Fn(&str) -> bool,
        fixes: Vec<Fix>,
    ) -> Item {
        if let Some(current) = current {
            self.verdict = if ok(&current) {
                Verdict::Ok
            } else {
                Verdict::Tune
            };
            self.current = current;
        }
        if self.verdict == Verdict::Tune {
            self.fixes = fixes;
        }
        self
    }
}

fn fix(path: &str, value: impl ToString) -> Vec<Fix> {
    vec![Fix {
        path: path.into(),
        value: value.to_string(),
    }]
}

fn number(value: &str) -> Option<u64> {
    value.trim().parse().ok()
}

/// Every check, in report order.
pub fn run(host: &Host, options: &Options) -> Vec<Item> {
    let dir = absolute(&options.store_dir);
    let mount = host.mount_of(&dir);
    let disks = mount
        .as_ref()
        .map(|m| host.disks_of(&m.device))
        .unwrap_or_default();
    let mut items = cpu_items(host, options, &disks);
    items.extend(block_items(
        host,
        &dir,
        mount.as_ref(),
        &disks,
        options.segment_bytes,
    ));
    items.extend(sysctl_items(host));
    items.extend(limit_items(host, options));
    items.push(clocksource(host));
    items.push(numa(host));
    items
}

fn online_cpus(host: &Host) -> Option<Vec<usize>> {
    host.read("/sys/devices/system/cpu/online")
        .and_then(|list| host::parse_cpu_list(&list))
}

fn cpu_items(host: &Host, options: &Options, disks: &[String]) -> Vec<Item> {
    vec![
        governor(host),
        boost(host),
        cores(host, options),
        irq_affinity(host, options, disks),
    ]
}

fn governor(host: &Host) -> Item {
    let cpus: Vec<String> = host
        .list("/sys/devices/system/cpu")
        .into_iter()
        .filter(|n| {
            n.strip_prefix("cpu")
                .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    let mut governors = Vec::new();
    let mut fixes = Vec::new();
    for cpu in &cpus {
        let dir = format!("/sys/devices/system/cpu/{cpu}/cpufreq");
        let Some(governor) = host.read(&format!("{dir}/scaling_governor")) else {
            continue;
        };
        let available = host
            .read(&format!("{dir}/scaling_available_governors"))
            .unwrap_or_default();
        if governor != "performance" && available.split_whitespace().any(|g| g == "performance") {
            fixes.extend(fix(&format!("{dir}/scaling_governor"), "performance"));
        }
        governors.push(governor);
    }
    governors.sort();
    governors.dedup();
    Item::new(
        "cpu.governor",
        "a power-saving governor lowers the clock between bursts; each put then pays the ramp-up",
    )
    .recommend("performance")
    .judge(
        (!governors.is_empty()).then(|| governors.join(",")),
        |g| g == "performance",
        fixes,
    )
}

fn boost(host: &Host) -> Item {
    let item = Item::new(
        "cpu.boost",
        "turbo/boost raises the clock of busy cores: a reactor per core is CPU-bound under load",
    )
    .recommend("on");
    if let Some(boost) = host.read("/sys/devices/system/cpu/cpufreq/boost") {
        let on = boost == "1";
        return item.judge(
            Some(if on { "on" } else { "off" }.into()),
            |v| v == "on",
            vec![],
        );
    }
    let no_turbo = host.read("/sys/devices/system/cpu/intel_pstate/no_turbo");
    item.judge(
        no_turbo.map(|v| if v == "0" { "on" } else { "off" }.to_owned()),
        |v| v == "on",
        vec![],
    )
}

fn cores(host: &Host, options: &Options) -> Item {
    Item::new(
        "cpu.cores_vs_shards",
        "each shard is a reactor pinned to its own core; more shards than cores share cores and \
         are not pinned",
    )
    .recommend(format!(
        "at least {} online cores ({} shards, one spare for interrupts)",
        options.shards + 1,
        options.shards
    ))
    .judge(
        online_cpus(host).map(|cpus| cpus.len().to_string()),
        |n| number(n).is_some_and(|n| n as usize >= options.shards),
        vec![],
    )
}

/// The interrupts of a device directory (`/sys/class/net/eth0/device`, `/sys/block/vda/device`):
/// its PCI MSI vectors, or for a virtio device its queues' lines in `/proc/interrupts`.
fn irqs_of_device(host: &Host, device: &str, interrupts: &str, irqs: &mut Vec<String>) {
    let msi = host.list(&format!("{device}/msi_irqs"));
    if !msi.is_empty() {
        irqs.extend(msi);
        return;
    }
    let Some(name) = std::fs::read_link(host.path(device))
        .ok()
        .and_then(|target| target.file_name().map(|n| n.to_string_lossy().into_owned()))
    else {
        return;
    };
    let prefix = format!("{name}-");
    irqs.extend(interrupt_lines(interrupts, |source| {
        source.starts_with(&prefix) && !source.ends_with("-config")
    }));
}

/// The IRQ numbers of `/proc/interrupts` lines whose source (last field) passes `wanted`.
fn interrupt_lines(interrupts: &str, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    interrupts
        .lines()
        .filter_map(|line| {
            let (irq, rest) = line.trim().split_once(':')?;
            let source = rest.split_whitespace().last()?;
            (number(irq).is_some() && wanted(source)).then(|| irq.to_owned())
        })
        .collect()
}

/// The interrupts of the NICs, of the store's disks and of every NVMe queue.
fn device_irqs(host: &Host, disks: &[String]) -> Vec<String> {
    let interrupts = host.read("/proc/interrupts").unwrap_or_default();
    let mut irqs = interrupt_lines(&interrupts, |source| source.starts_with("nvme"));
    for interface in host.list("/sys/class/net") {
        irqs_of_device(
            host,
            &format!("/sys/class/net/{interface}/device"),
            &interrupts,
            &mut irqs,
        );
    }
    for disk in disks {
        irqs_of_device(
            host,
            &format!("/sys/block/{disk}/device"),
            &interrupts,
            &mut irqs,
        );
    }
    irqs.sort_by_key(|irq| number(irq));
    irqs.dedup();
    irqs
}

fn irq_affinity(host: &Host, options: &Options, disks: &[String]) -> Item {
    let item = Item::new(
        "irq.affinity",
        "NIC and NVMe interrupts on a shard's core steal time from its reactor; with spare \
         cores they belong there",
    );
    let Some(cpus) = online_cpus(host) else {
        return item
            .recommend("interrupts off the shard cores")
            .judge(None, |_| true, vec![]);
    };
    let spare: Vec<usize> = cpus
        .iter()
        .copied()
        .filter(|&c| c >= options.shards)
        .collect();
    let irqs = device_irqs(host, disks);
    let affinities: Vec<(String, Option<Vec<usize>>)> = irqs
        .iter()
        .map(|irq| {
            let list = host.read(&format!("/proc/irq/{irq}/smp_affinity_list"));
            (irq.clone(), list.and_then(|l| host::parse_cpu_list(&l)))
        })
        .filter(|(_, cpus)| cpus.is_some())
        .collect();
    let current = (!affinities.is_empty()).then(|| {
        affinities
            .iter()
            .map(|(irq, cpus)| {
                format!(
                    "{irq}:{}",
                    host::format_cpu_list(cpus.as_deref().unwrap_or(&[]))
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    });
    if spare.is_empty() {
        return item
            .recommend("no spare core: interrupts share the shard cores")
            .judge(current, |_| true, vec![]);
    }
    let spare_list = host::format_cpu_list(&spare);
    let misplaced: Vec<&String> = affinities
        .iter()
        .filter(|(_, cpus)| {
            cpus.as_ref()
                .is_some_and(|c| c.iter().any(|c| !spare.contains(c)))
        })
        .map(|(irq, _)| irq)
        .collect();
    let fixes = misplaced
        .iter()
        .flat_map(|irq| fix(&format!("/proc/irq/{irq}/smp_affinity_list"), &spare_list))
        .collect();
    item.recommend(format!("every device interrupt on CPUs {spare_list}"))
        .judge(current, |_| misplaced.is_empty(), fixes)
}

fn block_items(
    host: &Host,
    dir: &Path,
    mount: Option<&host::Mount>,
    disks: &[String],
    segment_bytes: u64,
) -> Vec<Item> {
    let mut items = Vec::new();
    if disks.is_empty() {
        items.push(
            Item::new(
                "block.device",
                "the store's block device could not be resolved (no /sys entry: a container, \
                 an overlay or a network file system), so its queue is not checked",
            )
            .recommend("the store on a local SSD or NVMe device")
            .judge(None, |_| true, vec![]),
        );
    }
    for disk in disks {
        items.extend(disk_items(host, disk));
    }
    items.push(fs_type(mount));
    items.push(mount_options(mount));
    items.push(free_space(dir, segment_bytes));
    items.push(
        Item::new(
            "mm.transparent_hugepage",
            "with THP \"always\" the kernel compacts memory on faults: multi-millisecond stalls \
             in a reactor",
        )
        .recommend("madvise or never")
        .judge(
            host.read("/sys/kernel/mm/transparent_hugepage/enabled")
                .and_then(|v| host::selected(&v)),
            |v| v == "madvise" || v == "never",
            vec![],
        ),
    );
    items
}

fn absolute(dir: &Path) -> PathBuf {
    // The nearest existing ancestor, resolved (symlinks to another disk matter); the rest as
    // given.
    let mut existing = dir.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(|n| n.to_owned()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut resolved = std::fs::canonicalize(&existing)
        .or_else(|_| std::env::current_dir().map(|cwd| cwd.join(&existing)))
        .unwrap_or(existing);
    resolved.extend(rest.iter().rev());
    resolved
}

fn disk_items(host: &Host, disk: &str) -> Vec<Item> {
    let queue = format!("/sys/block/{disk}/queue");
    let scheduler_path = format!("{queue}/scheduler");
    let schedulers = host.read(&scheduler_path);
    let none_available = schedulers.as_deref().is_some_and(|s| {
        s.split_whitespace()
            .any(|c| c.trim_matches(['[', ']']) == "none")
    });
    vec![
        Item::new(
            format!("block.{disk}.scheduler"),
            "an SSD reorders better than the kernel; a scheduler adds CPU and latency per request",
        )
        .recommend("none")
        .judge(
            schedulers
                .as_deref()
                .map(|s| host::selected(s).unwrap_or_else(|| s.to_owned())),
            |s| s == "none",
            if none_available {
                fix(&scheduler_path, "none")
            } else {
                vec![]
            },
        ),
        Item::new(
            format!("block.{disk}.nr_requests"),
            "the store keeps up to 32 chunk writes in flight per shard; a shorter request queue \
             makes them wait in the kernel",
        )
        .recommend(format!("at least {NR_REQUESTS_MIN}"))
        .judge(
            host.read(&format!("{queue}/nr_requests")),
            |n| number(n).is_some_and(|n| n >= NR_REQUESTS_MIN),
            fix(&format!("{queue}/nr_requests"), NR_REQUESTS_TUNED),
        ),
        Item::new(
            format!("block.{disk}.write_cache"),
            "\"write through\" tells the kernel not to send cache flushes: fdatasync is then \
             durable only if the drive has power-loss protection",
        )
        .recommend("write back (or write through on a drive with power-loss protection)")
        .judge(
            host.read(&format!("{queue}/write_cache")),
            |v| v == "write back",
            vec![],
        ),
        Item::new(
            format!("block.{disk}.read_ahead_kb"),
            "catch-up consumers read the CommitLog sequentially: too little read-ahead costs \
             IOPS, too much evicts hot pages",
        )
        .recommend("16 to 512 (128)")
        .judge(
            host.read(&format!("{queue}/read_ahead_kb")),
            |v| number(v).is_some_and(|kb| (16..=512).contains(&kb)),
            vec![],
        ),
        Item::new(
            format!("block.{disk}.rotational"),
            "a rotational disk turns each SYNC_FLUSH group commit into milliseconds of seek",
        )
        .recommend("0 (SSD/NVMe)")
        .judge(
            host.read(&format!("{queue}/rotational")),
            |v| v == "0",
            vec![],
        ),
    ]
}

fn fs_type(mount: Option<&host::Mount>) -> Item {
    Item::new(
        "fs.type",
        "the store relies on O_DIRECT, fallocate and cheap fdatasync into written blocks: ext4 \
         and XFS are what it is measured on",
    )
    .recommend("xfs or ext4")
    .judge(
        mount.map(|m| m.fs_type.clone()),
        |t| t == "xfs" || t == "ext4",
        vec![],
    )
}

fn mount_options(mount: Option<&host::Mount>) -> Item {
    Item::new(
        "fs.mount_options",
        "atime updates turn reads into writes; online discard adds latency to deletes (run \
         fstrim periodically instead)",
    )
    .recommend("noatime, no discard")
    .judge(
        mount.map(|m| m.options.join(",")),
        |o| {
            let options: Vec<&str> = o.split(',').collect();
            options.contains(&"noatime") && !options.contains(&"discard")
        },
        vec![],
    )
}

fn free_space(dir: &Path, segment_bytes: u64) -> Item {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) => existing = parent,
            None => break,
        }
    }
    let needed = segment_bytes.saturating_mul(FREE_SEGMENTS_MIN);
    Item::new(
        "fs.free_space",
        "each CommitLog segment takes its full size when created; with less free space than a \
         few segments puts are refused",
    )
    .recommend(format!(
        "at least {} MiB ({FREE_SEGMENTS_MIN} segments)",
        needed >> 20
    ))
    .judge(
        free_bytes(existing).map(|b| format!("{} MiB", b >> 20)),
        |v| number(v.trim_end_matches(" MiB")).is_some_and(|mib| mib << 20 >= needed),
        vec![],
    )
}

fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: a valid C string and a zeroed out-parameter of the right type.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// (name, why, recommended, ok, the value `apply` sets or `None` when not in the safe subset).
type Sysctl = (
    &'static str,
    &'static str,
    &'static str,
    fn(u64) -> bool,
    Option<u64>,
);

const SYSCTLS: [Sysctl; 6] = [
    ("vm.swappiness", "a swapped-out page of a reactor stalls every connection on it", "at most 10 (1)", |v| v <= 10, Some(1)),
    ("vm.dirty_background_ratio", "ConsumeQueue and index files are mmapped: write-back should start early and in small steps", "at most 10 (5)", |v| v <= 10, Some(5)),
    ("vm.dirty_ratio", "past it writers of mmapped files block in the page fault (a reactor stall)", "at most 40 (20)", |v| v <= 40, Some(20)),
    ("vm.dirty_expire_centisecs", "older dirty pages are written back; long ages build large bursts", "at most 3000", |v| v <= 3000, Some(3000)),
    ("fs.aio-max-nr", "the system-wide limit of in-flight async I/O contexts, shared with other services", "at least 1048576", |v| v >= AIO_MAX_NR_MIN, Some(AIO_MAX_NR_MIN)),
    ("kernel.io_uring_disabled", "the broker's reactors do all I/O through io_uring: 1 or 2 stops it from starting", "0", |v| v == 0, None),
];

fn sysctl_items(host: &Host) -> Vec<Item> {
    SYSCTLS
        .iter()
        .map(|&(name, why, recommended, ok, value)| {
            let path = format!("/proc/sys/{}", name.replace('.', "/"));
            Item::new(name, why).recommend(recommended).judge(
                host.read(&path).filter(|v| number(v).is_some()),
                |v| number(v).is_some_and(ok),
                value.map(|v| fix(&path, v)).unwrap_or_default(),
            )
        })
        .collect()
}

/// The soft limit of `/proc/self/limits` line `name` ("unlimited" as `u64::MAX`).
fn soft_limit(limits: &str, name: &str) -> Option<u64> {
    let rest = limits.lines().find_map(|l| l.strip_prefix(name))?;
    let soft = rest.split_whitespace().next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        number(soft)
    }
}

fn show_limit(value: u64) -> String {
    if value == u64::MAX {
        "unlimited".into()
    } else {
        value.to_string()
    }
}

fn limit_items(host: &Host, options: &Options) -> Vec<Item> {
    let limits = host.read("/proc/self/limits");
    let memlock = limits
        .as_deref()
        .and_then(|l| soft_limit(l, "Max locked memory"));
    let nofile = limits
        .as_deref()
        .and_then(|l| soft_limit(l, "Max open files"));
    let memlock_min = MEMLOCK_PER_SHARD_BYTES * options.shards as u64;
    vec![
        Item::new(
            "limits.memlock",
            "each shard registers its I/O buffers with io_uring (locked memory); this is the \
             limit of this shell, which a broker started from it inherits",
        )
        .recommend(format!(
            "at least {memlock_min} bytes ({} MiB per shard)",
            MEMLOCK_PER_SHARD_BYTES >> 20
        ))
        .judge(
            memlock.map(show_limit),
            |v| v == "unlimited" || number(v).is_some_and(|b| b >= memlock_min),
            vec![],
        ),
        Item::new(
            "limits.nofile",
            "every client connection, segment and ConsumeQueue file is a descriptor",
        )
        .recommend(format!("at least {NOFILE_MIN}"))
        .judge(
            nofile.map(show_limit),
            |v| v == "unlimited" || number(v).is_some_and(|n| n >= NOFILE_MIN),
            vec![],
        ),
    ]
}

fn clocksource(host: &Host) -> Item {
    Item::new(
        "clocksource",
        "timestamps are taken per message and per request: a clocksource without a vDSO \
         read (hpet, acpi_pm) makes each a system call",
    )
    .recommend("tsc (kvm-clock in a VM, arch_sys_counter on ARM)")
    .judge(
        host.read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        |c| ["tsc", "kvm-clock", "arch_sys_counter"].contains(&c),
        vec![],
    )
}

fn numa(host: &Host) -> Item {
    let nodes: Vec<String> = host
        .list("/sys/devices/system/node")
        .into_iter()
        .filter(|n| n.strip_prefix("node").is_some_and(|i| number(i).is_some()))
        .collect();
    Item::new(
        "numa.nodes",
        "memory and the NVMe of another node cost a hop: on several nodes run the broker on one \
         node's cores (numactl --cpunodebind --membind) next to its disk and NIC",
    )
    .recommend("1 node, or the broker bound to one")
    .judge(
        (!nodes.is_empty()).then(|| nodes.len().to_string()),
        |n| n == "1",
        vec![],
    )
}

/// The plain-text report: one line per item, then the reasons for those to tune.
pub fn render(items: &[Item]) -> String {
    let mut out = format!(
        "{:<34} {:<8} {:<28} {}\n",
        "ITEM", "VERDICT", "CURRENT", "RECOMMENDED"
    );
    for item in items {
        let verdict = match item.verdict {
            Verdict::Ok => "ok",
            Verdict::Tune => "TUNE",
            Verdict::Unknown => "unknown",
        };
        out.push_str(&format!(
            "{:<34} {:<8} {:<28} {}\n",
            item.name,
            verdict,
            shorten(&item.current, 28),
            item.recommended
        ));
    }
    let to_tune: Vec<&Item> = items.iter().filter(|i| i.verdict != Verdict::Ok).collect();
    if !to_tune.is_empty() {
        out.push('\n');
    }
    for item in to_tune {
        out.push_str(&format!("{}: {}\n", item.name, item.why));
    }
    out
}

fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(width - 1).collect();
    short.push('…');
    short
}
