//! The broker takes its store I/O settings from `io-properties.json` (`thruster-tune probe`):
//! started on a probed store it reports the values derived from the figures in
//! GET_BROKER_RUNTIME_INFO, and serves with them; without the file it reports the defaults.

use std::collections::BTreeMap;
use std::path::Path;

use thruster_client::protocol::message::encode_properties;
use thruster_client::protocol::{request_code as rc, response_code, RemotingCommand};
use thruster_tests::wire::{pull_records, runtime_info, v2_header};
use thruster_tests::{Client, ServerProcess};
use thruster_tuning::io_properties::{Figure, IoProperties, Kind, StoreIoSettings, FORMAT_VERSION};
use thruster_tuning::probe;

fn start_broker(store: &Path, extra: &[&str]) -> (ServerProcess, ServerProcess) {
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let store_setting = format!("storePathRootDir={}", store.display());
    let mut settings = vec![store_setting.as_str()];
    settings.extend(extra);
    let broker = ServerProcess::broker(namesrv.addr, 1, &settings);
    (namesrv, broker)
}

fn reported(info: &BTreeMap<String, String>) -> (String, StoreIoSettings) {
    let number = |key: &str| -> u64 {
        info.get(key)
            .unwrap_or_else(|| panic!("{key} missing"))
            .parse()
            .unwrap_or_else(|e| panic!("{key}: {e}"))
    };
    (
        info["storeIoSettingsSource"].clone(),
        StoreIoSettings {
            chunk_bytes: number("storeChunkBytes") as usize,
            writes_in_flight_max: number("storeWritesInFlightMax") as usize,
            group_commit_bytes: number("storeGroupCommitBytes"),
        },
    )
}

/// Sends `count` messages to queue 0 of `topic` and reads them back.
fn round_trip(client: &mut Client, topic: &str, count: usize) {
    client.create_topic(topic, 1);
    for i in 0..count {
        let header = v2_header(topic, 0, Some(encode_properties([("TAGS", "t")])));
        let response = client.invoke(
            RemotingCommand::request(rc::SEND_MESSAGE_V2, &header)
                .with_body(format!("message {i}").into_bytes()),
        );
        assert_eq!(
            response.code,
            response_code::SUCCESS,
            "{:?}",
            response.remark
        );
    }
    let bodies: Vec<String> = pull_records(client, topic, 0)
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    let expected: Vec<String> = (0..count).map(|i| format!("message {i}")).collect();
    assert_eq!(bodies, expected);
}

#[test]
fn a_broker_on_a_probed_store_reports_and_uses_the_probed_settings() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let properties = probe::run(&store, 2.0, &mut |_| {}).expect("probe");
    properties.write(&store).unwrap();
    let expected = IoProperties::read(&store)
        .unwrap()
        .expect("written")
        .store_settings()
        .unwrap();

    let (_namesrv, broker) = start_broker(&store, &["flushDiskType=SYNC_FLUSH"]);
    let mut client = Client::connect(broker.addr);
    let (source, settings) = reported(&runtime_info(&mut client));
    assert_eq!(source, "io-properties.json");
    // The harness's 64 MiB segments and the default 64 MiB window hold every chunk candidate.
    assert_eq!(settings, expected);
    round_trip(&mut client, "Probed", 50);
}

#[test]
fn settings_follow_the_file_and_default_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();

    let (_namesrv, broker) = start_broker(&store, &[]);
    let mut client = Client::connect(broker.addr);
    let defaults = StoreIoSettings {
        chunk_bytes: 256 << 10,
        writes_in_flight_max: 32,
        group_commit_bytes: 0,
    };
    assert_eq!(
        reported(&runtime_info(&mut client)),
        ("defaults".into(), defaults)
    );
    drop(client);
    drop(broker);

    // A deep device: 512 KiB blocks reach its bandwidth, at 32 in flight; O_DSYNC writes cost
    // the same up to 16 KiB.
    let mut figures = vec![];
    for (block, mb) in [
        (64 << 10, 300.0),
        (256 << 10, 800.0),
        (512 << 10, 1400.0),
        (1 << 20, 1450.0),
    ] {
        figures.push(Figure::flat(Kind::SeqWrite, block, 4, mb, 100));
    }
    for (depth, mb) in [(1, 400.0), (8, 2000.0), (32, 3000.0)] {
        figures.push(Figure::flat(Kind::SeqWrite, 512 << 10, depth, mb, 100));
    }
    for (block, p50) in [(4 << 10, 50), (16 << 10, 90), (64 << 10, 300)] {
        figures.push(Figure::flat(Kind::DsyncPrewritten, block, 1, 1.0, p50));
    }
    IoProperties {
        version: FORMAT_VERSION,
        dir: store.display().to_string(),
        measured_at_ms: 1,
        budget_s: 1.0,
        figures,
    }
    .write(&store)
    .unwrap();
    let (_namesrv, broker) = start_broker(&store, &["flushDiskType=SYNC_FLUSH"]);
    let mut client = Client::connect(broker.addr);
    let tuned = StoreIoSettings {
        chunk_bytes: 512 << 10,
        writes_in_flight_max: 128,
        group_commit_bytes: 16 << 10,
    };
    assert_eq!(
        reported(&runtime_info(&mut client)),
        ("io-properties.json".into(), tuned)
    );
    round_trip(&mut client, "Tuned", 200);
    drop(client);
    drop(broker);

    std::fs::write(store.join("io-properties.json"), "{ not json").unwrap();
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let output = std::process::Command::new(thruster_tests::binary("thruster-broker"))
        .args([
            "-n",
            &namesrv.addr.to_string(),
            "--set",
            "listenPort=0",
            "--set",
        ])
        .arg(format!("storePathRootDir={}", store.display()))
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "a broken io-properties.json stops the start"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not an io-properties file"), "{stderr}");
}
