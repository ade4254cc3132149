//! Harness for multi-process tests: start the real binaries on ephemeral loopback ports with
//! temp dirs, and talk to them with a small blocking remoting client.
//!
//! Binaries are found next to the test executable's directory (`target/<profile>/`).
//! `cargo test --workspace` builds them before running any test because their packages have
//! integration tests of their own (e.g. `broker/tests/cli.rs`); `cargo test -p thruster-tests`
//! alone does not, hence the hint in [`binary`].

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use thruster_client::protocol::{decode_frame, encode, RemotingCommand, FRAME_MAX_BYTES_DEFAULT};

/// Brokers started by tests use 64 MiB commit log segments (overridable by a later `--set`):
/// segments are allocated (or, under SYNC_FLUSH, written) whole when prepared, and the
/// default 1 GiB per shard per broker adds up when tests run side by side.
const TEST_SEGMENT_SETTING: &str = "mappedFileSizeCommitLog=67108864";
/// The `--set` arguments every test broker gets (free port, shard count, test segments), then
/// `extra`, which may override them.
fn broker_settings(shards: usize, extra: &[&str]) -> Vec<String> {
    let shards = format!("shards={shards}");
    ["listenPort=0", shards.as_str(), TEST_SEGMENT_SETTING]
        .into_iter()
        .chain(extra.iter().copied())
        .flat_map(|setting| ["--set".to_string(), setting.to_string()])
        .collect()
}

/// How long a started process may take to report its listening address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a test waits for any one response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// `target/<profile>/`, where the workspace binaries are.
pub fn binary_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/
    exe.parent()
        .and_then(Path::parent)
        .expect("target profile dir")
        .to_path_buf()
}

