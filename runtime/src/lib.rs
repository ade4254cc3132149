//! The only module that names glommio.
//!
//! Everything else in the broker uses these names: reactors (one executor pinned per core),
//! tasks, timers, TCP sockets, bounded local channels and semaphores. glommio is barely
//! maintained; swapping it means rewriting this module, not the broker.

pub mod memory;
pub mod tasks;
pub mod watermark;

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use glommio::{LocalExecutorBuilder, Placement};

mod shared_stream;
pub use shared_stream::SharedStream;

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
    /// Poll this long with nothing to do before sleeping. Sleeping and waking costs a
    /// context switch per sleep (a fence since glommio is vendored without its `membarrier`,
    /// third_party/README.md); polling costs the core. 0: sleep at once.
    pub spin_before_park_us: u64,
}

impl ReactorConfig {
    pub fn new(name: impl Into<String>) -> ReactorConfig {
        ReactorConfig {
            name: name.into(),
            cpu: None,
            io_memory_bytes: 2 << 20,
            spin_before_park_us: 0,
        }
    }
}

/// The CPUs this process may run on (its affinity mask, as `taskset` or a cgroup's cpuset
/// leaves it), ascending. Reactors are pinned to these, so a broker started on cores 2–3 keeps
/// off cores 0–1 (where an operator put the clients, say).
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size_bytes = std::mem::size_of::<libc::cpu_set_t>();
    if unsafe { libc::sched_getaffinity(0, size_bytes, &mut set) } != 0 {
        return Err(io::Error::other(format!(
            "sched_getaffinity: {}",
            io::Error::last_os_error()
        )));
    }
    let cpu_count_max = size_bytes * 8;
    // SAFETY: every index is below the set's size in bits.
    Ok((0..cpu_count_max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Runs `make_future()` on a new reactor thread and waits for its result.
pub fn run_reactor<T, F, Fut>(config: ReactorConfig, make_future: F) -> io::Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    spawn_reactor(config, make_future)?.join()
}

/// Makes writes past a file-size limit (RLIMIT_FSIZE) fail with EFBIG instead of killing the
/// process with SIGXFSZ: the store reports a refused write and survives it, as it does ENOSPC.
pub fn ignore_file_size_signal() {
    // SAFETY: installs SIG_IGN for one signal; no handler code runs.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
}

/// Runs `future` in the background on the current reactor.
pub fn spawn_detached(future: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(future).detach();
}

/// Yields to other tasks if this one has used up its time slice. Work that can complete without
/// ever waiting (an async-mode put into memory) calls it so background I/O tasks still run.
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await
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
        // Called while a server starts, before its reactor serves anything, so waiting for a
        // port a killed process still holds blocks nothing else.
        Ok(TcpListener::from_std(bind_at_start(addr)?))
    }

    /// Takes over a listener bound elsewhere (by the binary, before the reactors start).
    pub fn from_std(std_listener: StdTcpListener) -> TcpListener {
        // SAFETY: the fd comes from a listener we own and give up here; glommio takes it over.
        let inner = unsafe { glommio::net::TcpListener::from_raw_fd(std_listener.into_raw_fd()) };
        TcpListener { inner }
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

/// An aligned buffer that can be written with O_DIRECT.
pub type IoBuffer = glommio::io::DmaBuffer;

/// A zeroed, aligned buffer from the heap, for long-lived use (CommitLog chunks).
pub fn alloc_io_buffer_long_lived(size_bytes: usize) -> IoBuffer {
    let mut buffer = glommio::allocate_dma_buffer_global(size_bytes);
    buffer.as_bytes_mut().fill(0);
    buffer
}

/// An aligned buffer for one I/O (from the reactor's registered arena when it has room).
pub fn alloc_io_buffer(size_bytes: usize) -> IoBuffer {
    glommio::allocate_dma_buffer(size_bytes)
}

/// Helper threads per reactor (its blocking pool). Sends of file ranges may take all but one
/// (`SENDFILE_SLOTS`), so a peer that stops reading can never hold up the file work
/// (fdatasync of ConsumeQueues, checkpoints, directory syncs) that the last one is kept for.
pub const HELPER_THREADS: usize = 4;
/// File-range sends in flight per reactor.
pub const SENDFILE_SLOTS: usize = HELPER_THREADS - 1;
const _: () = assert!(SENDFILE_SLOTS >= 1 && SENDFILE_SLOTS < HELPER_THREADS);
/// A file-range send whose peer reads nothing for this long fails (the connection closes):
/// a consumer that stops reading holds a send slot at most this long.
pub const SENDFILE_STALL_MS_MAX: u64 = 10_000;

thread_local! {
    static SENDFILE_PERMITS: std::rc::Rc<Semaphore> =
        std::rc::Rc::new(Semaphore::new(SENDFILE_SLOTS as u64));
}

/// Runs blocking work (msync, statvfs, directory fsync) on the reactor's helper threads so the
/// reactor keeps serving. A panic in `work` is raised again in the awaiting task: glommio 0.9
/// would leave that task waiting for ever and lose the helper thread (glommio issue #37).
pub async fn spawn_blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> R {
    let caught = glommio::executor()
        .spawn_blocking(move || std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)))
        .await;
    caught.unwrap_or_else(|payload| std::panic::resume_unwind(payload))
}

