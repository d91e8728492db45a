//! Batched datagram I/O for the shards: many datagrams per receive call (`recvmmsg` through
//! quinn-udp) and a per-thread send queue, flushed once per batch, in which each flow's run
//! of equal-sized datagrams leaves in one GSO call (UDP_SEGMENT) instead of one each.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{BATCH_SIZE, RecvMeta, Transmit, UdpSockRef, UdpSocketState};

/// Largest datagram read.
pub(crate) const MAX_DATAGRAM: usize = 65_536;
/// Only datagrams that fit the IPv6 minimum MTU (1280 - 40 - 8) are merged for GSO: the
/// kernel refuses a GSO send whose segments exceed the route's MTU, which would otherwise
/// turn a relayable datagram into a failed batch.
const MAX_GSO_SEGMENT: usize = 1232;
/// Bytes of one GSO call: its segments travel as one UDP super-packet.
const MAX_GSO_BYTES: usize = 60_000;
/// Queued datagrams (or bytes) after which the owner should flush before queueing more.
const OUTBOX_DATAGRAMS: usize = 512;
const OUTBOX_BYTES: usize = 1 << 20;

/// Capabilities of the host's UDP stack (GSO segments, cmsg fallbacks), probed on a
/// throwaway socket. The shard's listener and relay sockets are not set up by quinn-udp:
/// its per-socket setup turns on DF, GRO and ancillary data that the relay does not use.
pub(crate) fn probe_state() -> io::Result<UdpSocketState> {
    // IPv6 when the host has no IPv4 (the probe is only read for capabilities).
    let probe =
        std::net::UdpSocket::bind("0.0.0.0:0").or_else(|_| std::net::UdpSocket::bind("[::]:0"))?;
    UdpSocketState::new((&probe).into())
}

/// Which socket a queued datagram leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Via {
    /// A client-facing UDP listener, by local address.
    Listener(SocketAddr),
    /// A relay socket, by advertised address.
    Relay(SocketAddr),
}

/// One queued datagram: where it goes and its bytes in [`Outbox::data`].
#[derive(Debug, Clone, Copy)]
struct Queued {
    via: Via,
    to: SocketAddr,
    start: usize,
    len: usize,
    /// Send with the DF bit (RFC 8656 §14).
    dont_fragment: bool,
}

/// Datagrams waiting to be sent, in arrival order.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: Vec<Queued>,
    /// Every queued datagram, back to back (one buffer, reused).
    data: Vec<u8>,
    /// A GSO run gathered contiguously.
    gather: Vec<u8>,
}

impl Outbox {
    /// Queues a datagram, to leave with the DF bit if `dont_fragment`; empty ones are not
    /// sent.
    pub(crate) fn push(&mut self, via: Via, to: SocketAddr, datagram: &[u8], dont_fragment: bool) {
        if datagram.is_empty() {
            return;
        }
        let start = self.data.len();
        self.data.extend_from_slice(datagram);
        self.queue.push(Queued {
            via,
            to,
            start,
            len: datagram.len(),
            dont_fragment,
        });
    }

