//! ICE over TCP, the passive side (RFC 6544), for clients whose network blocks UDP.
//! Each frame on a connection is one STUN, DTLS, RTP or RTCP packet behind a two-byte
//! length (RFC 4571).
//!
//! A shard accepts connections on its listener (the shards share the address, like
//! their UDP sockets). A new connection's first frame must be a STUN check a peer
//! accepts: a connection whose peer another shard holds is passed to that shard (the
//! next one, until one accepts it or all have refused). From then on the connection
//! belongs to that peer: a task reads its frames into the driver, another writes what
//! the peer's session sends to it, and it is closed when the peer leaves. Queues are
//! bounded both ways: a reader waits (TCP's own flow control pushes back on the
//! client), a frame to a connection whose queue is full is dropped, as a full UDP
//! socket buffer drops it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use str0m::net::Protocol;
use tracing::debug;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Driver, Handoff};
use crate::ids::ParticipantId;
use crate::metrics::SfuMetrics;

/// Largest frame accepted. WebRTC packets stay below ~1200 bytes; a bigger length
/// prefix is a broken or hostile client, and its connection is closed.
pub(super) const MAX_FRAME: usize = super::RECV_BUFFER;

/// A new connection must send its first frame within this.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Open connections per shard, including those waiting for their first frame; more
/// are closed at once.
pub(super) const MAX_CONNECTIONS: usize = 4096;

/// Connections from one IP address that have not reached a peer yet, per shard; more
/// are closed at once. A client sends its first check as soon as it has connected, so
/// only one that holds connections open without sending gets near this; it keeps a
/// single address from taking every place for [`FIRST_FRAME_TIMEOUT`] at a time.
pub const ICE_TCP_MAX_WAITING_PER_ADDRESS: usize = 64;

/// How long accepting stops after an accept error.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Frames waiting to be written to one connection.
const WRITE_QUEUE: usize = 512;

/// Frames read from every connection waiting for the driver.
const READ_QUEUE: usize = 1024;

/// What the connection tasks tell the driver.
pub(super) enum TcpEvent {
    /// A new connection's first frame; nobody owns it yet.
    First {
        stream: TcpStream,
        source: SocketAddr,
        frame: Vec<u8>,
    },
    /// A frame from an owned connection.
    Frame { source: SocketAddr, bytes: Vec<u8> },
    /// An owned connection ended (closed, reset, or a bad frame). `serial` tells it
    /// from a later connection from the same address.
    Closed { source: SocketAddr, serial: u64 },
}

/// A connection that reached a peer.
struct Conn {
    /// Its peer.
    peer: ParticipantId,
    /// Numbers the connections of a shard.
    serial: u64,
    /// Frames to write.
    tx: mpsc::Sender<Vec<u8>>,
    /// The reading task (the writer ends when `tx` is dropped).
    reader: JoinHandle<()>,
}

/// One shard's ICE-TCP side.
pub(super) struct TcpLinks {
    /// Where connections arrive; `None` when ICE-TCP is off.
    listener: Option<TcpListener>,
    /// The connection tasks' way to the driver (cloned into each).
    events_tx: mpsc::Sender<TcpEvent>,
    /// Connections that reached a peer, by the client's address.
    conns: HashMap<SocketAddr, Conn>,
    /// Connections accepted here or handed over that have not reached a peer yet.
    waiting: Arc<Waiting>,
    /// The next connection's serial number.
    next_serial: u64,
    /// Accepting stopped until then after an error (out of file descriptors: the
    /// pending connection stays, and accepting again at once would spin).
    paused_until: Option<Instant>,
    /// Counters and the connection gauge.
    metrics: SfuMetrics,
}

impl TcpLinks {
    /// The ICE-TCP side of a shard and what its connection tasks will report; must be
    /// called inside the runtime that runs it.
    pub(super) fn new(
        listener: Option<std::net::TcpListener>,
        metrics: SfuMetrics,
    ) -> io::Result<(Self, mpsc::Receiver<TcpEvent>)> {
        let listener = listener.map(TcpListener::from_std).transpose()?;
        let (events_tx, events) = mpsc::channel(READ_QUEUE);
        let links = Self {
            listener,
            events_tx,
            conns: HashMap::new(),
            waiting: Arc::default(),
            next_serial: 0,
            paused_until: None,
            metrics,
        };
        Ok((links, events))
    }

