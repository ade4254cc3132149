//! Reliability against a hostile world: restarts at once on the same ports, clients that
//! misbehave, inputs built to hurt.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use thruster_client::protocol::{request_code as rc, response_code, RemotingCommand};
use thruster_tests::wire::{pull_records, runtime_info, v2_header};
use thruster_tests::{Client, ServerProcess};

fn namesrv() -> ServerProcess {
    ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"])
}

fn send(client: &mut Client, topic: &str, queue: i32, body: &str) -> i32 {
    let request = RemotingCommand::request(rc::SEND_MESSAGE_V2, &v2_header(topic, queue, None))
        .with_body(body.as_bytes().to_vec());
    client.invoke(request).code
}

#[test]
fn one_name_broker_restarts_at_once_after_sigterm_with_clients_and_after_kill_9() {
    // One broker name: every shard accepts on the shared port with SO_REUSEPORT. Connections
    // it accepted linger in FIN-WAIT-2 / TIME-WAIT after the stop; the restart must not care.
    let ns = namesrv();
    let port = thruster_tests::free_port_block(&[0, 1, 2]) + 2;
    let listen = format!("listenPort={port}");
    let settings = [
        listen.as_str(),
        "brokerPerShard=false",
        "flushDiskType=SYNC_FLUSH",
    ];
    let mut broker = ServerProcess::broker(ns.addr, 2, &settings);
    Client::connect(broker.addr).create_topic("Restart", 2);
    for round in 0..2 {
        // Clients stay connected (and the broker closes on them) across the stop.
        let mut clients: Vec<Client> = (0..8).map(|_| Client::connect(broker.addr)).collect();
        for (i, client) in clients.iter_mut().enumerate() {
            let body = format!("r{round}-{i}");
            assert_eq!(
                send(client, "Restart", (i % 2) as i32, &body),
                response_code::SUCCESS
            );
        }
        let started = Instant::now();
        if round == 0 {
            assert!(
                broker.stop_gracefully(),
                "SIGTERM with clients connected stops cleanly"
            );
        } else {
            broker.kill();
        }
        broker = broker.restart();
        assert_eq!(broker.addr.port(), port, "back on the same port");
        // The harness waits for the listening line: this is how long the restart took.
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "restarted in {:?}",
            started.elapsed()
        );
        drop(clients);
    }
    let mut client = Client::connect(broker.addr);
    let stored: usize = (0..2)
        .map(|q| pull_records(&mut client, "Restart", q).len())
        .sum();
    assert_eq!(
        stored, 16,
        "every acknowledged send of both rounds is there"
    );
}