#[cfg(test)]
mod blocking_tests {
    use super::*;
    use futures_lite::FutureExt;

    #[test]
    fn a_panicking_blocking_call_reaches_its_caller_and_the_helpers_stay() {
        let (panicked, hung, after) = run_reactor(ReactorConfig::new("blocking-test"), || async {
            let (mut panicked, mut hung) = (0, 0);
            let deadline = Duration::from_secs(10);
            // More panics than the reactor has helper threads: none is lost to them.
            for _ in 0..8 {
                let call = spawn_blocking(|| -> u32 { panic!("helper work failed") });
                match timeout(deadline, std::panic::AssertUnwindSafe(call).catch_unwind()).await {
                    Some(Err(_)) => panicked += 1,
                    Some(Ok(_)) => {}
                    None => hung += 1,
                }
            }
            let after = timeout(deadline, spawn_blocking(|| 42)).await;
            (panicked, hung, after)
        })
        .unwrap();
        assert_eq!((panicked, hung, after), (8, 0, Some(42)));
    }
}

/// A file opened with O_DIRECT, read and written through io_uring. Errors name the file and
/// the offset.
pub struct DirectFile {
    inner: glommio::io::DmaFile,
    path: std::path::PathBuf,
    /// Opened with O_DSYNC: a completed write is durable, `fdatasync` has nothing to do.
    dsync: bool,
}

impl DirectFile {
    /// Opens `path` for reading and writing, creating it if missing.
    pub async fn open(path: &std::path::Path) -> io::Result<DirectFile> {
        Self::open_with(path, false).await
    }

    /// Like `open`, with O_DSYNC: each write completes once durable, one I/O instead of a
    /// write and an fdatasync (measured here: ~20 % more write+sync throughput at 72 KiB,
    /// ~50 µs lower p50), which is what SYNC_FLUSH's group commits want.
    pub async fn open_dsync(path: &std::path::Path) -> io::Result<DirectFile> {
        Self::open_with(path, true).await
    }

