//! `thruster-tune` as a process: `check` on this machine and against fake `/sys` + `/proc`
//! trees that drive every verdict both ways, `apply --dry-run`, `apply` + `undo`, and `probe`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use thruster_tuning::io_properties::{IoProperties, Kind};

/// The store directory the fake trees mount (it does not exist on the real file system).
const FAKE_STORE: &str = "/thruster-fake-mount/store";

fn tune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thruster-tune"))
        .args(args)
        .output()
        .expect("running thruster-tune")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `check --json` items by name: (verdict, current).
fn check(root: &Path, extra: &[&str]) -> BTreeMap<String, (String, String)> {
    let root = root.to_str().unwrap();
    let mut args = vec!["check", "--json", "--root", root, "--dir", FAKE_STORE];
    args.extend(extra);
    let output = tune(&args);
    assert!(output.status.success(), "{output:?}");
    let items: Vec<Value> = serde_json::from_slice(&output.stdout).expect("check --json parses");
    items
        .iter()
        .map(|item| {
            (
                item["name"].as_str().unwrap().to_owned(),
                (
                    item["verdict"].as_str().unwrap().to_owned(),
                    item["current"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

fn put(root: &Path, path: &str, content: &str) {
    let path = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// A host with 4 CPUs, an NVMe disk holding the store, and every value either as the broker
/// wants it (`tuned`) or not. The tuned host's store sits on device-mapper over a partition,
/// the other's on the partition itself: both resolve to `nvme0n1`.
fn fake_root(root: &Path, tuned: bool) {
    let pick = |good: &str, bad: &str| {
        if tuned {
            good.to_owned()
        } else {
            bad.to_owned()
        }
    };
    put(root, "/sys/devices/system/cpu/online", "0-3\n");
    for cpu in 0..4 {
        let dir = format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq");
        put(
            root,
            &format!("{dir}/scaling_governor"),
            &pick("performance", "powersave"),
        );
        put(
            root,
            &format!("{dir}/scaling_available_governors"),
            "performance powersave\n",
        );
    }
    put(
        root,
        "/sys/devices/system/cpu/cpufreq/boost",
        &pick("1", "0"),
    );
    put(
        root,
        "/proc/interrupts",
        "           CPU0 CPU1 CPU2 CPU3\n 40:  1 2 3 4  PCI-MSIX-0000:01:00.0 0-edge nvme0q0\n \
         41:  1 2 3 4  PCI-MSIX-0000:01:00.0 1-edge nvme0q1\nNMI: 0 0 0 0 Non-maskable\n",
    );
    put(root, "/sys/class/net/eth0/device/msi_irqs/50", "msix\n");
    for irq in [40, 41, 50] {
        put(
            root,
            &format!("/proc/irq/{irq}/smp_affinity_list"),
            &pick("2-3", "0-3"),
        );
    }
    let (device, devname) = if tuned {
        ("253:0", "dm-0")
    } else {
        ("259:1", "nvme0n1p1")
    };
    put(
        root,
        "/proc/self/mountinfo",
        &format!(
            "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n\
             30 22 {device} / /thruster-fake-mount {} shared:5 - {} /dev/{devname} rw\n",
            pick("rw,noatime", "rw,relatime"),
            pick("xfs", "btrfs"),
        ),
    );
    put(
        root,
        &format!("/sys/dev/block/{device}/uevent"),
        &format!("MAJOR=1\nDEVNAME={devname}\n"),
    );
    std::fs::create_dir_all(root.join("sys/block/dm-0/slaves/nvme0n1p1")).unwrap();
    put(root, "/sys/block/nvme0n1/nvme0n1p1/partition", "1\n");
    let queue = "/sys/block/nvme0n1/queue";
    put(
        root,
        &format!("{queue}/scheduler"),
        &pick("[none] mq-deadline", "[mq-deadline] none"),
    );
    put(root, &format!("{queue}/nr_requests"), &pick("1023", "32"));
    put(
        root,
        &format!("{queue}/write_cache"),
        &pick("write back", "write through"),
    );
    put(
        root,
        &format!("{queue}/read_ahead_kb"),
        &pick("128", "8192"),
    );
    put(root, &format!("{queue}/rotational"), &pick("0", "1"));
    put(
        root,
        "/sys/kernel/mm/transparent_hugepage/enabled",
        &pick("always [madvise] never", "[always] madvise never"),
    );
    put(root, "/proc/sys/vm/swappiness", &pick("1", "60"));
    put(
        root,
        "/proc/sys/vm/dirty_background_ratio",
        &pick("5", "20"),
    );
    put(root, "/proc/sys/vm/dirty_ratio", &pick("20", "80"));
    put(
        root,
        "/proc/sys/vm/dirty_expire_centisecs",
        &pick("3000", "9000"),
    );
    put(root, "/proc/sys/fs/aio-max-nr", &pick("1048576", "65536"));
    put(root, "/proc/sys/kernel/io_uring_disabled", &pick("0", "2"));
    put(
        root,
        "/proc/self/limits",
        &pick(
            "Limit Soft Hard Units\nMax locked memory         unlimited  unlimited  bytes\nMax open files            1048576    1048576    files\n",
            "Limit Soft Hard Units\nMax locked memory         65536      65536      bytes\nMax open files            1024       4096       files\n",
        ),
    );
    put(
        root,
        "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        &pick("tsc", "hpet"),
    );
    std::fs::create_dir_all(root.join("sys/devices/system/node/node0")).unwrap();
    if !tuned {
        std::fs::create_dir_all(root.join("sys/devices/system/node/node1")).unwrap();
    }
}

const EVERY_ITEM: &[&str] = &[
    "cpu.governor",
    "cpu.boost",
    "cpu.cores_vs_shards",
    "irq.affinity",
    "block.nvme0n1.scheduler",
    "block.nvme0n1.nr_requests",
    "block.nvme0n1.write_cache",
    "block.nvme0n1.read_ahead_kb",
    "block.nvme0n1.rotational",
    "fs.type",
    "fs.mount_options",
    "fs.free_space",
    "mm.transparent_hugepage",
    "vm.swappiness",
    "vm.dirty_background_ratio",
    "vm.dirty_ratio",
    "vm.dirty_expire_centisecs",
    "fs.aio-max-nr",
    "kernel.io_uring_disabled",
    "limits.memlock",
    "limits.nofile",
    "clocksource",
    "numa.nodes",
];

fn names(items: &BTreeMap<String, (String, String)>) -> Vec<&str> {
    items.keys().map(String::as_str).collect()
}

fn sorted(names: &[&'static str]) -> Vec<&'static str> {
    let mut names = names.to_vec();
    names.sort();
    names
}

#[test]
fn check_json_on_this_machine_gives_every_item_a_verdict() {
    let store = tempfile::tempdir().unwrap();
    let output = tune(&["check", "--json", "--dir", store.path().to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    let items: Vec<Value> = serde_json::from_slice(&output.stdout).expect("check --json parses");
    for item in &items {
        let verdict = item["verdict"].as_str().expect("a verdict");
        assert!(["ok", "tune", "unknown"].contains(&verdict), "{item}");
        for field in ["name", "current", "recommended", "why"] {
            assert!(
                !item[field].as_str().expect(field).is_empty(),
                "{field} of {item}"
            );
        }
    }
    let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    for wanted in EVERY_ITEM.iter().filter(|n| !n.starts_with("block.")) {
        assert!(names.contains(wanted), "{wanted} missing from {names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("block.")), "{names:?}");
}

#[test]
fn a_fake_host_drives_every_verdict_both_ways() {
    let good = tempfile::tempdir().unwrap();
    fake_root(good.path(), true);
    let items = check(
        good.path(),
        &["--shards", "2", "--segment-bytes", "1048576"],
    );
    assert_eq!(names(&items), sorted(EVERY_ITEM));
    for (name, (verdict, current)) in &items {
        assert_eq!(verdict, "ok", "{name} = {current}");
    }
    assert_eq!(items["block.nvme0n1.scheduler"].1, "none");

    let bad = tempfile::tempdir().unwrap();
    fake_root(bad.path(), false);
    let items = check(
        bad.path(),
        &[
            "--shards",
            "2",
            "--segment-bytes",
            &(1u64 << 60).to_string(),
        ],
    );
    assert_eq!(names(&items), sorted(EVERY_ITEM));
    for (name, (verdict, current)) in &items {
        // With 4 cores and 2 shards the core count is fine: see the next check.
        let expected = if name == "cpu.cores_vs_shards" {
            "ok"
        } else {
            "tune"
        };
        assert_eq!(verdict, expected, "{name} = {current}");
    }
    assert_eq!(items["irq.affinity"].1, "40:0-3 41:0-3 50:0-3");
    let items = check(bad.path(), &["--shards", "8"]);
    assert_eq!(items["cpu.cores_vs_shards"].0, "tune");
    // No spare core: interrupts may stay where they are.
    assert_eq!(items["irq.affinity"].0, "ok");

    let output = tune(&[
        "check",
        "--strict",
        "--root",
        bad.path().to_str().unwrap(),
        "--dir",
        FAKE_STORE,
    ]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "--strict fails when something is to tune"
    );
    let output = tune(&[
        "check",
        "--strict",
        "--root",
        good.path().to_str().unwrap(),
        "--dir",
        FAKE_STORE,
        "--shards",
        "2",
        "--segment-bytes",
        "1048576",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
}

#[test]
fn missing_or_garbled_entries_read_as_unknown() {
    let root = tempfile::tempdir().unwrap();
    fake_root(root.path(), true);
    std::fs::remove_file(root.path().join("proc/sys/vm/swappiness")).unwrap();
    put(root.path(), "/proc/sys/fs/aio-max-nr", "lots\n");
    std::fs::remove_dir_all(root.path().join("sys/class/net")).unwrap();
    let items = check(
        root.path(),
        &["--shards", "2", "--segment-bytes", "1048576"],
    );
    assert_eq!(items["vm.swappiness"], ("unknown".into(), "unknown".into()));
    assert_eq!(items["fs.aio-max-nr"].0, "unknown");
    assert_eq!(items["vm.dirty_ratio"].0, "ok", "the rest is still read");
    assert_eq!(
        items["irq.affinity"].1, "40:2-3 41:2-3",
        "NVMe interrupts without the NIC"
    );

    let empty = tempfile::tempdir().unwrap();
    let items = check(empty.path(), &[]);
    for (name, (verdict, _)) in &items {
        // Free space is the real file system's (statvfs), not a file under the root.
        if name != "fs.free_space" {
            assert_eq!(verdict, "unknown", "{name}");
        }
    }
    assert!(items.contains_key("block.device"), "{items:?}");
}

/// Every file under `root` with its content.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let name = path.strip_prefix(root).unwrap().display().to_string();
                files.insert(name, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    files
}

#[test]
fn apply_dry_run_lists_the_changes_and_makes_none() {
    let root = tempfile::tempdir().unwrap();
    fake_root(root.path(), false);
    let before = snapshot(root.path());
    let output = tune(&[
        "apply",
        "--dry-run",
        "--root",
        root.path().to_str().unwrap(),
        "--dir",
        FAKE_STORE,
        "--shards",
        "2",
    ]);
    assert!(output.status.success(), "{output:?}");
    let listed = stdout(&output);
    for line in [
        "would set /proc/sys/vm/swappiness = 1 (was 60)",
        "would set /proc/sys/vm/dirty_background_ratio = 5 (was 20)",
        "would set /proc/sys/vm/dirty_ratio = 20 (was 80)",
        "would set /proc/sys/vm/dirty_expire_centisecs = 3000 (was 9000)",
        "would set /proc/sys/fs/aio-max-nr = 1048576 (was 65536)",
        "would set /sys/block/nvme0n1/queue/scheduler = none (was mq-deadline)",
        "would set /sys/block/nvme0n1/queue/nr_requests = 128 (was 32)",
        "would set /sys/devices/system/cpu/cpu3/cpufreq/scaling_governor = performance (was powersave)",
        "would set /proc/irq/41/smp_affinity_list = 2-3 (was 0-3)",
        "would set /proc/irq/50/smp_affinity_list = 2-3 (was 0-3)",
    ] {
        assert!(listed.contains(line), "{line:?} not in:\n{listed}");
    }
    assert_eq!(listed.lines().count(), 5 + 2 + 4 + 3, "{listed}");
    assert_eq!(snapshot(root.path()), before, "a dry run changes nothing");
}

#[test]
fn apply_then_undo_restores_every_value() {
    let root = tempfile::tempdir().unwrap();
    fake_root(root.path(), false);
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("applied.json");
    let (root_arg, state_arg) = (root.path().to_str().unwrap(), state_file.to_str().unwrap());
    let before = check(root.path(), &["--shards", "2"]);

    let output = tune(&[
        "apply", "--root", root_arg, "--dir", FAKE_STORE, "--shards", "2", "--state", state_arg,
    ]);
    assert!(output.status.success(), "{output:?}");
    assert!(state_file.exists());
    let applied = check(root.path(), &["--shards", "2"]);
    for name in [
        "vm.swappiness",
        "vm.dirty_background_ratio",
        "vm.dirty_ratio",
        "vm.dirty_expire_centisecs",
        "fs.aio-max-nr",
        "block.nvme0n1.scheduler",
        "block.nvme0n1.nr_requests",
        "cpu.governor",
        "irq.affinity",
    ] {
        assert_eq!(
            applied[name].0, "ok",
            "{name} after apply: {:?}",
            applied[name]
        );
    }
    assert_eq!(
        applied["block.nvme0n1.rotational"].0, "tune",
        "not in the safe subset"
    );

    let again = tune(&[
        "apply", "--root", root_arg, "--dir", FAKE_STORE, "--state", state_arg,
    ]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("undo"),
        "{again:?}"
    );

    let output = tune(&["undo", "--root", root_arg, "--state", state_arg]);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout(&output).contains("restored /proc/sys/vm/swappiness = 60"));
    assert!(!state_file.exists(), "the record goes once undone");
    // Free space is the real file system's and moves with other work on this machine.
    let without_space = |mut items: BTreeMap<String, (String, String)>| {
        items.remove("fs.free_space");
        items
    };
    assert_eq!(
        without_space(check(root.path(), &["--shards", "2"])),
        without_space(before)
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("proc/sys/vm/swappiness")).unwrap(),
        "60"
    );

    let output = tune(&["undo", "--root", root_arg, "--state", state_arg]);
    assert!(!output.status.success(), "nothing left to undo");
}

#[test]
fn probe_with_a_small_budget_writes_valid_io_properties() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let output = tune(&["probe", "--dir", store.to_str().unwrap(), "--budget-s", "2"]);
    assert!(output.status.success(), "{output:?}");
    let properties = IoProperties::read(&store)
        .unwrap()
        .expect("io-properties.json written");
    for kind in [
        Kind::SeqWrite,
        Kind::DsyncPrewritten,
        Kind::FdatasyncPrewritten,
        Kind::FdatasyncGrowing,
        Kind::RandomRead,
    ] {
        let figures: Vec<_> = properties
            .figures
            .iter()
            .filter(|f| f.kind == kind)
            .collect();
        assert!(!figures.is_empty(), "{kind:?}");
        for f in figures {
            assert!(
                f.ops_per_s > 0.0 && f.p50_us > 0 && f.p50_us <= f.p99_us,
                "{f:?}"
            );
        }
    }
    let settings = properties.store_settings().unwrap();
    assert!(stdout(&output).contains(&format!("chunk_bytes={}", settings.chunk_bytes)));
    let left: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["io-properties.json"], "probe files removed");

    let output = tune(&[
        "probe",
        "--dir",
        store.to_str().unwrap(),
        "--budget-s",
        "-1",
    ]);
    assert!(!output.status.success());
}

/// `thruster-tune` as an unprivileged user: nobody when the tests run as root.
fn tune_unprivileged(args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_thruster-tune"));
    command.args(args);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        command.uid(65534).gid(65534);
    }
    command.output().expect("running thruster-tune")
}

#[test]
fn apply_and_undo_on_the_real_host_refuse_without_root() {
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("applied.json");
    let before = std::fs::read_to_string("/proc/sys/vm/swappiness").ok();
    for command in ["apply", "undo"] {
        let output = tune_unprivileged(&[command, "--state", state_file.to_str().unwrap()]);
        assert!(!output.status.success(), "{command}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("takes root"), "{command}: {stderr}");
    }
    assert!(!state_file.exists());
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/swappiness").ok(),
        before
    );
}