#[test]
fn a_header_with_100_000_fields_is_refused_and_nobody_else_waits() {
    let ns = namesrv();
    let broker = ServerProcess::broker(ns.addr, 1, &[]);
    let mut healthy = Client::connect(broker.addr);
    healthy.create_topic("Fields", 1);
    let fields: Vec<String> = (0..100_000).map(|i| format!("\"k{i}\":\"v\"")).collect();
    let header = format!(
        r#"{{"code":10,"language":"JAVA","opaque":1,"extFields":{{{}}}}}"#,
        fields.join(",")
    );
    let mut frame = Vec::with_capacity(header.len() + 8);
    frame.extend_from_slice(&((4 + header.len()) as u32).to_be_bytes());
    frame.extend_from_slice(&(header.len() as u32).to_be_bytes());
    frame.extend_from_slice(header.as_bytes());
    let mut hostile = Client::connect(broker.addr);
    let started = Instant::now();
    hostile.send_bytes(&frame).unwrap();
    let answer = hostile.read_command().unwrap().expect("an error answer");
    assert_eq!(answer.code, response_code::SYSTEM_ERROR);
    assert!(answer.remark.unwrap_or_default().contains("extFields"));
    // The shard was never held: a send right after is answered at once.
    assert_eq!(
        send(&mut healthy, "Fields", 0, "after"),
        response_code::SUCCESS
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// Whether the broker closed `stream` (EOF or reset) within `within`.
fn closed_within(stream: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn idle_and_dribbling_connections_are_closed_and_busy_ones_kept() {
    let ns = namesrv();
    let broker = ServerProcess::broker(ns.addr, 1, &["serverChannelMaxIdleTimeSeconds=1"]);
    let mut busy = Client::connect(broker.addr);
    busy.create_topic("Idle", 1);
    let mut idle = std::net::TcpStream::connect(broker.addr).unwrap();
    // Slowloris: a frame header promising 1 KiB, then a byte every 200 ms, never finished.
    let mut dribbler = std::net::TcpStream::connect(broker.addr).unwrap();
    let dribble = std::thread::spawn(move || {
        use std::io::Write;
        let started = Instant::now();
        let _ = dribbler.write_all(&1024u32.to_be_bytes());
        while started.elapsed() < Duration::from_secs(6) {
            if dribbler.write_all(b"x").is_err() {
                return true; // the broker closed it
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    });
    // A connection that keeps sending requests stays, well past the timeout.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        assert_eq!(send(&mut busy, "Idle", 0, "still"), response_code::SUCCESS);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)),
        "the idle connection was closed"
    );
    assert!(
        dribble.join().unwrap(),
        "the dribbling connection was closed"
    );
    assert_eq!(send(&mut busy, "Idle", 0, "after"), response_code::SUCCESS);
}

/// A small ext4 file system on a loop device, mounted for one test; unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
    mount: std::path::PathBuf,
}

impl SmallFs {
    /// Needs root (CI runs as root). Not skipped silently: without root this fails, unless
    /// THRUSTER_SKIP_ROOT_TESTS=1 says to skip on purpose.
    fn new(size_mib: u64) -> Option<SmallFs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            if std::env::var("THRUSTER_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
                eprintln!("skipped on purpose (THRUSTER_SKIP_ROOT_TESTS=1): needs root");
                return None;
            }
            panic!("this test mounts a small ext4 file system and needs root (CI has it); set THRUSTER_SKIP_ROOT_TESTS=1 to skip it on purpose");
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        let file = std::fs::File::create(&image).unwrap();
        file.set_len(size_mib << 20).unwrap();
        drop(file);
        let run = |cmd: &str, args: &[&std::ffi::OsStr]| {
            let out = std::process::Command::new(cmd).args(args).output().unwrap();
            assert!(
                out.status.success(),
                "{cmd}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(
            "mkfs.ext4",
            &["-q".as_ref(), "-F".as_ref(), image.as_os_str()],
        );
        // nodelalloc: blocks are taken at the page fault, as on file systems without delayed
        // allocation (with it, ext4 keeps a reserve that can hide the problem on small runs).
        let options: &std::ffi::OsStr = "loop,nodelalloc".as_ref();
        run(
            "mount",
            &["-o".as_ref(), options, image.as_os_str(), mount.as_os_str()],
        );
        Some(SmallFs { dir, mount })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.mount)
            .status();
        let _ = &self.dir;
    }
}

#[test]
fn a_full_disk_refuses_sends_never_kills_the_broker_and_loses_nothing_acknowledged() {
    let Some(fs) = SmallFs::new(96) else { return };
    let ns = namesrv();
    let store = format!("storePathRootDir={}", fs.mount.join("store").display());
    let settings = [
        store.as_str(),
        "mappedFileSizeCommitLog=8388608",
        "diskMaxUsedSpaceRatio=99",
        "flushDiskType=SYNC_FLUSH",
    ];
    let mut broker = ServerProcess::broker(ns.addr, 1, &settings);
    Client::connect(broker.addr).create_topic("Full", 4);
    let mut client = Client::connect(broker.addr);
    let mut acked = std::collections::BTreeSet::new();
    let body = "x".repeat(4096);
    let mut i = 0u64;
    let mut send_one = |client: &mut Client, acked: &mut std::collections::BTreeSet<String>| {
        i += 1;
        let tagged = format!("{i}-{body}");
        let code = send(client, "Full", (i % 4) as i32, &tagged);
        if code == response_code::SUCCESS {
            acked.insert(tagged);
        }
        code
    };
    for _ in 0..200 {
        assert_eq!(send_one(&mut client, &mut acked), response_code::SUCCESS);
    }
    // Fill the file system behind the broker's back, then keep sending into the full disk.
    let filler = fs.mount.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "status=none"])
        .arg(format!("of={}", filler.display()))
        .status();
    let mut refused = 0;
    for _ in 0..3000 {
        match send_one(&mut client, &mut acked) {
            response_code::SUCCESS => {}
            response_code::SERVICE_NOT_AVAILABLE => refused += 1,
            other => panic!("unexpected answer {other}"),
        }
        if refused >= 20 {
            break;
        }
    }
    assert!(
        refused >= 20,
        "sends were refused with SERVICE_NOT_AVAILABLE once the disk was full"
    );
    assert!(
        broker.is_running(),
        "the broker is alive:\n{}",
        broker.log()
    );
    // Space back: sends resume.
    std::fs::remove_file(&filler).unwrap();
    let resumed = thruster_tests::wait_until(Duration::from_secs(30), || {
        send_one(&mut client, &mut acked) == response_code::SUCCESS
    });
    assert!(resumed, "sends resumed once space came back");
    for _ in 0..50 {
        assert_eq!(send_one(&mut client, &mut acked), response_code::SUCCESS);
    }
    // A crash now keeps every acknowledged message (SYNC_FLUSH).
    broker.kill();
    let broker = broker.restart();
    let mut reader = Client::connect(broker.addr);
    let stored: std::collections::BTreeSet<String> = (0..4)
        .flat_map(|q| pull_records(&mut reader, "Full", q))
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
        .collect();
    let lost: Vec<_> = acked
        .difference(&stored)
        .map(|b| &b[..b.find('-').unwrap()])
        .collect();
    assert!(lost.is_empty(), "acknowledged then lost: {lost:?}");
    drop(broker);
}

