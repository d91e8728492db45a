//! The tokio driver of the TURN core. The server runs as shards, one per thread, each a
//! current-thread runtime with its own TURN core, its own SO_REUSEPORT listener sockets
//! (the kernel keeps a client's 5-tuple on one of them) and the relay sockets its core
//! binds, so a packet is handled from receive to send on one thread with no lock shared
//! between shards. Quotas, bandwidth and the nonce key are shared ([`CoreShared`]).
//! Datagrams are read in batches and sent from a per-thread queue flushed once per batch
//! ([`crate::udp_io`]); relay sockets are read by one task per shard
//! ([`crate::relay_sockets`]); TCP and TLS client legs are served by [`crate::stream`].

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Credentials, Nonces};
use crate::policy::PeerPolicy;
use crate::relay_sockets::{Ports, RelayAddrs, RelayTable, Reserved, read_relays};
use crate::server::{CoreShared, FiveTuple, ServerConfig, TurnServer};
use crate::stream::{StreamLimits, tcp_listener};
use crate::udp_io;

/// Kernel buffer of listener sockets: they carry every client's traffic, in bursts.
const LISTENER_BUFFER: usize = 4 << 20;
/// Receive calls per listener wakeup before other tasks of the shard get a turn.
const LISTENER_CALLS: usize = 2;

/// Where and how to run.
#[derive(Debug, Clone)]
pub struct TurnOptions {
    pub listen_udp: Vec<SocketAddr>,
    pub listen_tcp: Vec<SocketAddr>,
    /// TLS listeners (RFC 8656 §3.1: TURN over TLS, usually port 5349); need `tls`.
    pub listen_tls: Vec<SocketAddr>,
    /// Certificate and key for the TLS listeners.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Address relay sockets bind to (IPv4).
    pub relay_ip: IpAddr,
    /// Address advertised in XOR-RELAYED-ADDRESS; defaults to `relay_ip`.
    pub external_ip: Option<IpAddr>,
    /// IPv6 relay address, if IPv6 relaying is offered.
    pub relay_ip_v6: Option<IpAddr>,
    /// Relay port range, inclusive.
    pub ports: (u16, u16),
    pub server: ServerConfig,
    pub credentials: Credentials,
    pub policy: PeerPolicy,
    /// Shards, each a thread with its own sockets and core; 0 for one per core.
    pub threads: usize,
    /// TCP and TLS client connections at once, in total and per client IP.
    pub max_stream_connections: usize,
    pub max_stream_connections_per_ip: usize,
}

/// State shared by the driver's tasks.
pub struct Shared {
    pub(crate) core: Mutex<TurnServer<Ports>>,
    /// Relay sockets by advertised address (shared with the core's [`Ports`]).
    pub(crate) relays: RelayTable,
    /// UDP listeners by local address.
    pub(crate) udp: RwLock<HashMap<SocketAddr, Arc<AsyncFd<std::net::UdpSocket>>>>,
    /// What the host's UDP stack offers (GSO), for batched sends and receives.
    pub(crate) udp_state: quinn_udp::UdpSocketState,
    /// TCP client connections by 5-tuple.
    pub(crate) tcp: RwLock<HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>>,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    /// Datagrams that found a full socket buffer (or a gone socket) when sent.
    pub(crate) send_drops: std::sync::atomic::AtomicU64,
    /// Stream connections refused by the caps.
    pub(crate) streams_refused: std::sync::atomic::AtomicU64,
    pub(crate) stream_limits: Arc<StreamLimits>,
}

/// A running TURN server: one shard per thread.
pub struct TurnService {
    shards: Vec<Arc<Shared>>,
    threads: parking_lot::Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Bound UDP listener addresses.
    pub udp_addrs: Vec<SocketAddr>,
    /// Bound TCP listener addresses.
    pub tcp_addrs: Vec<SocketAddr>,
    /// Bound TLS listener addresses.
    pub tls_addrs: Vec<SocketAddr>,
}

/// The listener sockets of one shard, bound before its thread starts.
#[derive(Default)]
struct ShardSockets {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
    tls: Vec<std::net::TcpListener>,
}

