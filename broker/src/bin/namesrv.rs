//! `thruster-namesrv`: a RocketMQ-compatible name server.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use thruster_broker::namesrv::{self, NamesrvConfig};
use thruster_broker::runtime::{self, ReactorConfig};

#[derive(Parser, Debug)]
#[command(
    name = "thruster-namesrv",
    version,
    about = "RocketMQ-compatible name server"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:9876")]
    listen: SocketAddr,
    /// How often to look for silent brokers, ms.
    #[arg(long, default_value_t = 5_000)]
    scan_interval_ms: u64,
    /// Silence after which a broker is removed, ms.
    #[arg(long, default_value_t = 120_000)]
    broker_expire_ms: u64,
    /// Where KV config is persisted (in memory only when absent).
    #[arg(long)]
    kv_config_path: Option<PathBuf>,
    /// Put `orderTopicConf` from the ORDER_TOPIC_CONFIG namespace into route data.
    #[arg(long)]
    order_message_enable: bool,
    /// Pin the reactor to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// I/O memory the reactor registers with io_uring, bytes.
    #[arg(long, default_value_t = 2 << 20)]
    io_memory_bytes: usize,
}

fn main() -> ExitCode {
    thruster_broker::runtime::memory::return_large_frees_to_the_system();
    thruster_broker::logging::init("info");
    let args = Args::parse();
    if args.scan_interval_ms == 0 || args.broker_expire_ms == 0 {
        eprintln!("thruster-namesrv: --scan-interval-ms and --broker-expire-ms must be positive");
        return ExitCode::from(2);
    }
    let config = NamesrvConfig {
        listen_addr: args.listen,
        scan_not_active_broker_interval_ms: args.scan_interval_ms,
        broker_channel_expired_time_ms: args.broker_expire_ms,
        order_message_enable: args.order_message_enable,
        kv_config_path: args.kv_config_path,
        ..NamesrvConfig::default()
    };
    let reactor = ReactorConfig {
        cpu: args.cpu,
        io_memory_bytes: args.io_memory_bytes,
        ..ReactorConfig::new("namesrv")
    };
    let result = runtime::run_reactor(reactor, move || async move {
        namesrv::run(config, |addr| {
            // The one stdout line: tests and scripts read the bound address from it.
            println!("thruster-namesrv listening on {addr}");
            let _ = std::io::stdout().flush();
        })
        .await
    });
    match result.and_then(|served| served) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("thruster-namesrv: {error}");
            ExitCode::FAILURE
        }
    }
}