#[test]
fn a_consumer_that_never_reads_stalls_only_itself() {
    // A small memory window: the backlog is read from the files (sendfile).
    let ns = namesrv();
    let settings = [
        "memoryWindowBytes=4194304",
        "mappedFileSizeCommitLog=8388608",
    ];
    let mut broker = ServerProcess::broker(ns.addr, 1, &settings);
    let mut client = Client::connect(broker.addr);
    client.create_topic("Cold", 1);
    let body = "c".repeat(16 * 1024);
    for i in 0..1024 {
        assert_eq!(
            send(&mut client, "Cold", 0, &format!("{i}-{body}")),
            response_code::SUCCESS
        );
    }
    // Cold pulls from the start of the queue, by a well-behaved reader: the baseline.
    // (A pull from disk carries at most 32 messages here, within `maxTransferBytesOnMessageInDisk`.)
    let cold_pulls = |reader: &mut Client| {
        let started = Instant::now();
        let mut offset = 0;
        for _ in 0..64 {
            let response = reader.invoke(thruster_tests::wire::pull_request("Cold", 0, offset, 0));
            assert_eq!(response.code, response_code::SUCCESS);
            let records = thruster_client::protocol::message::decode_records(&response.body, true)
                .expect("records");
            assert!(!records.is_empty());
            // Round the queue's 1024 messages again, still from the files.
            offset = (offset + records.len() as i64) % 1024;
        }
        started.elapsed()
    };
    let mut reader = Client::connect(broker.addr);
    let baseline = cold_pulls(&mut reader);
    // The hostile consumer: pipelines cold pulls and never reads an answer.
    let mut hostile = Client::connect(broker.addr);
    for i in 0..64 {
        let request = thruster_tests::wire::pull_request("Cold", 0, (i % 32) * 32, 0);
        hostile
            .send(&request.with_opaque(10_000 + i as i32))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(500)); // let its answers fill the socket buffers
    let during = cold_pulls(&mut reader);
    assert!(
        during <= baseline * 2 + Duration::from_millis(500),
        "cold pulls took {during:?} beside the stalled consumer, {baseline:?} before"
    );
    // Sends keep going, and a segment rolls (8 MiB segments; 16 MiB more).
    for i in 0..1024 {
        assert_eq!(
            send(&mut client, "Cold", 0, &format!("more-{i}-{body}")),
            response_code::SUCCESS
        );
    }
    // A stop drains in its bound although the stalled consumer still holds its socket.
    let started = Instant::now();
    assert!(broker.stop_gracefully(), "clean stop:\n{}", broker.log());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped in {:?}",
        started.elapsed()
    );
    drop(hostile);
}

