//! The tokio driver of the TURN core: UDP and TCP listeners for the client leg, one UDP
//! socket per relayed address, and a timer task. The core sits behind one mutex; packets
//! are handled under the lock and sent after it is released.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Credentials;
use crate::policy::PeerPolicy;
use crate::server::{
    FiveTuple, PortRequest, RelayPorts, Route, ServerConfig, Transport, TurnServer,
};

/// Largest datagram read.
const MAX_DATAGRAM: usize = 65_536;
/// Frames queued toward one TCP client before newer ones are dropped.
const TCP_QUEUE: usize = 256;
/// Kernel buffer of listener sockets: they carry every client's traffic, in bursts.
const LISTENER_BUFFER: usize = 4 << 20;
/// Kernel buffer of relay sockets (kernel memory, used only while data waits).
const RELAY_BUFFER: usize = 512 << 10;

/// Binds a UDP socket with enlarged kernel buffers.
fn bind_udp(addr: SocketAddr, buffer: usize) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

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
}

/// Relay sockets, bound on demand by the core.
pub struct Ports {
    shared: Weak<Shared>,
    relay_v4: IpAddr,
    advertised_v4: IpAddr,
    relay_v6: Option<IpAddr>,
    range: (u16, u16),
    /// Sockets by advertised address, with the handle that stops their reader.
    open: HashMap<SocketAddr, tokio::task::AbortHandle>,
}

impl Ports {
    fn try_bind(&mut self, ipv6: bool, port: u16) -> Option<SocketAddr> {
        let (bind_ip, adv_ip) = if ipv6 {
            let ip = self.relay_v6?;
            (ip, ip)
        } else {
            (self.relay_v4, self.advertised_v4)
        };
        let socket = Arc::new(bind_udp(SocketAddr::new(bind_ip, port), RELAY_BUFFER).ok()?);
        let advertised = SocketAddr::new(adv_ip, port);
        let shared = self.shared.upgrade()?;
        shared.relays.write().insert(advertised, socket.clone());
        // Aborted on release; an idle reader is one small task and nothing else.
        let task = tokio::spawn(relay_reader(Arc::downgrade(&shared), advertised, socket));
        self.open.insert(advertised, task.abort_handle());
        Some(advertised)
    }
}

impl RelayPorts for Ports {
    fn bind(&mut self, ipv6: bool, request: PortRequest) -> Option<SocketAddr> {
        let (lo, hi) = self.range;
        match request {
            PortRequest::Exactly(p) if (lo..=hi).contains(&p) => self.try_bind(ipv6, p),
            PortRequest::Exactly(_) => None,
            PortRequest::Any | PortRequest::Even => {
                let span = u32::from(hi - lo) + 1;
                let start = rand::random::<u32>() % span;
                for i in 0..span.min(64) {
                    let mut port = lo as u32 + (start + i * 7919) % span;
                    if request == PortRequest::Even && port % 2 == 1 {
                        port = if port < hi as u32 { port + 1 } else { port - 1 };
                    }
                    if let Some(addr) = self.try_bind(ipv6, port as u16) {
                        return Some(addr);
                    }
                }
                None
            }
        }
    }

    fn release(&mut self, addr: SocketAddr) {
        if let Some(task) = self.open.remove(&addr) {
            task.abort();
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.relays.write().remove(&addr);
        }
    }
}

/// State shared by the driver's tasks.
pub struct Shared {
    pub(crate) core: Mutex<TurnServer<Ports>>,
    /// Relay sockets by advertised address.
    relays: RwLock<HashMap<SocketAddr, Arc<UdpSocket>>>,
    /// UDP listeners by local address.
    udp: RwLock<HashMap<SocketAddr, Arc<UdpSocket>>>,
    /// TCP client connections by 5-tuple.
    tcp: RwLock<HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// Datagrams that found a full socket buffer (or a gone socket) when sent.
    pub(crate) send_drops: std::sync::atomic::AtomicU64,
}

/// A running TURN server.
pub struct TurnService {
    shared: Arc<Shared>,
    /// Bound UDP listener addresses.
    pub udp_addrs: Vec<SocketAddr>,
    /// Bound TCP listener addresses.
    pub tcp_addrs: Vec<SocketAddr>,
    /// Bound TLS listener addresses.
    pub tls_addrs: Vec<SocketAddr>,
}