    /// True when the queue should be flushed before more is queued.
    pub(crate) fn is_full(&self) -> bool {
        self.queue.len() >= OUTBOX_DATAGRAMS || self.data.len() >= OUTBOX_BYTES
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Sends everything queued through `send` (which finds the socket, applies the DF
    /// setting and sends one transmit) and returns how many datagrams were dropped. A flow's datagrams keep
    /// their order; datagrams of different flows have none to keep. A datagram that finds
    /// a full socket buffer is dropped, as the network would.
    pub(crate) fn flush(
        &mut self,
        max_segments: usize,
        mut send: impl FnMut(Via, bool, &Transmit<'_>) -> io::Result<()>,
    ) -> u64 {
        // Stable: each flow's run stays in arrival order.
        self.queue.sort_by_key(|q| (q.via, q.to));
        let mut dropped = 0;
        let mut i = 0;
        while i < self.queue.len() {
            let end = self.run_end(i, max_segments.max(1));
            let first = self.queue[i];
            if end - i == 1 {
                let bytes = &self.data[first.start..first.start + first.len];
                let single = transmit(first.to, bytes, None);
                if send(first.via, first.dont_fragment, &single).is_err() {
                    dropped += 1;
                }
            } else {
                self.gather.clear();
                for q in &self.queue[i..end] {
                    self.gather
                        .extend_from_slice(&self.data[q.start..q.start + q.len]);
                }
                let gso = transmit(first.to, &self.gather, Some(first.len));
                match send(first.via, first.dont_fragment, &gso) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        dropped += (end - i) as u64;
                    }
                    // GSO refused (a driver without it, a route with a smaller MTU): one
                    // by one, so that the datagrams are not lost with the batch.
                    Err(_) => {
                        for q in &self.queue[i..end] {
                            let bytes = &self.data[q.start..q.start + q.len];
                            let single = transmit(q.to, bytes, None);
                            if send(q.via, q.dont_fragment, &single).is_err() {
                                dropped += 1;
                            }
                        }
                    }
                }
            }
            i = end;
        }
        self.queue.clear();
        self.data.clear();
        dropped
    }

    /// End of the GSO run that starts at `i`: same socket, destination and DF setting,
    /// every segment as long as the first except a shorter last one, within the GSO limits.
    fn run_end(&self, i: usize, max_segments: usize) -> usize {
        let first = self.queue[i];
        let mut end = i + 1;
        if first.len > MAX_GSO_SEGMENT {
            return end;
        }
        let mut total = first.len;
        while end < self.queue.len() && end - i < max_segments {
            let q = self.queue[end];
            if q.via != first.via
                || q.to != first.to
                || q.dont_fragment != first.dont_fragment
                || q.len > first.len
                || total + q.len > MAX_GSO_BYTES
            {
                break;
            }
            total += q.len;
            end += 1;
            if q.len < first.len {
                break;
            }
        }
        end
    }
}

fn transmit(to: SocketAddr, contents: &[u8], segment: Option<usize>) -> Transmit<'_> {
    Transmit {
        destination: to,
        ecn: None,
        contents,
        segment_size: segment,
        src_ip: None,
    }
}

/// Receive buffers for one `recvmmsg` call.
pub(crate) struct RecvBatch {
    bufs: Vec<Box<[u8]>>,
    meta: Vec<RecvMeta>,
    filled: usize,
}

impl RecvBatch {
    pub(crate) fn new() -> Self {
        Self {
            // Zeroed allocations: pages are touched only as large datagrams arrive.
            bufs: (0..BATCH_SIZE)
                .map(|_| vec![0u8; MAX_DATAGRAM].into_boxed_slice())
                .collect(),
            meta: vec![RecvMeta::default(); BATCH_SIZE],
            filled: 0,
        }
    }

    /// Datagrams one call can return; fewer means the socket was drained.
    pub(crate) const CAPACITY: usize = BATCH_SIZE;