fn socket_for(
    addr: SocketAddr,
    ty: socket2::Type,
    reuse_port: bool,
) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), ty, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    if reuse_port {
        // Shards listen on the same address; the kernel keeps each client 5-tuple on one
        // socket, so a client's allocation and its packets stay on one shard.
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Binds `n` sockets to `addr` (port 0: the port the first one got); returns them and the
/// bound address.
fn bind_set<T>(
    addr: SocketAddr,
    n: usize,
    bind: impl Fn(SocketAddr, bool) -> io::Result<(T, SocketAddr)>,
) -> io::Result<(Vec<T>, SocketAddr)> {
    let (first, local) = bind(addr, n > 1)?;
    let mut all = vec![first];
    for _ in 1..n {
        all.push(bind(local, true)?.0);
    }
    Ok((all, local))
}

fn bind_udp_listener(
    addr: SocketAddr,
    reuse_port: bool,
) -> io::Result<(std::net::UdpSocket, SocketAddr)> {
    let socket = socket_for(addr, socket2::Type::DGRAM, reuse_port)?;
    let _ = socket.set_recv_buffer_size(LISTENER_BUFFER);
    let _ = socket.set_send_buffer_size(LISTENER_BUFFER);
    socket.bind(&addr.into())?;
    let socket: std::net::UdpSocket = socket.into();
    let local = socket.local_addr()?;
    Ok((socket, local))
}

fn bind_tcp_listener(
    addr: SocketAddr,
    reuse_port: bool,
) -> io::Result<(std::net::TcpListener, SocketAddr)> {
    let socket = socket_for(addr, socket2::Type::STREAM, reuse_port)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    let listener: std::net::TcpListener = socket.into();
    let local = listener.local_addr()?;
    Ok((listener, local))
}

impl TurnService {
    /// Binds every listener and starts one shard per thread (`threads`, 0: one per core).
    pub async fn start(opts: TurnOptions, shutdown: CancellationToken) -> io::Result<Self> {
        let mut opts = opts;
        // Where DF cannot be set, DONT-FRAGMENT is refused rather than ignored (§7.2).
        opts.server.dont_fragment &= crate::dont_fragment::SUPPORTED;
        let mut policy = opts.policy.clone();
        policy.relay_ports = opts.ports;
        let advertised = opts.external_ip.unwrap_or(opts.relay_ip);
        // The server's own addresses are not peers (except for relay-to-relay). Loopback
        // is exempt when the operator allowed loopback peers: that setting exists for
        // single-machine setups and tests where peers share the server's address.
        let listeners = opts
            .listen_udp
            .iter()
            .chain(&opts.listen_tcp)
            .chain(&opts.listen_tls)
            .map(SocketAddr::ip);
        for ip in [opts.relay_ip, advertised]
            .into_iter()
            .chain(opts.relay_ip_v6)
            .chain(listeners)
        {
            let exempt = ip.is_unspecified() || (policy.allow_loopback && ip.is_loopback());
            if !exempt && !policy.own.contains(&ip) {
                policy.own.push(ip);
            }
        }
        let n = match opts.threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        };
        let mut per_shard: Vec<ShardSockets> = (0..n).map(|_| ShardSockets::default()).collect();
        let (mut udp_addrs, mut tcp_addrs, mut tls_addrs) = (Vec::new(), Vec::new(), Vec::new());
        for addr in &opts.listen_udp {
            let (set, local) = bind_set(*addr, n, bind_udp_listener)?;
            udp_addrs.push(local);
            for (shard, s) in per_shard.iter_mut().zip(set) {
                shard.udp.push(s);
            }
        }
        for addr in &opts.listen_tcp {
            let (set, local) = bind_set(*addr, n, bind_tcp_listener)?;
            tcp_addrs.push(local);
            for (shard, s) in per_shard.iter_mut().zip(set) {
                shard.tcp.push(s);
            }
        }
        if opts.tls.is_some() {
            for addr in &opts.listen_tls {
                let (set, local) = bind_set(*addr, n, bind_tcp_listener)?;
                tls_addrs.push(local);
                for (shard, s) in per_shard.iter_mut().zip(set) {
                    shard.tls.push(s);
                }
            }
        }
        let common = Arc::new(CoreShared::default());
        let reserved: Reserved = Arc::default();
        let stream_limits = Arc::new(StreamLimits::new(
            opts.max_stream_connections,
            opts.max_stream_connections_per_ip,
        ));
        let nonces = Nonces::new(opts.server.nonce_lifetime.as_secs());
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut threads = Vec::with_capacity(n);
        for (i, sockets) in per_shard.into_iter().enumerate() {
            let (opts, policy, shutdown, ready) = (
                opts.clone(),
                policy.clone(),
                shutdown.clone(),
                ready_tx.clone(),
            );
            let (common, nonces, reserved) = (common.clone(), nonces.clone(), reserved.clone());
            let stream_limits = stream_limits.clone();
            let thread = std::thread::Builder::new()
                .name(format!("turn-{i}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        let core = |ports| {
                            TurnServer::new(
                                opts.server.clone(),
                                opts.credentials.clone(),
                                policy,
                                ports,
                                Instant::now(),
                            )
                            .with_shared(common, nonces)
                        };
                        let shard = match run_shard(
                            &opts,
                            sockets,
                            advertised,
                            reserved,
                            stream_limits,
                            shutdown.clone(),
                            core,
                        ) {
                            Ok(shard) => shard,
                            Err(e) => {
                                let _ = ready.send(Err(e));
                                return;
                            }
                        };
                        let _ = ready.send(Ok(shard.clone()));
                        shutdown.cancelled().await;
                        shard.tracker.close();
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(5),
                            shard.tracker.wait(),
                        )
                        .await;
                    });
                })?;
            threads.push(thread);
        }
        drop(ready_tx);
        // Each shard reports once (its sender lives as long as the shard).
        let mut shards = Vec::with_capacity(n);
        for _ in 0..n {
            match ready_rx.recv().await {
                Some(result) => shards.push(result?),
                None => break,
            }
        }
        if shards.len() != n {
            return Err(io::Error::other("a TURN shard failed to start"));
        }
        Ok(Self {
            shards,
            threads: parking_lot::Mutex::new(threads),
            udp_addrs,
            tcp_addrs,
            tls_addrs,
        })
    }

    /// Waits for every shard to stop after the shutdown token was cancelled.
    pub async fn stopped(&self) {
        let threads = std::mem::take(&mut *self.threads.lock());
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }

    pub fn shards(&self) -> &[Arc<Shared>] {
        &self.shards
    }
}