#[test]
fn async_flush_acknowledged_sends_survive_a_kill_9_of_the_broker() {
    // ASYNC_FLUSH answers a send once its bytes are written to the file (not synced): a crash
    // of the process, unlike a power loss, must lose nothing acknowledged. Several producers
    // per shard, so puts share write-outs (group commit) when the SIGKILL lands.
    const PRODUCERS_PER_SHARD: usize = 4;
    let ns = namesrv();
    // Fixed ports, as a supervisor restarts it: shard 0 on `port`, shard 1 on `port + 10`
    // (their VIP ports 2 below); free HA ports.
    let port = thruster_tests::free_port_block(&[0, 2, 10, 12]) + 2;
    let listen = format!("listenPort={port}");
    let settings = [
        listen.as_str(),
        "flushDiskType=ASYNC_FLUSH",
        "haListenPort=0",
    ];
    let broker = ServerProcess::broker(ns.addr, 2, &settings);
    Client::connect(broker.addr).create_topic("AsyncKill", 8);
    let brokers = thruster_tests::route_brokers(ns.addr, "AsyncKill");
    assert_eq!(brokers.len(), 2, "a broker per shard");
    let body_pad = "a".repeat(400);
    let producers: Vec<_> = brokers
        .iter()
        .enumerate()
        .flat_map(|(shard, b)| (0..PRODUCERS_PER_SHARD).map(move |p| (shard, p, b.clone())))
        .map(|(shard, p, b)| {
            let pad = body_pad.clone();
            std::thread::spawn(move || {
                // Until the connection dies: what was acknowledged, per queue, and the one
                // send in flight then (stored or not, never acknowledged).
                let mut client = Client::connect(b.addr);
                let mut acked = vec![BTreeSet::new(); b.write_queues as usize];
                for i in 0.. {
                    let queue = (i + p as i32) % b.write_queues;
                    let body = format!("s{shard}-p{p}-{i}-{pad}");
                    let request = RemotingCommand::request(
                        rc::SEND_MESSAGE_V2,
                        &v2_header("AsyncKill", queue, None),
                    )
                    .with_body(body.clone().into_bytes());
                    match client.try_invoke(request) {
                        Ok(r) if r.code == response_code::SUCCESS => {
                            acked[queue as usize].insert(body);
                        }
                        Ok(r) => panic!("send refused before the kill: {} {:?}", r.code, r.remark),
                        Err(_) => return (shard, acked, body),
                    }
                }
                unreachable!("the loop ends when the broker dies")
            })
        })
        .collect();
    let mut watcher = Client::connect(broker.addr);
    let loaded = thruster_tests::wait_until(Duration::from_secs(60), || {
        let put: u64 = runtime_info(&mut watcher)["msgPutTotalTodayNow"]
            .parse()
            .unwrap();
        put >= 5_000
    });
    assert!(loaded, "shard 0 stored 5 000 messages under load");
    drop(watcher);
    // SIGKILL mid-stream, then the same program, arguments and store at once.
    let broker = broker.restart();
    assert_eq!(broker.addr.port(), port, "back on the same port");
    let mut acked_per_shard: Vec<Vec<BTreeSet<String>>> = vec![Vec::new(); brokers.len()];
    let mut in_flight = vec![BTreeSet::new(); brokers.len()];
    for producer in producers {
        let (shard, acked, body) = producer.join().unwrap();
        in_flight[shard].insert(body);
        let shard_acked = &mut acked_per_shard[shard];
        shard_acked.resize(acked.len(), BTreeSet::new());
        for (queue, bodies) in acked.into_iter().enumerate() {
            shard_acked[queue].extend(bodies);
        }
    }
    let mut total_acked = 0;
    for (shard, b) in brokers.iter().enumerate() {
        let mut client = Client::connect(b.addr);
        for queue in 0..b.write_queues {
            let bodies: Vec<String> = pull_records(&mut client, "AsyncKill", queue)
                .into_iter()
                .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
                .collect();
            let stored: BTreeSet<String> = bodies.iter().cloned().collect();
            assert_eq!(stored.len(), bodies.len(), "no message stored twice");
            let acked = &acked_per_shard[shard][queue as usize];
            total_acked += acked.len();
            let lost: Vec<_> = acked
                .difference(&stored)
                .map(|b| &b[..b.find("-a").unwrap()])
                .collect();
            assert!(
                lost.is_empty(),
                "shard {shard} queue {queue}: {} of {} acknowledged sends lost: {lost:?}",
                lost.len(),
                acked.len()
            );
            let unacked: Vec<_> = stored.difference(acked).collect();
            assert!(
                unacked.iter().all(|b| in_flight[shard].contains(*b)),
                "shard {shard} queue {queue}: stored but never sent or acknowledged: {unacked:?}"
            );
        }
    }
    assert!(total_acked >= 5_000, "{total_acked} sends acknowledged");
}