    /// Whether connections are accepted here now.
    pub(super) fn accepting(&self) -> bool {
        self.listener.is_some() && self.paused_until.is_none_or(|t| t <= Instant::now())
    }

    /// When accepting resumes after a pause.
    pub(super) fn resume_at(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Stops accepting for a moment after an accept error.
    pub(super) fn pause(&mut self, now: Instant) {
        self.paused_until = Some(now + ACCEPT_PAUSE);
    }

    /// The listener, for [`accept`].
    pub(super) fn listener(&self) -> &Option<TcpListener> {
        &self.listener
    }

    /// Takes a new connection and waits for its first frame in a task of its own.
    pub(super) fn start(&self, stream: TcpStream, source: SocketAddr) {
        if !self.admit(source.ip()) {
            return;
        }
        let _ = stream.set_nodelay(true);
        self.await_first(stream, source);
    }

    /// A connection another shard refused, back in this runtime and counted here;
    /// `None` if it cannot be taken.
    pub(super) fn adopt(
        &self,
        stream: std::net::TcpStream,
        source: SocketAddr,
    ) -> Option<TcpStream> {
        let Ok(stream) = TcpStream::from_std(stream) else {
            self.metrics.tcp_rejected.inc();
            return None;
        };
        self.admit(source.ip()).then_some(stream)
    }

    /// Counts a connection from `ip` that has not reached a peer, unless the shard or
    /// that address's share of it is full.
    fn admit(&self, ip: IpAddr) -> bool {
        if !self.waiting.add(ip, self.conns.len()) {
            debug!(%ip, "ICE-TCP connection refused: too many waiting");
            self.metrics.tcp_rejected.inc();
            return false;
        }
        self.metrics.tcp_connections.inc();
        true
    }

    /// Reads a new connection's first frame (with a deadline) and hands it to the
    /// driver; a connection that sends none in time, or a bad one, is closed.
    fn await_first(&self, mut stream: TcpStream, source: SocketAddr) {
        let events = self.events_tx.clone();
        let waiting = self.waiting.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let first = tokio::time::timeout(FIRST_FRAME_TIMEOUT, read_frame(&mut stream)).await;
            if let Ok(Ok(Some(frame))) = first {
                let event = TcpEvent::First {
                    stream,
                    source,
                    frame,
                };
                if events.send(event).await.is_ok() {
                    return;
                }
            }
            give_up(&waiting, source.ip(), &metrics, true);
        });
    }

    /// The connection from `source` that was waiting is given up (refused by every
    /// shard, or passed to another shard, which counts it itself).
    pub(super) fn release(&self, source: SocketAddr, rejected: bool) {
        give_up(&self.waiting, source.ip(), &self.metrics, rejected);
    }

    /// The connection from `source` now belongs to `peer`: its frames are read into
    /// the driver and the peer's frames to `source` are written to it.
    pub(super) fn register(&mut self, stream: TcpStream, source: SocketAddr, peer: ParticipantId) {
        self.waiting.remove(source.ip());
        let serial = self.next_serial;
        self.next_serial += 1;
        let (mut read, mut write) = stream.into_split();
        let events = self.events_tx.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(bytes)) = read_frame(&mut read).await {
                if events
                    .send(TcpEvent::Frame { source, bytes })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = events.send(TcpEvent::Closed { source, serial }).await;
        });
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        tokio::spawn(async move {
            // What is queued when the task wakes goes out in one write.
            let mut buf = Vec::with_capacity(16 * 1024);
            while let Some(frame) = rx.recv().await {
                buf.clear();
                push_frame(&mut buf, &frame);
                while buf.len() < 64 * 1024 {
                    let Ok(frame) = rx.try_recv() else { break };
                    push_frame(&mut buf, &frame);
                }
                if write.write_all(&buf).await.is_err() {
                    return;
                }
            }
        });
        let conn = Conn {
            peer,
            serial,
            tx,
            reader,
        };
        if let Some(old) = self.conns.insert(source, conn) {
            // The same address again (a reconnect that reused the port): the old
            // connection is gone.
            old.reader.abort();
            self.metrics.tcp_connections.dec();
        }
    }

    /// The peer that owns the connection from `source`.
    pub(super) fn owner(&self, source: SocketAddr) -> Option<&ParticipantId> {
        self.conns.get(&source).map(|c| &c.peer)
    }

    /// Queues a frame to the connection at `destination`; false if there is none or
    /// its queue is full (the frame is dropped).
    pub(super) fn send(&self, destination: SocketAddr, contents: Vec<u8>) -> bool {
        self.conns
            .get(&destination)
            .is_some_and(|c| c.tx.try_send(contents).is_ok())
    }

    /// Forgets connection `serial` from `source` (it ended); false if that one is
    /// already gone (a later connection from the same address stays).
    pub(super) fn closed(&mut self, source: SocketAddr, serial: u64) -> bool {
        if self.conns.get(&source).is_none_or(|c| c.serial != serial) {
            return false;
        }
        self.conns.remove(&source);
        self.metrics.tcp_connections.dec();
        true
    }

    /// Closes every connection of `peer` (it left).
    pub(super) fn close_peer(&mut self, peer: &ParticipantId) {
        let metrics = &self.metrics;
        self.conns.retain(|_, c| {
            if &c.peer != peer {
                return true;
            }
            c.reader.abort();
            metrics.tcp_connections.dec();
            false
        });
    }
}