/// Builds one shard on the current (shard) runtime and starts its tasks.
fn run_shard(
    opts: &TurnOptions,
    sockets: ShardSockets,
    advertised: IpAddr,
    reserved: Reserved,
    stream_limits: Arc<StreamLimits>,
    shutdown: CancellationToken,
    core: impl FnOnce(Ports) -> TurnServer<Ports>,
) -> io::Result<Arc<Shared>> {
    let poll = mio::Poll::new()?;
    let addrs = RelayAddrs {
        bind_v4: opts.relay_ip,
        advertised_v4: advertised,
        v6: opts.relay_ip_v6,
    };
    let relays = RelayTable::default();
    let ports = Ports::new(
        poll.registry().try_clone()?,
        relays.clone(),
        addrs,
        opts.ports,
        reserved,
    );
    let shared = Arc::new(Shared {
        core: Mutex::new(core(ports)),
        relays,
        udp: RwLock::new(HashMap::new()),
        udp_state: udp_io::probe_state()?,
        tcp: RwLock::new(HashMap::new()),
        tracker: TaskTracker::new(),
        shutdown,
        send_drops: Default::default(),
        streams_refused: Default::default(),
        stream_limits,
    });
    for socket in sockets.udp {
        let local = socket.local_addr()?;
        let socket = Arc::new(register_readable(socket)?);
        shared.udp.write().insert(local, socket.clone());
        shared
            .tracker
            .spawn(udp_listener(shared.clone(), local, socket));
    }
    shared
        .tracker
        .spawn(read_relays(shared.clone(), poll, addrs));
    for listener in sockets.tcp {
        let listener = TcpListener::from_std(listener)?;
        shared
            .tracker
            .spawn(tcp_listener(shared.clone(), listener, None));
    }
    if let Some(tls) = &opts.tls {
        for listener in sockets.tls {
            let listener = TcpListener::from_std(listener)?;
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            shared
                .tracker
                .spawn(tcp_listener(shared.clone(), listener, Some(acceptor)));
        }
    }
    shared.tracker.spawn(timers(shared.clone()));
    Ok(shared)
}

/// Registers a socket or poller that owns its descriptor with the shard's runtime, for
/// read readiness. Only owning types are passed (a `std` socket, a `mio::Poll`): the
/// descriptor stays open and the same for the `AsyncFd`'s whole life, which is what the
/// unsafe successor of this constructor asks its callers to promise.
#[allow(deprecated)]
pub(crate) fn register_readable<T: std::os::fd::AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    AsyncFd::with_interest(inner, tokio::io::Interest::READABLE)
}

/// Reads a UDP listener in batches and runs each batch through the core.
async fn udp_listener(
    shared: Arc<Shared>,
    local: SocketAddr,
    socket: Arc<AsyncFd<std::net::UdpSocket>>,
) {
    let mut more = false;
    loop {
        if !more {
            tokio::select! {
                _ = shared.shutdown.cancelled() => break,
                ready = socket.readable() => match ready {
                    // Cleared before reading: a datagram arriving after this point makes
                    // the socket readable again.
                    Ok(mut guard) => guard.clear_ready(),
                    Err(e) => {
                        tracing::error!(%local, error = %e, "UDP listener failed");
                        break;
                    }
                },
            }
        } else if shared.shutdown.is_cancelled() {
            break;
        }
        more = !shared.read_listener(local, socket.get_ref(), LISTENER_CALLS);
        shared.flush_queued();
        if more {
            tokio::task::yield_now().await;
        }
    }
}

async fn timers(shared: Arc<Shared>) {
    loop {
        let next = shared.core.lock().poll_timeout();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = sleep => shared.core.lock().handle_timeout(Instant::now()),
        }
    }
    // Release every relay socket on the way out.
    shared.core.lock().relays().release_all();
}
