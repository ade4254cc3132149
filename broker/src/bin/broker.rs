//! `thruster-broker`: a RocketMQ-compatible broker, one reactor (shard) per core.
//!
//! `thruster-broker --standalone` also runs a name server in the process: the one-command
//! start. Settings come from RocketMQ's `broker.conf` (`-c`), then `--set key=value`
//! overrides, then `-n`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use thruster_broker::broker::{check_store_layout, run_shard, Listen, ShardStart};
use thruster_broker::config::{parse_namesrv_addrs, Applied, BrokerConfig, BrokerRole};
use thruster_broker::namesrv::{self, NamesrvConfig};
use thruster_broker::runtime::{self, ReactorConfig};
use thruster_broker::shard::MESH_CHANNEL_CAPACITY;
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "thruster-broker",
    version,
    about = "RocketMQ-compatible broker"
)]
struct Args {
    /// A RocketMQ broker.conf (Java properties: key=value).
    #[arg(short = 'c', long = "config")]
    config: Option<std::path::PathBuf>,
    /// Name servers, `host:port;host:port` (overrides namesrvAddr).
    #[arg(short = 'n', long = "namesrv-addr")]
    namesrv_addr: Option<String>,
    /// Any broker.conf key, applied after the file: `--set listenPort=10921`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Also run a name server in this process and register with it.
    #[arg(long)]
    standalone: bool,
    /// Where the embedded name server listens (with --standalone).
    #[arg(long, default_value = "127.0.0.1:9876")]
    namesrv_listen: SocketAddr,
}

fn main() -> ExitCode {
    thruster_broker::runtime::memory::return_large_frees_to_the_system();
    thruster_broker::logging::init("info");
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("thruster-broker: {error}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(args: &Args) -> Result<BrokerConfig, String> {
    let mut config = BrokerConfig::default();
    let mut unused = Vec::new();
    if let Some(path) = &args.config {
        unused.extend(config.apply_file(path)?);
    }
    for pair in &args.set {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("--set {pair:?}: expected KEY=VALUE"))?;
        let applied = config.set(key.trim(), value)?;
        if applied != Applied::Used {
            unused.push((key.trim().to_owned(), applied));
        }
    }
    if let Some(addrs) = &args.namesrv_addr {
        config.namesrv_addrs = parse_namesrv_addrs(addrs)?;
    }
    config.validate()?;
    config.load_io_properties()?;
    for (key, applied) in unused {
        match applied {
            Applied::NotSupported => {
                warn!(
                    key,
                    "broker.conf key accepted but not supported yet: it has no effect"
                )
            }
            _ => warn!(key, "unknown broker.conf key ignored"),
        }
    }
    Ok(config)
}

