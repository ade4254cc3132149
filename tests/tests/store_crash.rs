//! Crash safety of the store under SYNC_FLUSH, with real processes: a writer appends and
//! reports every acknowledgement; it is killed with SIGKILL at varying moments, many rounds;
//! after each restart every acknowledged message must be there, intact, and nothing past the
//! end of valid data may be served (the helper checks order, bodies and CRCs). Then deliberate
//! damage: a segment truncated mid-record and bit flips, after which recovery must stop at the
//! last intact record and say where.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const WRITER: &str = env!("CARGO_BIN_EXE_store-crash-writer");
const QUEUES: usize = 4;

struct Run {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    log: std::path::PathBuf,
}

fn start(dir: &Path, mode: &str, round: usize) -> Run {
    start_with(dir, mode, round, &[])
}

fn start_with(dir: &Path, mode: &str, round: usize, extra: &[&str]) -> Run {
    let log = dir.join(format!("writer-{round}.log"));
    let mut child = Command::new(WRITER)
        .arg(dir.join("store"))
        .arg(mode)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the writer");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    Run { child, lines, log }
}

/// Reads the RECOVERED lines; panics on CORRUPT.
fn recovered(run: &mut Run) -> Vec<u64> {
    let mut counts = vec![0; QUEUES];
    for _ in 0..QUEUES {
        let line = run.lines.next().expect("a RECOVERED line").unwrap();
        assert!(
            !line.starts_with("CORRUPT"),
            "{line}\nlog:\n{}",
            std::fs::read_to_string(&run.log).unwrap_or_default()
        );
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts[0], "RECOVERED", "{line}");
        counts[parts[1].parse::<usize>().unwrap()] = parts[2].parse().unwrap();
    }
    counts
}

fn kill(mut run: Run) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(run.child.id() as i32, libc::SIGKILL) };
    let status = run.child.wait().unwrap();
    assert!(!status.success());
}

#[test]
fn every_acknowledged_message_survives_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    // acked[q] = number of messages of queue q known acknowledged (seqs 0..acked[q]).
    let mut acked = [0u64; QUEUES];
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let rounds = 12;
    for round in 0..rounds {
        let mut run = start(dir.path(), "write", round);
        let counts = recovered(&mut run);
        assert_holds_acknowledged(&counts, &acked, &format!("round {round}"));
        acked.copy_from_slice(&counts);
        // Kill after a pseudo-random number of acknowledgements (xorshift).
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = 1 + rng % 600;
        let mut seen = 0;
        while seen < kill_after {
            let line = run.lines.next().expect("writer output").unwrap();
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts[0], "ACK", "{line}");
            let (q, seq): (usize, u64) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
            assert_eq!(seq, acked[q], "acknowledgements arrive in order per queue");
            acked[q] = seq + 1;
            seen += 1;
        }
        kill(run);
    }
    let mut run = start(dir.path(), "verify", rounds);
    let counts = recovered(&mut run);
    for q in 0..QUEUES {
        assert!(counts[q] >= acked[q]);
    }
    assert!(run.child.wait().unwrap().success());
    assert!(
        acked.iter().sum::<u64>() > 100,
        "the test acknowledged too little to mean anything"
    );
}

/// Writes some data, kills the writer, returns the newest segment's path and its data length.
fn write_then_kill(dir: &Path, acks: usize) -> (std::path::PathBuf, usize) {
    let mut run = start(dir, "write", 0);
    recovered(&mut run);
    for _ in 0..acks {
        run.lines.next().unwrap().unwrap();
    }
    kill(run);
    let segments_dir = dir.join("store/commitlog/0");
    let mut segments: Vec<_> = std::fs::read_dir(&segments_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    // The newest segment holding data (the writer may have prepared an empty one after it).
    for path in segments.into_iter().rev() {
        let data = std::fs::read(&path).unwrap();
        if let Some(last) = data.iter().rposition(|b| *b != 0) {
            return (path, last + 1);
        }
    }
    panic!("no data written");
}

#[test]
fn a_segment_truncated_mid_record_recovers_to_the_last_intact_record() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, data_len) = write_then_kill(dir.path(), 300);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len((data_len - 25) as u64).unwrap(); // inside the last record
    drop(file);
    let mut run = start(dir.path(), "verify", 1);
    let counts = recovered(&mut run); // the helper checked order, bodies and CRCs
    assert!(run.child.wait().unwrap().success());
    assert!(counts.iter().sum::<u64>() > 0);
    let log = std::fs::read_to_string(&run.log).unwrap();
    assert!(
        log.contains("log end"),
        "recovery must say where the log ends:\n{log}"
    );
    assert!(
        log.contains(segment.file_name().unwrap().to_str().unwrap()),
        "and in which file:\n{log}"
    );
}