    async fn open_with(path: &std::path::Path, dsync: bool) -> io::Result<DirectFile> {
        probe_device_once(path).await?;
        let mut options = glommio::io::OpenOptions::new();
        options.read(true).write(true).create(true);
        if dsync {
            options.custom_flags(libc::O_DSYNC);
        }
        let inner = options
            .dma_open(path)
            .await
            .map_err(|e| context(e, "opening", path, 0))?;
        Ok(DirectFile {
            inner,
            path: path.to_owned(),
            dsync,
        })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Writes all of `buffer` at `pos` (both aligned).
    pub async fn write_at(&self, buffer: IoBuffer, pos: u64) -> io::Result<()> {
        self.write_shared_at(Rc::new(buffer), pos).await
    }

    /// Like `write_at`, keeping the buffer shared (no copy).
    pub async fn write_shared_at(&self, buffer: Rc<IoBuffer>, pos: u64) -> io::Result<()> {
        let len = buffer.len();
        let written = self
            .inner
            .write_rc_at(buffer.clone(), pos)
            .await
            .map_err(|e| context(e, "writing", &self.path, pos))?;
        self.finish_short_write(&buffer, written, len, pos).await
    }

    /// A short write (the file system ran out of space, or a file-size limit) is continued,
    /// as any writer does, so that the error that stopped it is reported (ENOSPC, EFBIG)
    /// rather than a byte count. The rest is copied: glommio writes whole buffers only.
    async fn finish_short_write(
        &self,
        buffer: &IoBuffer,
        mut written: usize,
        len: usize,
        pos: u64,
    ) -> io::Result<()> {
        // O_DIRECT continues only from a block boundary; nothing written means no cause to
        // find.
        while written < len && written > 0 && written.is_multiple_of(4096) {
            let at = pos + written as u64;
            let mut rest = alloc_io_buffer(len - written);
            rest.as_bytes_mut()
                .copy_from_slice(&buffer.as_bytes()[written..]);
            match self.inner.write_at(rest, at).await {
                Ok(0) => break,
                Ok(more) => written += more,
                Err(e) => return Err(context(e, "writing", &self.path, at)),
            }
        }
        if written < len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "short write to {} at {pos}: {written} of {len} bytes",
                    self.path.display()
                ),
            ));
        }
        Ok(())
    }

    /// Reads up to `len` bytes at `pos` (any alignment); fewer at the end of the file.
    pub async fn read_at(&self, pos: u64, len: usize) -> io::Result<bytes::Bytes> {
        let result = self
            .inner
            .read_at(pos, len)
            .await
            .map_err(|e| context(e, "reading", &self.path, pos))?;
        Ok(bytes::Bytes::copy_from_slice(&result))
    }

    /// Makes completed writes durable (nothing to do for an O_DSYNC file).
    pub async fn fdatasync(&self) -> io::Result<()> {
        if self.dsync {
            return Ok(());
        }
        self.inner
            .fdatasync()
            .await
            .map_err(|e| context(e, "fdatasync", &self.path, 0))
    }

    pub async fn size_bytes(&self) -> io::Result<u64> {
        self.inner
            .file_size()
            .await
            .map_err(|e| context(e, "stat", &self.path, 0))
    }

    /// Allocates the file's blocks up to `size_bytes` (fallocate, size extended). O_DIRECT
    /// writes into allocated blocks are submitted inline by io_uring; writes that must allocate
    /// or grow the file are punted to its worker threads, which run on the submitting core.
    pub async fn allocate(&self, size_bytes: u64) -> io::Result<()> {
        self.inner
            .pre_allocate(size_bytes, false)
            .await
            .map_err(|e| context(e, "allocating", &self.path, size_bytes))
    }

    pub async fn truncate(&self, size_bytes: u64) -> io::Result<()> {
        self.inner
            .truncate(size_bytes)
            .await
            .map_err(|e| context(e, "truncating", &self.path, size_bytes))
    }

    /// The O_DIRECT alignment for offsets and lengths.
    pub fn alignment(&self) -> u64 {
        self.inner.alignment()
    }
}

thread_local! {
    static PROBED_DEVICES: std::cell::RefCell<std::collections::HashSet<u64>> = Default::default();
}

/// glommio decides once per device whether O_DIRECT reads may use its polled ring, by reading
/// the first DMA file opened there. When that file is empty the kernel answers the probe with
/// an early success, glommio caches "pollable", and every later read on a device without poll
/// queues (virtio disks, this machine's) fails with EOPNOTSUPP. So the first open per device
/// is of a 4 KiB file with real data, which makes the probe see the truth.
async fn probe_device_once(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let device = std::fs::metadata(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("stat {}: {e}", dir.display())))?
        .dev();
    if PROBED_DEVICES.with(|p| p.borrow().contains(&device)) {
        return Ok(());
    }
    let probe = dir.join(format!(".thruster-io-probe-{}", std::process::id()));
    std::fs::write(&probe, [0u8; 4096])
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", probe.display())))?;
    let opened = glommio::io::DmaFile::open(&probe).await;
    let _ = std::fs::remove_file(&probe);
    let file = opened.map_err(|e| context(e, "probing", &probe, 0))?;
    let _ = file.close().await;
    PROBED_DEVICES.with(|p| p.borrow_mut().insert(device));
    Ok(())
}

fn context(
    error: glommio::GlommioError<()>,
    what: &str,
    path: &std::path::Path,
    pos: u64,
) -> io::Error {
    let error = io::Error::from(error);
    io::Error::new(
        error.kind(),
        format!("{what} {} at {pos}: {error}", path.display()),
    )
}

impl TcpListener {
    /// Binds `addr` with `SO_REUSEPORT`, so every shard of one broker can accept on the same
    /// port and the kernel spreads connections over them. The caller checks first that no
    /// other process holds the port (see `reserve_port`).
    ///
    /// `SO_REUSEADDR` too: the connections such a listener accepted inherit its options, and a
    /// restarted broker's port check (which binds with `SO_REUSEADDR`, as std does) must not
    /// collide with them while they sit in TIME-WAIT or FIN-WAIT-2 after a crash (without it a
    /// restart on the same port failed for 60-75 s).
    pub fn bind_shared(addr: SocketAddr) -> io::Result<TcpListener> {
        let listener = bind_reusing(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("binding {addr} (SO_REUSEPORT): {e}")))?;
        Ok(TcpListener::from_std(listener))
    }
}