/// The process's resident memory (`VmRSS` of /proc/<pid>/status), in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in kB");
    kib << 10
}

const MIB: u64 = 1 << 20;
/// The largest frame (16 MiB, counting its length field).
const FRAME_MAX_BYTES: usize = 16 << 20;

/// Connections that each announce a 16 MiB frame and send `sent_bytes` of it, then stall:
/// each writer thread returns whether its bytes were all taken (by the broker or the socket
/// buffers) within a few seconds. The streams stay open until dropped.
struct SlowFrames {
    /// Held open (closed when dropped).
    _streams: Vec<std::net::TcpStream>,
    writers: Vec<std::thread::JoinHandle<bool>>,
}

impl SlowFrames {
    fn open(addrs: &[std::net::SocketAddr], count: usize, sent_bytes: usize) -> SlowFrames {
        let mut streams = Vec::new();
        let mut writers = Vec::new();
        for i in 0..count {
            let stream = std::net::TcpStream::connect(addrs[i % addrs.len()]).unwrap();
            let mut writer = stream.try_clone().unwrap();
            streams.push(stream);
            writers.push(std::thread::spawn(move || {
                use std::io::Write;
                writer
                    .set_write_timeout(Some(Duration::from_secs(3)))
                    .unwrap();
                let mut frame = ((FRAME_MAX_BYTES - 4) as u32).to_be_bytes().to_vec();
                frame.resize(4 + sent_bytes, b'x');
                writer.write_all(&frame).is_ok()
            }));
        }
        SlowFrames {
            _streams: streams,
            writers,
        }
    }

    /// Waits for every writer; returns how many sent all their bytes.
    fn finished(&mut self) -> usize {
        self.writers
            .drain(..)
            .map(|w| w.join().unwrap())
            .filter(|&all| all)
            .count()
    }
}

/// A broker with a topic on both shards, a client to each shard, and its baseline RSS after
/// some traffic.
fn broker_for_memory_tests(
    ns: &ServerProcess,
    settings: &[&str],
) -> (ServerProcess, Vec<std::net::SocketAddr>, Vec<Client>, u64) {
    let broker = ServerProcess::broker(ns.addr, 2, settings);
    Client::connect(broker.addr).create_topic("Memory", 4);
    let addrs: Vec<_> = thruster_tests::route_brokers(ns.addr, "Memory")
        .iter()
        .map(|b| b.addr)
        .collect();
    let mut clients: Vec<Client> = addrs.iter().map(|a| Client::connect(*a)).collect();
    for i in 0..200 {
        for client in &mut clients {
            assert_eq!(
                send(client, "Memory", i % 2, &format!("warm-{i}")),
                response_code::SUCCESS
            );
        }
    }
    let baseline = rss_bytes(broker.pid());
    (broker, addrs, clients, baseline)
}

#[test]
fn partial_16_mib_frames_stay_within_the_receive_budget_and_others_are_served() {
    // 48 connections each send 8 MiB of a 16 MiB frame and stall: unbounded, 384 MiB of
    // buffers; with 32 MiB of receive budget per shard, two such frames per shard are read
    // and the rest wait in the kernel's socket buffers.
    let ns = namesrv();
    let (mut broker, addrs, mut clients, baseline) =
        broker_for_memory_tests(&ns, &["shardReceiveBufferBytes=33554432"]);
    let mut slow = SlowFrames::open(&addrs, 48, 8 << 20);
    let mut rss_max = 0;
    let mut i = 0;
    let writers_done = loop {
        // A normal client is served meanwhile, on both shards.
        for client in &mut clients {
            let started = Instant::now();
            assert_eq!(
                send(client, "Memory", 0, &format!("meanwhile-{i}")),
                response_code::SUCCESS
            );
            assert!(started.elapsed() < Duration::from_secs(2));
        }
        i += 1;
        rss_max = rss_max.max(rss_bytes(broker.pid()));
        if slow.writers.iter().all(|w| w.is_finished()) {
            break slow.finished();
        }
    };
    // Once the writers are done, what the broker buffers no longer grows: measure again.
    for _ in 0..20 {
        rss_max = rss_max.max(rss_bytes(broker.pid()));
        for client in &mut clients {
            assert_eq!(send(client, "Memory", 1, "after"), response_code::SUCCESS);
        }
    }
    eprintln!(
        "baseline {} MiB, at most {} MiB with 48 stalled 16 MiB frames ({writers_done} of 48 \
         writers sent their 8 MiB)",
        baseline / MIB,
        rss_max / MIB
    );
    assert!(
        writers_done < 48,
        "some writers were held back (the broker stopped reading them)"
    );
    // Budget: 2 shards x 32 MiB; each connection's own small buffers (64 KiB + a read) on top.
    assert!(
        rss_max <= baseline + 64 * MIB + 64 * MIB,
        "RSS {} MiB, baseline {} MiB",
        rss_max / MIB,
        baseline / MIB
    );
    drop(slow);
    assert!(broker.is_running());
}