fn run(args: Args) -> Result<(), String> {
    let mut config = load_config(&args)?;
    check_store_layout(&config)?;
    block_stop_signals()?;

    if args.standalone {
        let addr = start_embedded_namesrv(&args, &config)?;
        config.namesrv_addrs.push(addr);
    }
    if config.namesrv_addrs.is_empty() {
        warn!("no name server configured (namesrvAddr, -n or --standalone): clients cannot find this broker");
    }

    let free_ports = config.listen_port == 0;
    let mut listens = bind_listeners(&mut config)?;
    let mut ha_listeners = bind_ha_listeners(&config, &listens, free_ports)?;
    let ha_addrs: Arc<Vec<Option<SocketAddr>>> = Arc::new(
        ha_listeners
            .iter()
            .map(|l| {
                l.as_ref()
                    .and_then(|l| l.local_addr().ok())
                    .map(|a| SocketAddr::new(config.broker_ip1, a.port()))
            })
            .collect(),
    );
    let broker_addr = config.broker_addr();
    let shard_count = config.shards;
    let cpus =
        runtime::allowed_cpus().map_err(|e| format!("finding the CPUs to pin shards to: {e}"))?;
    let config = Arc::new(config);
    let stop = Arc::new(AtomicBool::new(false));
    let mesh = runtime::mesh(shard_count, MESH_CHANNEL_CAPACITY);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let shard_addrs = Arc::new(std::sync::OnceLock::new());
    let mut handles = Vec::new();
    if let ShardListens::Own(own) = &listens {
        // Known before any shard starts: shard 0 registers them all before reporting ready.
        let addrs = own.iter().map(|(addr, _)| *addr).collect();
        let _ = shard_addrs.set(addrs);
    }
    for i in 0..shard_count {
        let (broker_addr, listen) = match &mut listens {
            ShardListens::Shared(addrs) => (broker_addr, Listen::Shared(addrs.clone())),
            ShardListens::Own(own) => {
                let (addr, listeners) = &mut own[i];
                (*addr, Listen::Own(std::mem::take(listeners)))
            }
        };
        let start = ShardStart {
            config: config.clone(),
            broker_addr,
            listen,
            mesh: mesh.clone(),
            shard_count,
            stop: stop.clone(),
            ready: ready_tx.clone(),
            shard_addrs: shard_addrs.clone(),
            ha_listener: ha_listeners[i].take(),
            ha_addrs: ha_addrs.clone(),
        };
        let reactor = ReactorConfig {
            cpu: (config.pin_shards && shard_count <= cpus.len()).then(|| cpus[i]),
            io_memory_bytes: config.io_memory_bytes,
            spin_before_park_us: config.shard_spin_before_park_us,
            ..ReactorConfig::new(format!("shard-{i}"))
        };
        let handle =
            runtime::spawn_reactor(reactor, move || run_shard(start)).map_err(|e| e.to_string())?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut own_addrs = vec![None; shard_count];
    for _ in 0..shard_count {
        match ready_rx.recv() {
            Ok(Ok((id, addr))) => own_addrs[id] = Some(addr),
            Ok(Err(error)) => {
                stop.store(true, Ordering::Release);
                return Err(format!("a shard failed to start: {error}"));
            }
            Err(_) => return Err("a shard exited during start".into()),
        }
    }
    let own_addrs: Vec<SocketAddr> = own_addrs.into_iter().flatten().collect();
    assert_eq!(
        own_addrs.len(),
        shard_count,
        "every shard reported its address"
    );
    let _ = shard_addrs.set(own_addrs.clone());
    info!(%broker_addr, shards = shard_count, broker_per_shard = config.broker_per_shard, shard_addrs = ?own_addrs, "broker serving");
    // The one stdout line: tests and scripts read the address from it.
    println!("thruster-broker listening on {broker_addr}");
    let _ = std::io::stdout().flush();

    let signal = wait_for_stop_signal();
    info!(signal, "stop signal received");
    stop.store(true, Ordering::Release);
    let mut failed = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => failed = Some(error.to_string()),
            Err(error) => failed = Some(error.to_string()),
        }
    }
    match failed {
        Some(error) => Err(format!("shutdown: {error}")),
        None => {
            info!("broker stopped cleanly");
            Ok(())
        }
    }
}

/// Where the shards accept, bound or checked before any shard starts.
enum ShardListens {
    /// One broker name: the shared addresses every shard binds with SO_REUSEPORT.
    Shared(Vec<SocketAddr>),
    /// A broker per shard: each shard's address and its listeners (port, VIP port).
    Own(Vec<(SocketAddr, Vec<std::net::TcpListener>)>),
}