#[test]
fn flipped_bits_in_the_last_segment_stop_recovery_at_the_last_intact_record() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, data_len) = write_then_kill(dir.path(), 300);
    let mut data = std::fs::read(&segment).unwrap();
    // Flip bytes in the body of the record in the middle of the segment. (BODYCRC covers only
    // the body, as in RocketMQ: damage to header fields such as timestamps is not detectable
    // from the record itself.)
    let mut starts = Vec::new();
    let mut at = 0;
    while at < data_len {
        let bytes = bytes::Bytes::copy_from_slice(&data[at..]);
        let Ok(record) = thruster_client::protocol::message::decode_record(&bytes, true) else {
            break;
        };
        starts.push(at);
        at += record.total_size;
    }
    assert!(starts.len() > 10, "the segment holds records");
    let body = starts[starts.len() / 2] + 88; // IPv4 hosts: BODY starts at byte 88
    for b in &mut data[body..body + 3] {
        *b ^= 0x5A;
    }
    std::fs::write(&segment, &data).unwrap();
    let mut run = start(dir.path(), "verify", 1);
    let counts = recovered(&mut run);
    assert!(
        run.child.wait().unwrap().success(),
        "nothing corrupt may be served"
    );
    let log = std::fs::read_to_string(&run.log).unwrap();
    assert!(log.contains("log end"), "{log}");
    // Data after the damage was cut: fewer messages than were acknowledged survive, and
    // writing resumes cleanly after the cut.
    assert!(counts.iter().sum::<u64>() < 300);
    let mut run = start(dir.path(), "write", 2);
    let again = recovered(&mut run);
    assert_eq!(again, counts);
    for _ in 0..50 {
        assert!(run.lines.next().unwrap().unwrap().starts_with("ACK"));
    }
    kill(run);
    let mut run = start(dir.path(), "verify", 3);
    let after = recovered(&mut run);
    assert!(after.iter().sum::<u64>() >= counts.iter().sum::<u64>() + 50);
}

/// Sets the writer's file-size limit (RLIMIT_FSIZE) from outside; `None` lifts it.
fn set_file_size_limit(run: &Run, limit_bytes: Option<u64>) {
    let value = limit_bytes.unwrap_or(libc::RLIM_INFINITY);
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit on our own child's pid with a valid new limit and no old-limit pointer.
    let rc = unsafe {
        libc::prlimit(
            run.child.id() as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// A file system that refuses space makes the store refuse puts, never corrupt its log, and
/// accept them again once space is back, without a restart. The refusal is simulated with
/// RLIMIT_FSIZE set on the running writer: writes and preallocation past 64 KiB of any file
/// then fail (EFBIG), the way they fail with ENOSPC.
#[test]
fn refused_space_refuses_puts_then_recovers_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (acknowledged, counts) = refuse_space_then_lift(dir.path(), &[]);
    assert_holds_acknowledged(&counts, &acknowledged, "after the space came back");
}

/// Every queue holds at least the messages acknowledged in it.
fn assert_holds_acknowledged(counts: &[u64], acknowledged: &[u64], when: &str) {
    for q in 0..QUEUES {
        assert!(
            counts[q] >= acknowledged[q],
            "{when}: queue {q} has {} messages, {} were acknowledged",
            counts[q],
            acknowledged[q]
        );
    }
}

/// The same under ASYNC_FLUSH, where the failing writes are the pipelined chunk write-outs and
/// the interval flushes: puts are refused, then accepted again, and what survives SIGKILL is an
/// intact prefix of each queue (an async acknowledgement does not promise durability).
#[test]
fn refused_space_under_async_flush_refuses_then_recovers_without_corrupting_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (_, counts) = refuse_space_then_lift(dir.path(), &["async"]);
    assert!(counts.iter().sum::<u64>() > 0, "something was flushed");
}

/// Runs the writer, sets a 64 KiB file-size limit under load, waits for a refusal, lifts the
/// limit, waits for 200 more acknowledgements, kills the writer and verifies the store. Returns
/// one past the highest acknowledged sequence and the recovered count, per queue.
fn refuse_space_then_lift(dir: &Path, extra: &[&str]) -> ([u64; QUEUES], Vec<u64>) {
    let mut run = start_with(dir, "write-retry", 0, extra);
    recovered(&mut run);
    // A watchdog: a store that never recovers ends the writer, and the reads below fail.
    let pid = run.child.id() as libc::pid_t;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog_done = done.clone();
    let watchdog = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if watchdog_done.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    // next[q]: one past the highest acknowledged sequence of queue q.
    let mut next = [0u64; QUEUES];
    let mut refusals = Vec::new();
    let mut read_acks = |run: &mut Run, acks: usize, until_refused: bool| {
        let mut seen = 0;
        loop {
            let line = run
                .lines
                .next()
                .expect("the writer ended: no recovery within the watchdog's 60 s")
                .unwrap();
            let parts: Vec<&str> = line.splitn(4, ' ').collect();
            let (q, seq): (usize, u64) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
            match parts[0] {
                "ACK" => {
                    assert!(seq >= next[q], "queue {q}: {seq} acknowledged twice");
                    next[q] = seq + 1;
                    seen += 1;
                }
                "REFUSED" => refusals.push(line.clone()),
                other => panic!("unexpected line {other}: {line}"),
            }
            if until_refused && !refusals.is_empty() || !until_refused && seen >= acks {
                return;
            }
        }
    };
    read_acks(&mut run, 200, false);
    set_file_size_limit(&run, Some(64 << 10));
    read_acks(&mut run, 0, true);
    set_file_size_limit(&run, None);
    read_acks(&mut run, 200, false);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    watchdog.join().unwrap();
    kill(run);
    // Puts waiting for the failing flush learn of the failure at once (not by timing out),
    // later ones are refused up front: SERVICE_NOT_AVAILABLE, with the cause.
    assert!(
        refusals.iter().all(|r| r.contains("ServiceNotAvailable")),
        "refusals carry SERVICE_NOT_AVAILABLE: {refusals:?}"
    );
    assert!(
        refusals.iter().any(|r| r.contains("File too large")),
        "and say why: {refusals:?}"
    );
    let mut run = start_with(dir, "verify", 1, extra);
    let counts = recovered(&mut run); // order, bodies and CRCs checked by the helper
    assert!(run.child.wait().unwrap().success());
    (next, counts)
}