impl TurnService {
    /// Binds every listener and starts the tasks.
    pub async fn start(opts: TurnOptions, shutdown: CancellationToken) -> io::Result<Self> {
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
        let shared = Arc::new_cyclic(|weak| {
            let ports = Ports {
                shared: weak.clone(),
                relay_v4: opts.relay_ip,
                advertised_v4: advertised,
                relay_v6: opts.relay_ip_v6,
                range: opts.ports,
                open: HashMap::new(),
            };
            Shared {
                core: Mutex::new(TurnServer::new(
                    opts.server.clone(),
                    opts.credentials.clone(),
                    policy,
                    ports,
                    Instant::now(),
                )),
                relays: RwLock::new(HashMap::new()),
                udp: RwLock::new(HashMap::new()),
                tcp: RwLock::new(HashMap::new()),
                tracker: TaskTracker::new(),
                shutdown: shutdown.clone(),
                send_drops: Default::default(),
            }
        });
        let mut udp_addrs = Vec::new();
        for addr in &opts.listen_udp {
            let socket = Arc::new(bind_udp(*addr, LISTENER_BUFFER)?);
            let local = socket.local_addr()?;
            shared.udp.write().insert(local, socket.clone());
            shared
                .tracker
                .spawn(udp_listener(shared.clone(), local, socket));
            udp_addrs.push(local);
        }
        let mut tcp_addrs = Vec::new();
        for addr in &opts.listen_tcp {
            let listener = TcpListener::bind(addr).await?;
            tcp_addrs.push(listener.local_addr()?);
            shared
                .tracker
                .spawn(tcp_listener(shared.clone(), listener, None));
        }
        let mut tls_addrs = Vec::new();
        if let Some(tls) = &opts.tls {
            for addr in &opts.listen_tls {
                let listener = TcpListener::bind(addr).await?;
                tls_addrs.push(listener.local_addr()?);
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
                shared
                    .tracker
                    .spawn(tcp_listener(shared.clone(), listener, Some(acceptor)));
            }
        }
        shared.tracker.spawn(timers(shared.clone()));
        Ok(Self {
            shared,
            udp_addrs,
            tcp_addrs,
            tls_addrs,
        })
    }

    /// Runs `f` on the core (for metrics and tests).
    pub fn with_core<T>(&self, f: impl FnOnce(&TurnServer<Ports>) -> T) -> T {
        f(&self.shared.core.lock())
    }