#[test]
fn memory_of_ended_connections_goes_back_to_the_system() {
    let ns = namesrv();
    let (mut broker, addrs, mut clients, baseline) = broker_for_memory_tests(&ns, &[]);
    // 16 connections with 12 MiB of a 16 MiB frame each: within the default budget (128 MiB
    // per shard), so all of it is buffered.
    let mut slow = SlowFrames::open(&addrs, 16, 12 << 20);
    assert_eq!(slow.finished(), 16, "every partial frame was taken");
    let pid = broker.pid();
    let grown = thruster_tests::wait_until(Duration::from_secs(10), || {
        rss_bytes(pid) >= baseline + 150 * MIB
    });
    let held = rss_bytes(pid);
    assert!(
        grown,
        "the partial frames are buffered: RSS {} MiB, baseline {} MiB",
        held / MIB,
        baseline / MIB
    );
    drop(slow);
    let bound = baseline + 64 * MIB;
    let returned = thruster_tests::wait_until(Duration::from_secs(10), || rss_bytes(pid) <= bound);
    let after_close = rss_bytes(pid);
    assert!(
        returned,
        "RSS {} MiB after the connections closed (held {} MiB, baseline {} MiB)",
        after_close / MIB,
        held / MIB,
        baseline / MIB
    );
    // Connect/close churn, each connection leaving a partial frame behind: RSS stays.
    for round in 0..3 {
        let mut churn = SlowFrames::open(&addrs, 500, 256 << 10);
        churn.finished();
        drop(churn);
        for client in &mut clients {
            assert_eq!(
                send(client, "Memory", 0, &format!("churn-{round}")),
                response_code::SUCCESS
            );
        }
    }
    let settled = thruster_tests::wait_until(Duration::from_secs(10), || rss_bytes(pid) <= bound);
    let after_churn = rss_bytes(pid);
    eprintln!(
        "baseline {} MiB, {} MiB holding 16 partial frames, {} MiB after they closed, {} MiB \
         after 1 500 connections came and went",
        baseline / MIB,
        held / MIB,
        after_close / MIB,
        after_churn / MIB
    );
    assert!(
        settled,
        "RSS {} MiB after the churn, baseline {} MiB",
        after_churn / MIB,
        baseline / MIB
    );
    assert!(broker.is_running());
}

#[test]
fn frames_waiting_for_the_receive_budget_are_closed_at_the_idle_timeout() {
    // One shard, 16 MiB of receive budget: one stalled 16 MiB frame takes it all, six more
    // wait unread. None waits for ever: each connection is closed at its idle timeout,
    // waiting or not (one that gets the budget as another closes is closed at its own), and
    // everyone else is served meanwhile.
    let ns = namesrv();
    let broker = ServerProcess::broker(
        ns.addr,
        1,
        &[
            "shardReceiveBufferBytes=16777216",
            "serverChannelMaxIdleTimeSeconds=1",
        ],
    );
    let mut client = Client::connect(broker.addr);
    client.create_topic("Budget", 1);
    let mut holder = SlowFrames::open(&[broker.addr], 1, 1 << 20);
    assert_eq!(holder.finished(), 1);
    let mut waiting = SlowFrames::open(&[broker.addr], 6, 1 << 20);
    waiting.finished();
    for stream in holder._streams.iter_mut().chain(&mut waiting._streams) {
        assert!(
            closed_within(stream, Duration::from_secs(10)),
            "a connection holding or waiting for the budget was closed"
        );
    }
    assert!(broker
        .log()
        .contains("idle timeout: closing the connection"));
    let mut fresh = Client::connect(broker.addr);
    assert_eq!(
        send(&mut fresh, "Budget", 0, "served"),
        response_code::SUCCESS
    );
}
