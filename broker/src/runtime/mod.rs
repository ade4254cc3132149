//! The only module that names glommio.
//!
//! Everything else in the broker uses these names: reactors (one executor pinned per core),
//! tasks, timers, TCP sockets, bounded local channels and semaphores. glommio is barely
//! maintained; swapping it means rewriting this module, not the broker.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use glommio::{LocalExecutorBuilder, Placement};

/// A connected TCP stream of the current reactor (implements `futures_lite` AsyncRead/Write).
pub type TcpStream = glommio::net::TcpStream;
/// Sending half of a bounded channel between tasks of one reactor; clones share it, and the
/// channel closes when the last clone is dropped.
pub type LocalSender<T> = Rc<glommio::channels::local_channel::LocalSender<T>>;
/// Receiving half of a bounded channel between tasks of one reactor.
pub type LocalReceiver<T> = glommio::channels::local_channel::LocalReceiver<T>;
/// A counting semaphore local to one reactor.
pub type Semaphore = glommio::sync::Semaphore;
/// A permit taken from an `Rc<Semaphore>`; released on drop.
pub type StaticPermit = glommio::sync::StaticPermit;

/// How one reactor is started.
#[derive(Debug, Clone)]
pub struct ReactorConfig {
    pub name: String,
    /// Pin to this CPU; `None` leaves the thread unpinned.
    pub cpu: Option<usize>,
    /// Memory glommio registers with io_uring for its I/O buffers. glommio's default is 10 MiB,
    /// more than an 8 MiB `RLIMIT_MEMLOCK` allows for an unprivileged process.
    pub io_memory_bytes: usize,
}

impl ReactorConfig {
    pub fn new(name: impl Into<String>) -> ReactorConfig {
        ReactorConfig {
            name: name.into(),
            cpu: None,
            io_memory_bytes: 2 << 20,
        }
    }
}

/// Runs `make_future()` on a new reactor thread and waits for its result.
pub fn run_reactor<T, F, Fut>(config: ReactorConfig, make_future: F) -> io::Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let placement = match config.cpu {
        Some(cpu) => Placement::Fixed(cpu),
        None => Placement::Unbound,
    };
    LocalExecutorBuilder::new(placement)
        .name(&config.name)
        .io_memory(config.io_memory_bytes)
        .spawn(make_future)
        .map_err(|e| io::Error::other(format!("starting reactor {}: {e}", config.name)))?
        .join()
        .map_err(|e| io::Error::other(format!("reactor {} failed: {e}", config.name)))
}

/// Runs `future` in the background on the current reactor.
pub fn spawn_detached(future: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(future).detach();
}

/// Waits for `duration` on the current reactor.
pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await
}

/// Wall-clock milliseconds since the Unix epoch (RocketMQ timestamps).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A listening TCP socket.
pub struct TcpListener {
    inner: glommio::net::TcpListener,
}

impl TcpListener {
    /// Binds `addr` *without* `SO_REUSEPORT` (glommio's own `bind` sets it, which would let a
    /// second server silently share a port with the first).
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        let std_listener = StdTcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("binding {addr}: {e}")))?;
        // SAFETY: the fd comes from a listener we own and give up here; glommio takes it over.
        let inner = unsafe { glommio::net::TcpListener::from_raw_fd(std_listener.into_raw_fd()) };
        Ok(TcpListener { inner })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr().map_err(io::Error::from)
    }

    /// Accepts the next connection, with its peer address.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let stream = self.inner.accept().await.map_err(io::Error::from)?;
        let peer = stream.peer_addr().map_err(io::Error::from)?;
        Ok((stream, peer))
    }
}

/// Sets TCP_NODELAY: responses are small and latency is the product.
pub fn set_nodelay(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true).map_err(io::Error::from)
}

/// Shuts a stream down in both directions.
pub async fn shutdown(stream: &TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Both).await;
}

/// A bounded channel between tasks of one reactor: senders wait while it holds `capacity` items.
pub fn bounded_channel<T>(capacity: usize) -> (LocalSender<T>, LocalReceiver<T>) {
    assert!(capacity > 0, "a channel needs room for one item");
    let (sender, receiver) = glommio::channels::local_channel::new_bounded(capacity);
    (Rc::new(sender), receiver)
}
