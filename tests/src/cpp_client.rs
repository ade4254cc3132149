//! The unchanged Apache RocketMQ C++ client 2.x, as PyPI's `rocketmq==0.4.4` wheel bundles it
//! (`librocketmq.so` behind a ctypes API), driven by `tests/python/cpp_client.py`. The venv is
//! built once under `target/` by the first test that needs it.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The PyPI package that bundles the C++ client.
const PACKAGE: &str = "rocketmq==0.4.4";

static VENV_LOCK: Mutex<()> = Mutex::new(());

/// The venv's python, installing the client first if needed. Safe across test processes: a
/// venv is built under a private name and renamed into place.
pub fn python() -> PathBuf {
    let _guard = VENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let target = crate::binary_dir()
        .parent()
        .expect("target dir")
        .to_path_buf();
    let venv = target.join("cpp-client-venv");
    let python = venv.join("bin/python");
    if venv.join("installed").exists() {
        return python;
    }
    let staging = target.join(format!("cpp-client-venv.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    run(Command::new("python3").arg("-m").arg("venv").arg(&staging));
    run(Command::new(staging.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        PACKAGE,
    ]));
    std::fs::write(staging.join("installed"), PACKAGE).expect("marker");
    if std::fs::rename(&staging, &venv).is_err() {
        // Another test process finished first; use its venv.
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(
        venv.join("installed").exists(),
        "{} was not set up",
        venv.display()
    );
    python
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/cpp_client.py")
}

/// One run of the driver script; its JSON lines arrive on a channel as they are printed.
pub struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::Receiver<Value>,
    /// HOME for the client: its logs and local offset files stay in here.
    pub home: tempfile::TempDir,
}

impl ClientProcess {
    pub fn start(args: &[&str]) -> ClientProcess {
        ClientProcess::start_with_env(args, &[])
    }

    /// `start` with extra environment variables (e.g. the driver's ACL credentials,
    /// `THRUSTER_ACL_ACCESS_KEY` and `THRUSTER_ACL_SECRET_KEY`).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> ClientProcess {
        let home = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(python())
            .arg(script())
            .args(args)
            .envs(env.iter().copied())
            .env("HOME", home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the C++ client driver");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(value) => {
                        let _ = tx.send(value);
                    }
                    Err(_) => eprintln!("driver: {line}"),
                }
            }
        });
        let stdin = child.stdin.take();
        ClientProcess {
            child,
            stdin,
            events,
            home,
        }
    }

    /// Events until one has `event == name` (included), or panics after `timeout`.
    pub fn until(&self, name: &str, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    let done = event["event"] == name;
                    seen.push(event);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no {name:?} event within {timeout:?}; saw {seen:?}"),
            }
        }
    }

    /// Events that arrived so far, without waiting.
    pub fn drain(&self) -> Vec<Value> {
        self.events.try_iter().collect()
    }

    /// The next event, waiting up to `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Value> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Closes stdin (a push consumer then shuts down) and waits for the exit.
    pub fn finish(mut self) -> Vec<Value> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        let status = self.child.wait().expect("waiting for the driver");
        let rest = self.drain();
        assert!(
            status.success(),
            "driver failed ({status}); last events {rest:?}"
        );
        rest
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
