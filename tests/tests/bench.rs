//! `thruster-bench` as a process against a real broker: it drives the load, and writes the
//! table, the .hgrm, the JSON summary and the SVG plot.

use std::process::Command;

use thruster_tests::{binary, ServerProcess};

fn run_bench(args: &[&str]) -> String {
    let output = Command::new(binary("thruster-bench"))
        .args(args)
        .output()
        .expect("running thruster-bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "thruster-bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn closed_and_open_loop_runs_report_what_they_sent() {
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let _broker = ServerProcess::broker(namesrv.addr, 2, &[]);
    let ns = namesrv.addr.to_string();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let table = run_bench(&[
        "produce",
        "--namesrv",
        &ns,
        "--topic",
        "BenchClosed",
        "--messages",
        "300",
        "--producers",
        "4",
        "--out",
        dir,
        "--label",
        "closed",
    ]);
    assert!(table.contains("closed"), "{table}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    let run = &summary[0];
    assert_eq!(run["errors"], 0);
    let operations = run["operations"].as_u64().unwrap();
    assert!((300..300 + 4).contains(&operations), "{operations}");
    assert!(run["p99_us"].as_u64().unwrap() >= run["p50_us"].as_u64().unwrap());
    let svg = std::fs::read_to_string(out.path().join("percentiles.svg")).unwrap();
    assert!(svg.contains("<polyline"));
    assert!(std::fs::read_to_string(out.path().join("closed-0.hgrm"))
        .unwrap()
        .contains("Total count"));

    // Catch-up: reads the backlog the run above left (300 messages of 1 KiB and the warm-up).
    let consumed = tempfile::tempdir().unwrap();
    run_bench(&[
        "consume",
        "--namesrv",
        &ns,
        "--topic",
        "BenchClosed",
        "--duration-s",
        "5",
        "--out",
        consumed.path().to_str().unwrap(),
    ]);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(consumed.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary[0]["errors"], 0);
    let mb = summary[0]["mb_per_s"].as_f64().unwrap() * summary[0]["elapsed_s"].as_f64().unwrap();
    let expected_mb = (operations + 1) as f64 * 1024.0 / 1e6;
    assert!(
        (mb - expected_mb).abs() < 1e-3,
        "read {mb} MB, expected {expected_mb}"
    );

    // Open loop: exactly the scheduled number of operations.
    let open = tempfile::tempdir().unwrap();
    run_bench(&[
        "produce",
        "--namesrv",
        &ns,
        "--topic",
        "BenchOpen",
        "--messages",
        "200",
        "--rate",
        "1000",
        "--out",
        open.path().to_str().unwrap(),
    ]);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(open.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary[0]["operations"], 200);
    assert_eq!(summary[0]["errors"], 0);
}
