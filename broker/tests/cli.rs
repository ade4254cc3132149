//! The binaries' command lines. (Having integration tests here also makes
//! `cargo test --workspace` build this package's binaries before any test runs, which the
//! multi-process tests in `tests/` rely on.)

use std::net::TcpListener;
use std::process::Command;

const NAMESRV: &str = env!("CARGO_BIN_EXE_thruster-namesrv");

#[test]
fn namesrv_help_lists_its_flags() {
    let output = Command::new(NAMESRV).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--broker-expire-ms",
        "--scan-interval-ms",
        "--kv-config-path",
    ] {
        assert!(help.contains(flag), "missing {flag} in:\n{help}");
    }
}

#[test]
fn namesrv_refuses_a_zero_interval() {
    let output = Command::new(NAMESRV)
        .args(["--listen", "127.0.0.1:0", "--scan-interval-ms", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("must be positive"));
}

#[test]
fn namesrv_will_not_share_a_port_already_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Command::new(NAMESRV)
        .args(["--listen", &addr])
        .output()
        .unwrap();
    assert!(!output.status.success(), "a second server bound {addr}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&addr),
        "error should name the address: {stderr}"
    );
}
