//! Batched sends. The datagrams one pump produces (a frame forwarded to every
//! subscriber, the pacer's releases) are queued and sent together: with `sendmmsg` on
//! Linux, up to [`BATCH`] per system call, instead of one `sendto` each.

use str0m::net::Transmit;
use tokio::net::UdpSocket;
use tracing::trace;

use crate::metrics::SfuMetrics;

/// Datagrams per `sendmmsg` call and the queue length that triggers a flush.
pub(super) const BATCH: usize = 64;

/// Datagrams waiting to be sent.
pub(super) struct Outbox {
    /// In the order they were produced.
    queue: Vec<Transmit>,
    /// `sendmmsg`'s message headers, allocated once.
    #[cfg(target_os = "linux")]
    headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
}

impl Outbox {
    pub(super) fn new() -> Self {
        Self {
            queue: Vec::with_capacity(BATCH),
            #[cfg(target_os = "linux")]
            headers: nix::sys::socket::MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Queues a datagram; true when the queue is full and should be flushed.
    pub(super) fn push(&mut self, t: Transmit) -> bool {
        self.queue.push(t);
        self.queue.len() >= BATCH
    }

    /// Sends everything queued. A full socket buffer drops the rest (RTP tolerates loss,
    /// and waiting would stall every other peer); an error for one destination (an ICMP
    /// error reported on the socket) drops that datagram only. Both are counted.
    pub(super) fn flush(&mut self, socket: &UdpSocket, metrics: &SfuMetrics) {
        if self.queue.is_empty() {
            return;
        }
        let mut start = 0;
        while start < self.queue.len() {
            match self.send_some(socket, start) {
                Ok(0) => {
                    metrics.send_dropped.inc();
                    start += 1;
                }
                Ok(n) => {
                    let bytes: usize = self.queue[start..start + n]
                        .iter()
                        .map(|t| t.contents.len())
                        .sum();
                    metrics.packets_out.inc_by(n as u64);
                    metrics.bytes_out.inc_by(bytes as u64);
                    start += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let rest = (self.queue.len() - start) as u64;
                    metrics.send_dropped.inc_by(rest);
                    trace!("socket buffer full: {rest} datagrams dropped");
                    break;
                }
                Err(e) => {
                    metrics.send_dropped.inc();
                    trace!("send to {}: {e}", self.queue[start].destination);
                    start += 1;
                }
            }
        }
        self.queue.clear();
    }

    /// Sends from `queue[start..]` in one call; how many went.
    #[cfg(target_os = "linux")]
    fn send_some(&mut self, socket: &UdpSocket, start: usize) -> std::io::Result<usize> {
        use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmmsg};
        use std::io::IoSlice;
        use std::os::fd::AsRawFd;

        let batch = &self.queue[start..self.queue.len().min(start + BATCH)];
        let slices: Vec<[IoSlice<'_>; 1]> =
            batch.iter().map(|t| [IoSlice::new(&t.contents)]).collect();
        let addrs: Vec<Option<SockaddrStorage>> = batch
            .iter()
            .map(|t| Some(SockaddrStorage::from(t.destination)))
            .collect();
        let no_cmsgs: [ControlMessage<'_>; 0] = [];
        let sent = sendmmsg(
            socket.as_raw_fd(),
            &mut self.headers,
            &slices,
            &addrs,
            no_cmsgs,
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(std::io::Error::from)?;
        Ok(sent.count())
    }

    /// Sends one datagram (no `sendmmsg` here).
    #[cfg(not(target_os = "linux"))]
    fn send_some(&mut self, socket: &UdpSocket, start: usize) -> std::io::Result<usize> {
        let t = &self.queue[start];
        socket.try_send_to(&t.contents, t.destination).map(|_| 1)
    }
}