/// A listening socket with `SO_REUSEADDR` and `SO_REUSEPORT`, backlog 1024.
fn bind_reusing(addr: SocketAddr) -> io::Result<StdTcpListener> {
    use std::os::fd::FromRawFd;
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain socket calls on a descriptor owned here; on any error it is closed (the
    // `OwnedFd` drops) before returning.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        for option in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
            let rc = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let (storage, len) = sockaddr_of(addr);
        if libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::listen(fd, 1024) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(StdTcpListener::from(owned))
    }
}

/// `addr` as a `sockaddr_storage` and its length.
fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; the right variant is written into it.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Checks that `addr` is free by binding it without `SO_REUSEPORT` (which fails if anyone,
/// even a SO_REUSEPORT socket, holds it), and resolves port 0 to a concrete free port.
pub fn reserve_port(addr: SocketAddr) -> io::Result<SocketAddr> {
    bind_at_start(addr)?.local_addr()
}

/// How long a starting broker waits for a port that is still in use. A killed process's
/// io_uring instances are torn down by the kernel in deferred work after the process is gone,
/// and a listening socket with an accept pending in a ring lives until then: a restart at once
/// would otherwise find its own ports taken (seen here: `kill -9` then an immediate start).
pub const PORT_RELEASE_WAIT_MS: u64 = 10_000;
/// Between two tries while a port is in use.
const PORT_RETRY_INTERVAL_MS: u64 = 20;

/// Binds a listener for a server that is starting (blocking; not on a reactor), waiting up
/// to [`PORT_RELEASE_WAIT_MS`] while the port is in use.
pub fn bind_at_start(addr: SocketAddr) -> io::Result<StdTcpListener> {
    let started = std::time::Instant::now();
    let mut warned = false;
    loop {
        match StdTcpListener::bind(addr) {
            Ok(listener) => {
                if warned {
                    tracing::info!(%addr, waited_ms = started.elapsed().as_millis() as u64, "port released");
                }
                return Ok(listener);
            }
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && started.elapsed() < Duration::from_millis(PORT_RELEASE_WAIT_MS) =>
            {
                if !warned {
                    tracing::warn!(%addr, wait_ms_max = PORT_RELEASE_WAIT_MS, "port in use: waiting for it (a killed broker's sockets are released by the kernel shortly after it exits)");
                    warned = true;
                }
                std::thread::sleep(Duration::from_millis(PORT_RETRY_INTERVAL_MS));
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("binding {addr}: {e}"))),
        }
    }
}

/// Builder of the channels between shards: every shard joins once, then holds a sender to
/// and a receiver from each other shard. `T` crosses threads, so it must be `Send`.
pub type MeshBuilder<T> =
    glommio::channels::channel_mesh::MeshBuilder<T, glommio::channels::channel_mesh::Full>;
/// This shard's senders to every other shard.
pub type MeshSenders<T> = glommio::channels::channel_mesh::Senders<T>;
/// A receiver of messages from one other shard.
pub type MeshReceiver<T> = glommio::channels::shared_channel::ConnectedReceiver<T>;

/// A mesh for `shard_count` shards, each channel holding at most `capacity` messages.
pub fn mesh<T: Send + 'static>(shard_count: usize, capacity: usize) -> MeshBuilder<T> {
    MeshBuilder::full(shard_count, capacity)
}

/// Joins the mesh from the current reactor: returns the senders (whose `peer_id()` is this
/// shard's id) and one receiver per other shard, with that shard's id.
pub async fn join_mesh<T: Send + 'static>(
    builder: MeshBuilder<T>,
) -> io::Result<(MeshSenders<T>, Vec<(usize, MeshReceiver<T>)>)> {
    let (senders, mut receivers) = builder
        .join()
        .await
        .map_err(|e| io::Error::other(format!("joining the shard mesh: {e}")))?;
    let streams = receivers.streams();
    Ok((senders, streams))
}

/// A range of a file to send: (file, position, length).
pub type FileRange = (std::sync::Arc<std::fs::File>, u64, usize);