/// Path of a workspace binary.
pub fn binary(name: &str) -> PathBuf {
    let path = binary_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace` (or `cargo build --workspace --bins`) first",
        path.display()
    );
    path
}

pub mod cpp_client;
pub mod wire;

/// UPDATE_AND_CREATE_TOPIC with `queues` read and write queues, read-write, from TBW102.
pub fn create_topic_request(topic: &str, queues: i32) -> RemotingCommand {
    use thruster_client::protocol::header::admin::CreateTopicRequestHeader;
    RemotingCommand::request(
        thruster_client::protocol::request_code::UPDATE_AND_CREATE_TOPIC,
        &CreateTopicRequestHeader {
            topic: topic.into(),
            default_topic: "TBW102".into(),
            read_queue_nums: queues,
            write_queue_nums: queues,
            perm: 6,
            topic_filter_type: "SINGLE_TAG".into(),
            topic_sys_flag: None,
            order: false,
            attributes: None,
            force: None,
        },
    )
}

/// A server process started for one test; killed when dropped.
pub struct ServerProcess {
    name: String,
    args: Vec<String>,
    child: Child,
    pub addr: SocketAddr,
    /// Every `<what> listening on <addr>` line, in order (`--standalone` prints two).
    pub listening: Vec<(String, SocketAddr)>,
    pub dir: tempfile::TempDir,
    log_path: PathBuf,
}

impl ServerProcess {
    /// Starts `name` with `args` (which should make it listen on port 0) and waits for its
    /// `... listening on <addr>` line on stdout. Its stderr goes to a log file in `dir`.
    pub fn start(name: &str, args: &[&str]) -> ServerProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        ServerProcess::start_in(name, args, dir, 1)
    }

    /// Starts `name` in `dir` and waits for `lines` listening lines.
    fn start_in(
        name: &str,
        args: Vec<String>,
        dir: tempfile::TempDir,
        lines: usize,
    ) -> ServerProcess {
        let log_path = dir.path().join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let mut child = Command::new(binary(name))
            .args(&args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some((what, addr)) = line.split_once(" listening on ") {
                    let _ = tx.send((what.trim().to_owned(), addr.trim().to_owned()));
                }
            }
        });
        let mut listening = Vec::new();
        while listening.len() < lines {
            match rx.recv_timeout(START_TIMEOUT) {
                Ok((what, addr)) => {
                    listening.push((what, addr.parse().expect("listening address")))
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{name} did not report a listening address within {START_TIMEOUT:?}; log:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
            }
        }
        ServerProcess {
            name: name.to_owned(),
            args,
            child,
            addr: listening[0].1,
            listening,
            dir,
            log_path,
        }
    }

    /// Starts `thruster-broker` on free ports in a temp dir, registering with `namesrv`, with
    /// `shards` shards and any extra `--set` overrides.
    pub fn broker(namesrv: SocketAddr, shards: usize, extra: &[&str]) -> ServerProcess {
        ServerProcess::broker_with_namesrvs(&namesrv.to_string(), shards, extra)
    }

    /// `broker` registering with the name servers `namesrvs` (`host:port;host:port`).
    pub fn broker_with_namesrvs(namesrvs: &str, shards: usize, extra: &[&str]) -> ServerProcess {
        let mut args = vec!["-n".to_string(), namesrvs.to_string()];
        args.extend(broker_settings(shards, extra));
        let dir = tempfile::tempdir().expect("temp dir");
        ServerProcess::start_in("thruster-broker", args, dir, 1)
    }

    /// `thruster-broker --standalone` on free ports: `listening` holds the name server (first)
    /// and the broker.
    pub fn standalone_broker(shards: usize) -> ServerProcess {
        let mut args = vec![
            "--standalone".to_string(),
            "--namesrv-listen".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(broker_settings(shards, &[]));
        let dir = tempfile::tempdir().expect("temp dir");
        ServerProcess::start_in("thruster-broker", args, dir, 2)
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited with 0.
    pub fn stop_gracefully(&mut self) -> bool {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    return false;
                }
            }
        }
    }

    /// Starts the same program again, in the same directory, with the same arguments, after
    /// this one has stopped (the port may differ when it was 0).
    pub fn restart(mut self) -> ServerProcess {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Keep the directory: the old handle gets an empty stand-in to delete.
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        let (name, args, lines) = (self.name.clone(), self.args.clone(), self.listening.len());
        drop(self);
        ServerProcess::start_in(&name, args, dir, lines)
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL, and waits for the process to be gone (its store and ports stay as they were).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id (for signals a test sends itself: SIGSTOP, SIGCONT).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGSTOP, then waits until every thread of the process is stopped: `kill` returns
    /// before the signal takes effect, and a thread running on another core may go on for a
    /// moment (answering a peer, say).
    pub fn pause(&self) {
        let pid = self.pid();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
        let stopped = wait_until(Duration::from_secs(10), || {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                return false;
            };
            tasks.flatten().all(|task| {
                std::fs::read_to_string(task.path().join("stat"))
                    .ok()
                    .and_then(|stat| {
                        let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
                        Some(state == "T")
                    })
                    .unwrap_or(false)
            })
        });
        assert!(
            stopped,
            "{} (pid {pid}) did not stop after SIGSTOP",
            self.name
        );
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGCONT) };
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- server log ({}) ---\n{}",
                self.log_path.display(),
                self.log()
            );
        }
    }
}

/// A blocking remoting client for tests: one request at a time.
pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
    next_opaque: i32,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream =
            TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        stream
            .set_read_timeout(Some(RESPONSE_TIMEOUT))
            .expect("read timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buf: BytesMut::new(),
            next_opaque: 1,
        }
    }

    /// The server side of an accepted connection, for tests that stand in for a server: frames
    /// are read and written the same way.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buf: BytesMut::new(),
            next_opaque: 1,
        }
    }

    /// GET_CONSUMER_LIST_BY_GROUP: the client ids the broker knows in `group` (none when the
    /// broker refuses, e.g. for an unknown group).
    pub fn consumer_ids(&mut self, group: &str) -> Vec<String> {
        use thruster_client::protocol::body::{decode_lenient, ConsumerListBody};
        use thruster_client::protocol::header::client::GetConsumerListByGroupRequestHeader;
        use thruster_client::protocol::{request_code, response_code};
        let response = self.invoke(RemotingCommand::request(
            request_code::GET_CONSUMER_LIST_BY_GROUP,
            &GetConsumerListByGroupRequestHeader {
                consumer_group: group.into(),
            },
        ));
        if response.code != response_code::SUCCESS {
            return Vec::new();
        }
        decode_lenient::<ConsumerListBody>("consumer list", &response.body)
            .expect("consumer list body")
            .consumer_id_list
    }

    /// Sends `request` with a fresh opaque and returns the response with that opaque.
    /// UPDATE_AND_CREATE_TOPIC with `queues` read and write queues; panics unless it succeeds.
    pub fn create_topic(&mut self, topic: &str, queues: i32) {
        use thruster_client::protocol::response_code;
        let response = self.invoke(create_topic_request(topic, queues));
        assert_eq!(
            response.code,
            response_code::SUCCESS,
            "creating {topic}: {:?}",
            response.remark
        );
    }

    pub fn invoke(&mut self, request: RemotingCommand) -> RemotingCommand {
        self.try_invoke(request).expect("a response")
    }

    /// `invoke` that reports a failed or closed connection instead of panicking (for tests
    /// that kill the server under load).
    pub fn try_invoke(&mut self, mut request: RemotingCommand) -> io::Result<RemotingCommand> {
        request.opaque = self.next_opaque;
        self.next_opaque += 1;
        self.send(&request)?;
        loop {
            let response = self.read_command()?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the response",
                )
            })?;
            if response.is_response() && response.opaque == request.opaque {
                return Ok(response);
            }
        }
    }

    pub fn send(&mut self, command: &RemotingCommand) -> io::Result<()> {
        let mut wire = BytesMut::new();
        encode(command, &mut wire).expect("encodable");
        self.send_bytes(&wire)
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Half-closes the sending side (the server then sees end of input).
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }

    /// Reads the next frame; `Ok(None)` when the server closed the connection.
    pub fn read_command(&mut self) -> io::Result<Option<RemotingCommand>> {
        let deadline = Instant::now() + RESPONSE_TIMEOUT;
        loop {
            if let Some(frame) = decode_frame(&mut self.buf, FRAME_MAX_BYTES_DEFAULT)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                let command = frame
                    .into_command()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                return Ok(Some(command));
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no frame in time"));
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}

/// `topic`'s route from the name server at `namesrv`; `None` when it has none.
pub fn route(
    namesrv: SocketAddr,
    topic: &str,
) -> Option<thruster_client::protocol::body::TopicRouteData> {
    use thruster_client::protocol::body::decode_lenient;
    use thruster_client::protocol::header::namesrv::GetRouteInfoRequestHeader;
    use thruster_client::protocol::{request_code, response_code};
    let response = Client::connect(namesrv).invoke(RemotingCommand::request(
        request_code::GET_ROUTEINFO_BY_TOPIC,
        &GetRouteInfoRequestHeader {
            topic: topic.into(),
            accept_standard_json_only: None,
        },
    ));
    (response.code == response_code::SUCCESS)
        .then(|| decode_lenient("route", &response.body).expect("route body"))
}

/// A broker in a topic's route: its name, master address and write queues.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteBroker {
    pub name: String,
    pub addr: SocketAddr,
    pub write_queues: i32,
}

/// The brokers of `topic`'s route, sorted by name (with a broker per shard, shard order).
pub fn route_brokers(namesrv: SocketAddr, topic: &str) -> Vec<RouteBroker> {
    let route = route(namesrv, topic).unwrap_or_else(|| panic!("no route for {topic}"));
    let mut brokers: Vec<RouteBroker> = route
        .broker_datas
        .iter()
        .map(|b| RouteBroker {
            name: b.broker_name.clone(),
            addr: b
                .master_addr()
                .expect("a master")
                .parse()
                .expect("an address"),
            write_queues: route
                .queue_datas
                .iter()
                .find(|q| q.broker_name == b.broker_name)
                .map_or(0, |q| q.write_queue_nums),
        })
        .collect();
    brokers.sort();
    brokers
}

/// A port `p` such that every `p + offset` is free right now (for a server that must come back
/// on the same ports after a restart, so it cannot take port 0). Another process may still take
/// one before the server binds it; the ephemeral range makes that unlikely.
pub fn free_port_block(offsets: &[u16]) -> u16 {
    for _ in 0..100 {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let base = probe.local_addr().expect("bound").port();
        drop(probe);
        let free = offsets.iter().all(|&offset| {
            base.checked_add(offset)
                .is_some_and(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        });
        if free {
            return base;
        }
    }
    panic!("no block of free ports found in 100 tries");
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes; returns whether it held.
/// For outcomes that happen on the server's own schedule (expiry scans), not a sleep-and-hope.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every message body in every queue of `topic` from offset 0, queue by queue (empty while the
/// topic has no route; a failed pull ends that queue).
pub async fn pull_bodies(
    consumer: &thruster_client::tokio::PullConsumer,
    topic: &str,
) -> Vec<String> {
    let Ok(queues) = consumer.queues(topic).await else {
        return Vec::new();
    };
    let mut got = Vec::new();
    for queue in queues {
        let mut offset = 0;
        loop {
            let Ok(result) = consumer.pull(&queue, "*", offset, 32, None).await else {
                break;
            };
            got.extend(
                result
                    .messages
                    .iter()
                    .map(|m| String::from_utf8_lossy(&m.body).into_owned()),
            );
            offset = result.next_begin_offset;
            if result.status != thruster_client::tokio::PullStatus::Found {
                break;
            }
        }
    }
    got
}