    /// Waits for every task to end after the shutdown token was cancelled.
    pub async fn stopped(&self) {
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

thread_local! {
    /// Receive and output buffers of the worker thread. Datagram paths are synchronous
    /// from receive to send, so one pair per thread serves every socket and an idle relay
    /// socket holds no buffer at all.
    static BUFFERS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        std::cell::RefCell::new((vec![0u8; MAX_DATAGRAM], Vec::with_capacity(MAX_DATAGRAM)));
}

/// Sends what the core produced, without waiting: a datagram that finds a full socket
/// buffer is dropped, as the network would.
fn deliver(shared: &Shared, route: Route, data: &[u8]) {
    let sent = match route {
        Route::Peer { relay, peer } => match shared.relays.read().get(&relay) {
            Some(s) => s.try_send_to(data, peer).is_ok(),
            None => false,
        },
        Route::Client(tuple) => match tuple.transport {
            Transport::Udp => match shared.udp.read().get(&tuple.server) {
                Some(s) => s.try_send_to(data, tuple.client).is_ok(),
                None => false,
            },
            Transport::Tcp | Transport::Tls => {
                let tx = shared.tcp.read().get(&tuple).cloned();
                // A client that does not read loses datagrams, as it would over UDP.
                tx.is_some_and(|tx| tx.try_send(data.to_vec()).is_ok())
            }
        },
    };
    if !sent {
        shared
            .send_drops
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Reads every datagram waiting on `socket` and hands each to `handle`.
fn drain_socket(
    shared: &Shared,
    socket: &UdpSocket,
    mut handle: impl FnMut(&mut TurnServer<Ports>, SocketAddr, &[u8], &mut Vec<u8>) -> Option<Route>,
) {
    BUFFERS.with(|b| {
        let (buf, out) = &mut *b.borrow_mut();
        // Bounded so one busy socket cannot starve the others on this thread.
        for _ in 0..64 {
            let (n, from) = match socket.try_recv_from(buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // ICMP errors surface as receive errors; keep serving.
                Err(_) => continue,
            };
            let route = handle(&mut shared.core.lock(), from, &buf[..n], out);
            if let Some(route) = route {
                deliver(shared, route, out);
            }
        }
    });
}

async fn udp_listener(shared: Arc<Shared>, local: SocketAddr, socket: Arc<UdpSocket>) {
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            r = socket.readable() => if r.is_err() { continue },
        }
        drain_socket(&shared, &socket, |core, from, data, out| {
            let tuple = FiveTuple {
                transport: Transport::Udp,
                client: from,
                server: local,
            };
            core.handle_client(Instant::now(), tuple, data, out)
        });
        tokio::task::yield_now().await;
    }
}

async fn relay_reader(shared: Weak<Shared>, advertised: SocketAddr, socket: Arc<UdpSocket>) {
    loop {
        if socket.readable().await.is_err() {
            continue;
        }
        let Some(shared) = shared.upgrade() else {
            break;
        };
        if shared.shutdown.is_cancelled() {
            break;
        }
        drain_socket(&shared, &socket, |core, peer, data, out| {
            core.handle_peer(Instant::now(), advertised, peer, data, out)
        });
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
    let mut core = shared.core.lock();
    let ports = core.relays();
    let open: Vec<SocketAddr> = ports.open.keys().copied().collect();
    for a in open {
        ports.release(a);
    }
}

async fn tcp_listener(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let Ok((stream, client)) = accepted else {
            continue;
        };
        let Ok(server) = stream.local_addr() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        match &tls {
            None => {
                let tuple = FiveTuple {
                    transport: Transport::Tcp,
                    client,
                    server,
                };
                shared
                    .tracker
                    .spawn(stream_connection(shared.clone(), tuple, stream));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let shared2 = shared.clone();
                shared.tracker.spawn(async move {
                    // A handshake that stalls must not hold a task forever.
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(tls_stream)) => {
                            let tuple = FiveTuple {
                                transport: Transport::Tls,
                                client,
                                server,
                            };
                            stream_connection(shared2, tuple, tls_stream).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%client, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// Length of the next complete STUN or ChannelData frame at the start of `buf`
/// (RFC 8656 §12.5: ChannelData is padded to 4 bytes over streams), `Err` when the stream
/// is not speaking STUN/TURN.
fn frame_len(buf: &[u8]) -> Result<Option<usize>, ()> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let total = match buf[0] >> 6 {
        0 => 20 + len,
        1 => (4 + len).next_multiple_of(4),
        _ => return Err(()),
    };
    Ok((buf.len() >= total).then_some(total))
}

/// Serves one stream client leg (TCP or TLS).
async fn stream_connection<S>(shared: Arc<Shared>, tuple: FiveTuple, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(TCP_QUEUE);
    shared.tcp.write().insert(tuple, tx);
    let (mut reader, mut writer) = tokio::io::split(stream);
    let writer_task = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if writer.write_all(&frame).await.is_err() || writer.flush().await.is_err() {
                break;
            }
        }
    });
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut out = Vec::new();
    'conn: loop {
        let n = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            r = reader.read(&mut chunk) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match frame_len(&buf) {
                Err(()) => break 'conn,
                Ok(None) => break,
                Ok(Some(len)) => {
                    let route = shared.core.lock().handle_client(
                        Instant::now(),
                        tuple,
                        &buf[..len],
                        &mut out,
                    );
                    buf.drain(..len);
                    if let Some(route) = route {
                        deliver(&shared, route, &out);
                    }
                }
            }
        }
        if buf.len() > MAX_DATAGRAM + 8 {
            break;
        }
    }
    shared.tcp.write().remove(&tuple);
    shared.core.lock().close_connection(&tuple);
    writer_task.abort();
}

#[cfg(test)]
mod tests {
    use super::frame_len;

    #[test]
    fn stream_framing() {
        assert_eq!(frame_len(&[0, 1, 0]), Ok(None));
        assert_eq!(frame_len(&[0, 1, 0, 4]), Ok(None));
        assert_eq!(frame_len(&[0u8; 24]), Ok(Some(20)));
        // ChannelData of 5 bytes occupies 12 with padding.
        let mut cd = vec![0x40, 0x00, 0x00, 0x05];
        cd.extend_from_slice(&[1; 8]);
        assert_eq!(frame_len(&cd), Ok(Some(12)));
        assert_eq!(frame_len(&[0xC0, 0, 0, 0]), Err(()));
    }
}
