//! Running `thruster-admin` from the tests, against a name server.

use std::process::Command;

use serde_json::Value;
use thruster_tests::ServerProcess;

/// Runs thruster-admin; (exit ok, stdout, stderr).
pub fn admin(ns: &ServerProcess, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_thruster-admin"))
        .arg("-n")
        .arg(ns.addr.to_string())
        .args(args)
        .output()
        .expect("running thruster-admin");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs thruster-admin with `--json`, expecting success; its parsed output.
pub fn admin_json(ns: &ServerProcess, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = admin(ns, &all);
    assert!(ok, "thruster-admin {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"))
}