impl Driver {
    /// Acts on what a connection task reports (the caller pumps).
    pub(super) fn handle_tcp_event(&mut self, ev: TcpEvent, now: Instant) {
        match ev {
            TcpEvent::First {
                stream,
                source,
                frame,
            } => self.tcp_first(stream, source, frame, 0, now),
            TcpEvent::Frame { source, bytes } => self.tcp_frame(source, &bytes, now),
            TcpEvent::Closed { source, serial } => {
                if self.tcp.closed(source, serial) {
                    self.by_addr.remove(&source);
                }
            }
        }
    }

    /// A new connection's first frame: the connection goes to the peer that accepts
    /// it (a STUN check with its ufrag), to the next shard if none here does
    /// (`hops`: shards that already refused it), or is closed.
    pub(super) fn tcp_first(
        &mut self,
        stream: TcpStream,
        source: SocketAddr,
        frame: Vec<u8>,
        hops: usize,
        now: Instant,
    ) {
        if hops == 0 {
            // Counted once, by the shard that read it.
            self.metrics.packets_in.inc();
            self.metrics.bytes_in.inc_by(frame.len() as u64);
        }
        let Ok(contents) = frame.as_slice().try_into() else {
            self.metrics.malformed_dropped.inc();
            self.tcp.release(source, true);
            return;
        };
        let input = self.input(contents, source, Protocol::Tcp, now);
        if let Some(id) = self.local_peer(&input, &frame, source) {
            debug!(participant = %id, %source, "ICE-TCP connection");
            self.tcp.register(stream, source, id.clone());
            self.deliver(&id, input, &frame);
            return;
        }
        if hops + 1 < self.shard.count
            && let Ok(stream) = stream.into_std()
        {
            self.tcp.release(source, false);
            self.metrics.tcp_handed_off.inc();
            let next = (self.shard.index + 1) % self.shard.count;
            let msg = Handoff::Tcp {
                stream,
                source,
                frame,
                hops: hops + 1,
            };
            // A full queue drops it (counted), which closes the connection.
            let _ = self.hand_off(next, msg);
            return;
        }
        self.metrics.unrouted_dropped.inc();
        self.tcp.release(source, true);
    }