    /// Reads what is waiting on `socket` (one system call); returns how many datagrams
    /// were read, or the error (`WouldBlock` when nothing was waiting).
    pub(crate) fn recv(
        &mut self,
        state: &UdpSocketState,
        socket: UdpSockRef<'_>,
    ) -> io::Result<usize> {
        self.filled = 0;
        let mut slices: [IoSliceMut<'_>; BATCH_SIZE] =
            std::array::from_fn(|_| IoSliceMut::new(&mut []));
        for (slice, buf) in slices.iter_mut().zip(self.bufs.iter_mut()) {
            *slice = IoSliceMut::new(buf);
        }
        let n = state.recv(socket, &mut slices, &mut self.meta)?;
        self.filled = n.min(BATCH_SIZE);
        Ok(self.filled)
    }

    /// The datagrams of the last receive, with their senders (a GRO buffer is split at its
    /// stride).
    pub(crate) fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.meta[..self.filled]
            .iter()
            .zip(&self.bufs)
            .flat_map(|(meta, buf)| {
                let data = &buf[..meta.len.min(buf.len())];
                let stride = if meta.stride == 0 {
                    data.len().max(1)
                } else {
                    meta.stride
                };
                data.chunks(stride).map(move |d| (meta.addr, d))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// What a flush asked to send: socket, destination, segment size and the datagrams.
    fn record(outbox: &mut Outbox, max: usize) -> Vec<(Via, SocketAddr, Vec<Vec<u8>>)> {
        let mut sent = Vec::new();
        let dropped = outbox.flush(max, |via, _, t| {
            let seg = t.segment_size.unwrap_or(t.contents.len());
            let parts = t.contents.chunks(seg).map(<[u8]>::to_vec).collect();
            sent.push((via, t.destination, parts));
            Ok(())
        });
        assert_eq!(dropped, 0);
        sent
    }

    #[test]
    fn flows_are_grouped_in_order_and_split_by_size() {
        let mut o = Outbox::default();
        let (a, b) = (Via::Relay(addr(50_000)), Via::Listener(addr(3478)));
        // Two flows interleaved; flow a has a shorter datagram in the middle.
        for (i, via, to, len) in [
            (0u8, a, addr(1), 100),
            (1, b, addr(2), 50),
            (2, a, addr(1), 100),
            (3, b, addr(2), 50),
            (4, a, addr(1), 60),
            (5, a, addr(1), 100),
            (6, b, addr(2), 2000),
        ] {
            o.push(via, to, &vec![i; len], false);
        }
        let sent = record(&mut o, 64);
        let firsts: Vec<(Via, Vec<u8>)> = sent
            .iter()
            .map(|(via, _, parts)| (*via, parts.iter().map(|p| p[0]).collect()))
            .collect();
        assert_eq!(
            firsts,
            vec![
                // Listener before relay (sort order); b's 2000-byte datagram is not merged.
                (b, vec![1, 3]),
                (b, vec![6]),
                // a: 100, 100, then the shorter 60 closes the run; 100 starts a new one.
                (a, vec![0, 2, 4]),
                (a, vec![5]),
            ]
        );
        assert_eq!(o.len(), 0, "flush empties the queue");
    }

    #[test]
    fn runs_respect_the_segment_limit() {
        let mut o = Outbox::default();
        for i in 0..10u8 {
            o.push(Via::Relay(addr(50_000)), addr(9), &[i; 40], false);
        }
        let sent = record(&mut o, 4);
        let sizes: Vec<usize> = sent.iter().map(|(_, _, p)| p.len()).collect();
        assert_eq!(sizes, vec![4, 4, 2]);
    }

    #[test]
    fn a_refused_gso_send_falls_back_to_single_datagrams() {
        let mut o = Outbox::default();
        for i in 0..3u8 {
            o.push(Via::Relay(addr(50_000)), addr(9), &[i; 40], false);
        }
        let mut singles = Vec::new();
        let dropped = o.flush(64, |_, _, t| {
            if t.segment_size.is_some_and(|s| s < t.contents.len()) {
                return Err(io::Error::from_raw_os_error(22));
            }
            singles.push(t.contents[0]);
            Ok(())
        });
        assert_eq!((dropped, singles), (0, vec![0, 1, 2]));
    }

    #[test]
    fn dont_fragment_splits_runs_and_keeps_order() {
        let mut o = Outbox::default();
        let via = Via::Relay(addr(50_000));
        for (i, df) in [false, false, true, true, false].into_iter().enumerate() {
            o.push(via, addr(9), &[i as u8; 40], df);
        }
        let mut sent = Vec::new();
        let dropped = o.flush(64, |_, df, t| {
            let firsts: Vec<u8> = t.contents.chunks(40).map(|c| c[0]).collect();
            sent.push((df, firsts));
            Ok(())
        });
        assert_eq!(dropped, 0);
        assert_eq!(
            sent,
            vec![(false, vec![0, 1]), (true, vec![2, 3]), (false, vec![4])]
        );
    }

    #[test]
    fn full_socket_drops_are_counted() {
        let mut o = Outbox::default();
        for i in 0..3u8 {
            o.push(Via::Relay(addr(50_000)), addr(9), &[i; 40], false);
        }
        o.push(Via::Relay(addr(50_000)), addr(10), &[9; 40], false);
        let dropped = o.flush(64, |_, _, _| Err(io::ErrorKind::WouldBlock.into()));
        assert_eq!(dropped, 4);
    }

    /// Real loopback sockets: a GSO run arrives as separate datagrams, in order, and one
    /// receive call returns several datagrams.
    #[test]
    fn loopback_gso_send_and_batched_receive() {
        let state = probe_state().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut o = Outbox::default();
        for i in 0..20u8 {
            let len = if i == 19 { 30 } else { 120 };
            o.push(Via::Relay(addr(1)), to, &vec![i; len], false);
        }
        let dropped = o.flush(state.max_gso_segments(), |_, _, t| {
            state.try_send((&tx).into(), t)
        });
        assert_eq!(dropped, 0);

        rx.set_nonblocking(true).unwrap();
        let mut batch = RecvBatch::new();
        let mut got = Vec::new();
        let mut calls = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while got.len() < 20 && std::time::Instant::now() < deadline {
            match batch.recv(&state, (&rx).into()) {
                Ok(_) => {
                    calls += 1;
                    for (from, d) in batch.datagrams() {
                        assert_eq!(from, tx.local_addr().unwrap());
                        got.push(d.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("receive failed: {e}"),
            }
        }
        assert_eq!(got.len(), 20);
        for (i, d) in got.iter().enumerate() {
            let len = if i == 19 { 30 } else { 120 };
            assert_eq!(d, &vec![i as u8; len], "datagram {i}");
        }
        assert!(calls < 20, "{calls} receive calls for 20 datagrams");
    }
}
