//! The name server: a route table built only from broker registrations, served on one reactor.
//! Name servers never talk to each other; brokers register with every one of them.

pub mod config;
pub mod kv_config;
pub mod processor;
pub mod route_info;

use std::io;
use std::rc::Rc;
use std::time::Duration;

use tracing::info;

pub use config::NamesrvConfig;
use kv_config::KvConfig;
use processor::NamesrvProcessor;

use crate::remoting::{self, ServerConfig};
use crate::runtime::{self, TcpListener};

/// Binds, reports the bound address through `on_listening`, then serves forever.
/// Must run on a reactor.
pub async fn run(
    config: NamesrvConfig,
    on_listening: impl FnOnce(std::net::SocketAddr),
) -> io::Result<()> {
    let kv = KvConfig::load(config.kv_config_path.clone())?;
    let listener = TcpListener::bind(config.listen_addr)?;
    let local_addr = listener.local_addr()?;
    on_listening(local_addr);
    info!(%local_addr, "name server listening");
    let processor = Rc::new(NamesrvProcessor::new(config, kv));

    let scanner = processor.clone();
    runtime::spawn_detached(async move {
        loop {
            let interval_ms = scanner.config.borrow().scan_not_active_broker_interval_ms;
            runtime::sleep(Duration::from_millis(interval_ms)).await;
            let now_ms = runtime::now_ms().max(0) as u64;
            for expired in scanner.routes.borrow_mut().scan_not_active(now_ms) {
                info!(cluster = %expired.cluster, addr = %expired.addr, "broker expired: no registration within its timeout");
            }
        }
    });

    remoting::serve(
        listener,
        processor,
        ServerConfig::default(),
        futures_lite::future::pending(),
    )
    .await;
    Ok(())
}