    /// A frame of a connection that belongs to a peer.
    fn tcp_frame(&mut self, source: SocketAddr, bytes: &[u8], now: Instant) {
        self.metrics.packets_in.inc();
        self.metrics.bytes_in.inc_by(bytes.len() as u64);
        let Ok(contents) = bytes.try_into() else {
            self.metrics.malformed_dropped.inc();
            return;
        };
        let input = self.input(contents, source, Protocol::Tcp, now);
        let owner = self.tcp.owner(source).cloned();
        match owner {
            Some(id) if self.peers.get(&id).is_some_and(|p| p.rtc.accepts(&input)) => {
                self.deliver(&id, input, bytes);
            }
            _ => {
                self.metrics.unrouted_dropped.inc();
            }
        }
    }
}

/// Connections of a shard that have not reached a peer yet: in all, and per client
/// address. Shared with the tasks that wait for first frames.
#[derive(Debug, Default)]
struct Waiting(Mutex<(usize, HashMap<IpAddr, usize>)>);

impl Waiting {
    /// Counts one more from `ip` unless, with `placed` connections that have reached a
    /// peer, the shard holds [`MAX_CONNECTIONS`], or `ip` has
    /// [`ICE_TCP_MAX_WAITING_PER_ADDRESS`] waiting.
    fn add(&self, ip: IpAddr, placed: usize) -> bool {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, by_ip) = &mut *guard;
        let mine = by_ip.get(&ip).copied().unwrap_or(0);
        if placed + *total >= MAX_CONNECTIONS || mine >= ICE_TCP_MAX_WAITING_PER_ADDRESS {
            return false;
        }
        *total += 1;
        by_ip.insert(ip, mine + 1);
        true
    }

    /// Uncounts one from `ip` (it reached a peer, or was given up).
    fn remove(&self, ip: IpAddr) {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, by_ip) = &mut *guard;
        *total = total.saturating_sub(1);
        if let Some(n) = by_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&ip);
            }
        }
    }
}

/// Uncounts a connection from `ip` that never reached a peer here; `rejected`: it is
/// closed (not passed to another shard).
fn give_up(waiting: &Waiting, ip: IpAddr, metrics: &SfuMetrics, rejected: bool) {
    waiting.remove(ip);
    metrics.tcp_connections.dec();
    if rejected {
        metrics.tcp_rejected.inc();
    }
}

/// Accepts the next connection (never, without a listener).
pub(super) async fn accept(listener: &Option<TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Reads one frame: `None` at a clean end of the stream; an error for a frame of
/// length 0 or over [`MAX_FRAME`].
async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    if r.read(&mut len[..1]).await? == 0 {
        return Ok(None);
    }
    r.read_exact(&mut len[1..]).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len == 0 || len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes (1..={MAX_FRAME})"),
        ));
    }
    let mut frame = vec![0u8; len];
    r.read_exact(&mut frame).await?;
    Ok(Some(frame))
}

/// Appends `frame` with its length prefix.
fn push_frame(buf: &mut Vec<u8>, frame: &[u8]) {
    // str0m never produces more than a datagram's worth.
    let len = u16::try_from(frame.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&frame[..usize::from(len)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_lengths_are_errors() {
        let mut buf = Vec::new();
        push_frame(&mut buf, b"abc");
        push_frame(&mut buf, &[7u8; 1200]);
        let mut r = buf.as_slice();
        assert_eq!(read_frame(&mut r).await.unwrap().unwrap(), b"abc");
        assert_eq!(read_frame(&mut r).await.unwrap().unwrap(), vec![7u8; 1200]);
        assert!(read_frame(&mut r).await.unwrap().is_none(), "clean end");
        // A zero length, a length over the limit, and a frame cut short.
        let mut r: &[u8] = &[0, 0];
        assert!(read_frame(&mut r).await.is_err());
        let big = (MAX_FRAME as u16 + 1).to_be_bytes();
        let mut r: &[u8] = &big;
        assert!(read_frame(&mut r).await.is_err());
        let mut r: &[u8] = &[0, 5, 1, 2];
        assert!(read_frame(&mut r).await.is_err());
        // A length prefix cut short is an error too, not a clean end.
        let mut r: &[u8] = &[0];
        assert!(read_frame(&mut r).await.is_err());
    }
}
