//! Reliability against a hostile world: restarts at once on the same ports, clients that
//! misbehave, inputs built to hurt.

use std::time::{Duration, Instant};

use thruster_client::protocol::{request_code as rc, response_code, RemotingCommand};
use thruster_tests::wire::{pull_records, v2_header};
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