/// Binds (a broker per shard) or reserves (one name) the ports, failing clearly if another
/// process holds one; sets `listenPort` to the port actually bound, so a free port (0) is
/// known from here on.
fn bind_listeners(config: &mut BrokerConfig) -> Result<ShardListens, String> {
    let requested_port = config.listen_port;
    if !config.broker_per_shard {
        let main_addr = runtime::reserve_port(SocketAddr::new(config.bind_address, requested_port))
            .map_err(|e| e.to_string())?;
        config.listen_port = main_addr.port();
        let mut addrs = vec![main_addr];
        if config.vip_channel_enable {
            let vip_port = requested_port.saturating_sub(2);
            let vip = runtime::reserve_port(SocketAddr::new(config.bind_address, vip_port))
                .map_err(|e| format!("VIP port (listenPort-2): {e}"))?;
            addrs.push(vip);
        }
        return Ok(ShardListens::Shared(addrs));
    }
    let mut own = Vec::with_capacity(config.shards);
    for shard in 0..config.shards {
        let port = config.shard_listen_port(shard).ok_or_else(|| {
            format!("shard {shard}'s port (listenPort + {shard} x shardPortStep) is past 65535")
        })?;
        let bind = |port: u16, what: &str| {
            runtime::bind_at_start(SocketAddr::new(config.bind_address, port))
                .map_err(|e| format!("shard {shard}'s {what} port: {e}"))
        };
        let listener = bind(port, "main")?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?.port();
        let mut listeners = vec![listener];
        // A free port (tests) has no VIP port beside it for clients to find.
        if config.vip_channel_enable && port >= 2 {
            listeners.push(bind(port - 2, "VIP")?);
        }
        own.push((SocketAddr::new(config.broker_ip1, bound), listeners));
    }
    config.listen_port = own[0].0.port();
    Ok(ShardListens::Own(own))
}

/// A master's HA listeners, one per shard (`haListenPort`, by default each shard's port + 1);
/// none for a slave.
fn bind_ha_listeners(
    config: &BrokerConfig,
    listens: &ShardListens,
    free_ports: bool,
) -> Result<Vec<Option<std::net::TcpListener>>, String> {
    // A slave takes no slaves; one broker name over several shards cannot be replicated (shard
    // i pairs with shard i), so it listens for none either.
    if config.broker_role == BrokerRole::Slave || (!config.broker_per_shard && config.shards > 1) {
        return Ok((0..config.shards).map(|_| None).collect());
    }
    let mut out = Vec::with_capacity(config.shards);
    for shard in 0..config.shards {
        let shard_port = match listens {
            _ if free_ports => 0,
            ShardListens::Own(own) => own[shard].0.port(),
            ShardListens::Shared(addrs) => addrs[0].port(),
        };
        let port = config
            .shard_ha_port(shard, shard_port)
            .ok_or_else(|| format!("shard {shard}'s HA port is past 65535"))?;
        let listener = runtime::bind_at_start(SocketAddr::new(config.bind_address, port))
            .map_err(|e| format!("shard {shard}'s HA port: {e}"))?;
        out.push(Some(listener));
    }
    Ok(out)
}

fn start_embedded_namesrv(args: &Args, config: &BrokerConfig) -> Result<SocketAddr, String> {
    let namesrv_config = NamesrvConfig {
        listen_addr: args.namesrv_listen,
        kv_config_path: Some(
            config
                .store_path_root_dir
                .join("namesrv")
                .join("kvConfig.json"),
        ),
        ..NamesrvConfig::default()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let reactor = ReactorConfig::new("namesrv");
    let error_tx = tx.clone();
    // The name server thread lives as long as the process; it is not joined.
    let _handle = runtime::spawn_reactor(reactor, move || async move {
        let result = namesrv::run(namesrv_config, |addr| {
            let _ = tx.send(Ok(addr));
        })
        .await;
        if let Err(error) = result {
            let _ = error_tx.send(Err(error.to_string()));
        }
    })
    .map_err(|e| e.to_string())?;
    let addr = rx
        .recv()
        .map_err(|_| "the embedded name server exited".to_string())?
        .map_err(|e| format!("embedded name server: {e}"))?;
    println!("thruster-namesrv listening on {addr}");
    info!(%addr, "embedded name server listening");
    Ok(addr)
}

/// SIGINT and SIGTERM are blocked in every thread (reactors inherit the mask) and taken by
/// the main thread with sigwait, so a stop is handled at one place, outside the reactors.
fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset operations on a local, zero-initialized set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

fn block_stop_signals() -> Result<(), String> {
    thruster_broker::runtime::ignore_file_size_signal();
    let set = signal_set();
    // SAFETY: a valid set; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(format!("blocking SIGINT/SIGTERM: error {rc}"));
    }
    Ok(())
}

fn wait_for_stop_signal() -> &'static str {
    let set = signal_set();
    let mut signal = 0;
    // SAFETY: a valid set and out-pointer.
    unsafe { libc::sigwait(&set, &mut signal) };
    if signal == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    }
}
