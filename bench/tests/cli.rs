//! The command line. (Having an integration test here also makes `cargo test --workspace`
//! build the binary, which `tests/tests/bench.rs` runs against a broker.)

use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_thruster-bench");

#[test]
fn help_lists_the_workloads() {
    let output = Command::new(BENCH).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for workload in ["produce", "consume", "e2e", "disk", "compare"] {
        assert!(help.contains(workload), "missing {workload} in:\n{help}");
    }
}

#[test]
fn compare_refuses_a_malformed_target() {
    let output = Command::new(BENCH)
        .args([
            "compare",
            "--target",
            "no-equals-sign",
            "--target",
            "b=127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("NAME=NAMESRV"));
}

#[test]
fn disk_measures_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BENCH)
        .args([
            "disk",
            "--dir",
            dir.path().to_str().unwrap(),
            "--total-bytes",
            "4194304",
            "--duration-s",
            "0.2",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("O_DIRECT") && table.contains("fdatasync"),
        "{table}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "scratch files removed"
    );
}