/// Sends `ranges` in order to the socket with sendfile(2): the data goes from the page cache
/// to the socket without passing through user space. sendfile blocks (glommio sockets are not
/// driven by readiness), so all of a reply's ranges go in one call on a helper thread, never
/// on the reactor itself; at most `SENDFILE_SLOTS` such calls run at once (the last helper
/// thread stays for file work), and one whose peer reads nothing for `SENDFILE_STALL_MS_MAX`
/// fails.
///
/// `socket_fd` is the stream's descriptor (`socket_fd`); the caller keeps the stream open and
/// writes nothing else to it until this completes.
pub async fn send_file_ranges(
    socket_fd: std::os::fd::RawFd,
    ranges: Vec<FileRange>,
) -> io::Result<()> {
    // One of the helper threads stays free for file work whatever the peers do.
    let permits = SENDFILE_PERMITS.with(|p| p.clone());
    let _permit = permits
        .acquire_static_permit(1)
        .await
        .map_err(|e| io::Error::other(format!("sendfile slots: {e}")))?;
    spawn_blocking(move || {
        for (file, pos, len) in ranges {
            sendfile_all(socket_fd, &file, pos, len)?;
        }
        Ok(())
    })
    .await
}

fn sendfile_all(
    socket_fd: std::os::fd::RawFd,
    file: &std::fs::File,
    pos: u64,
    len: usize,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let file_fd = file.as_raw_fd();
    let mut offset = pos as libc::off_t;
    let end = pos + len as u64;
    let mut last_progress = std::time::Instant::now();
    while (offset as u64) < end {
        let remaining = (end - offset as u64) as usize;
        // SAFETY: both fds are open for the duration (the caller keeps the socket, and the
        // file is borrowed); `offset` is a valid pointer.
        let sent = unsafe { libc::sendfile(socket_fd, file_fd, &mut offset, remaining) };
        if sent > 0 {
            last_progress = std::time::Instant::now();
            continue;
        }
        if sent == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("sendfile: file ends at {offset}, before {end}"),
            ));
        }
        let error = io::Error::last_os_error();
        match error.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => {
                let stalled_ms = last_progress.elapsed().as_millis() as u64;
                if stalled_ms >= SENDFILE_STALL_MS_MAX {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("sendfile: the peer read nothing for {stalled_ms} ms"),
                    ));
                }
                let mut poll = libc::pollfd {
                    fd: socket_fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                let wait_ms = (SENDFILE_STALL_MS_MAX - stalled_ms).min(1_000) as i32;
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut poll, 1, wait_ms) };
            }
            _ => return Err(io::Error::new(error.kind(), format!("sendfile: {error}"))),
        }
    }
    Ok(())
}

/// The descriptor of a stream, for `send_file_ranges`.
pub fn socket_fd(stream: &TcpStream) -> std::os::fd::RawFd {
    use std::os::fd::AsRawFd;
    stream.as_raw_fd()
}

/// Completes once `flag` is set by another thread (signal handling). Polled every
/// `poll_interval`: a shutdown request may wait that long, and nothing else depends on it.
pub async fn wait_for_flag(flag: &std::sync::atomic::AtomicBool, poll_interval: Duration) {
    while !flag.load(std::sync::atomic::Ordering::Acquire) {
        sleep(poll_interval).await;
    }
}

/// Connects to `addr` from the current reactor.
pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    glommio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| io::Error::other(format!("connecting to {addr}: {e}")))
}

/// Runs `future` with a deadline; `None` when it did not finish in time.
pub async fn timeout<T>(duration: Duration, future: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        sleep(duration).await;
        None
    })
    .await
}

/// A reactor started by `spawn_reactor`.
pub struct ReactorHandle<T: Send + 'static> {
    name: String,
    inner: glommio::ExecutorJoinHandle<T>,
}

impl<T: Send + 'static> ReactorHandle<T> {
    /// Waits for the reactor's future to finish.
    pub fn join(self) -> io::Result<T> {
        self.inner
            .join()
            .map_err(|e| io::Error::other(format!("reactor {} failed: {e}", self.name)))
    }
}

/// Starts a reactor thread running `make_future()`, without waiting for it.
pub fn spawn_reactor<T, F, Fut>(
    config: ReactorConfig,
    make_future: F,
) -> io::Result<ReactorHandle<T>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let placement = match config.cpu {
        Some(cpu) => Placement::Fixed(cpu),
        None => Placement::Unbound,
    };
    let mut builder = LocalExecutorBuilder::new(placement)
        .name(&config.name)
        .io_memory(config.io_memory_bytes)
        .blocking_thread_pool_placement(glommio::PoolPlacement::Unbound(HELPER_THREADS));
    if config.spin_before_park_us > 0 {
        builder = builder.spin_before_park(Duration::from_micros(config.spin_before_park_us));
    }
    let inner = builder
        .spawn(make_future)
        .map_err(|e| io::Error::other(format!("starting reactor {}: {e}", config.name)))?;
    Ok(ReactorHandle {
        name: config.name,
        inner,
    })
}
