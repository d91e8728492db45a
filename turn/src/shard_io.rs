//! The datagram path of a shard: a batch read from a listener or relay socket runs through
//! the core under one lock, and what the core produced is queued per thread and sent when
//! the batch is done. The path is synchronous from receive to send, so one set of buffers
//! per thread serves every socket and an idle relay socket holds none.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::driver::Shared;
use crate::relay_sockets::Ports;
use crate::server::{FiveTuple, Route, Transport, TurnServer};
use crate::udp_io::{Outbox, RecvBatch, Via};

/// Buffers of one worker thread.
struct ThreadIo {
    recv: RecvBatch,
    /// Datagrams produced since the last flush.
    outbox: Outbox,
    /// The core's output for one input.
    out: Vec<u8>,
}

thread_local! {
    static IO: RefCell<ThreadIo> = RefCell::new(ThreadIo {
        recv: RecvBatch::new(),
        outbox: Outbox::default(),
        out: Vec::with_capacity(crate::udp_io::MAX_DATAGRAM),
    });
}

/// The outcome of reading one socket.
enum Read {
    /// Nothing more is waiting.
    Drained,
    /// Full batches were read; more may be waiting.
    More,
}

impl Shared {
    /// Queues (UDP) or hands to the connection's writer (TCP, TLS) what the core produced.
    pub(crate) fn queue(&self, route: Route, data: &[u8]) {
        IO.with(|io| self.route(&mut io.borrow_mut().outbox, route, data));
    }

    /// Sends every queued datagram.
    pub(crate) fn flush_queued(&self) {
        IO.with(|io| self.flush(&mut io.borrow_mut().outbox));
    }

    fn route(&self, outbox: &mut Outbox, route: Route, data: &[u8]) {
        match route {
            Route::Peer {
                relay,
                peer,
                dont_fragment,
            } => outbox.push(Via::Relay(relay), peer, data, dont_fragment),
            Route::Client(tuple) => match tuple.transport {
                Transport::Udp => {
                    outbox.push(Via::Listener(tuple.server), tuple.client, data, false)
                }
                Transport::Tcp | Transport::Tls => {
                    let tx = self.tcp.read().get(&tuple).cloned();
                    // A client that does not read loses datagrams, as it would over UDP.
                    if tx.is_none_or(|tx| tx.try_send(data.to_vec()).is_err()) {
                        self.send_drops.fetch_add(1, Ordering::Relaxed);
                    }
                }
            },
        }
        if outbox.is_full() {
            self.flush(outbox);
        }
    }

    /// Sends the queue without waiting: a datagram that finds a full socket buffer (or a
    /// socket that is gone) is dropped and counted, as the network would drop it.
    fn flush(&self, outbox: &mut Outbox) {
        if outbox.len() == 0 {
            return;
        }
        let state = &self.udp_state;
        let listeners = self.udp.read();
        let relays = self.relays.read();
        let gone = || io::Error::from(io::ErrorKind::NotFound);
        let dropped = outbox.flush(state.max_gso_segments(), |via, df, transmit| match via {
            Via::Listener(local) => match listeners.get(&local) {
                Some(s) => state.try_send(s.get_ref().into(), transmit),
                None => Err(gone()),
            },
            // A datagram whose DF setting cannot be applied is dropped: sent with the
            // wrong one, a path MTU probe would report a size the path does not carry.
            Via::Relay(relay) => match relays.get(&relay) {
                Some(r) => r
                    .set_dont_fragment(df)
                    .and_then(|()| state.try_send((&r.socket).into(), transmit)),
                None => Err(gone()),
            },
        });
        if dropped > 0 {
            self.send_drops.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Reads up to `calls` batches from a client-facing listener; true when it was drained.
    pub(crate) fn read_listener(
        &self,
        local: SocketAddr,
        socket: &std::net::UdpSocket,
        calls: usize,
    ) -> bool {
        IO.with(|io| {
            let io = &mut *io.borrow_mut();
            for _ in 0..calls {
                let read = io.recv.recv(&self.udp_state, socket.into());
                let outcome = self.handle_read(io, read, |core, now, from, data, out| {
                    let tuple = FiveTuple {
                        transport: Transport::Udp,
                        client: from,
                        server: local,
                    };
                    core.handle_client(now, tuple, data, out)
                });
                if let Read::Drained = outcome {
                    return true;
                }
            }
            false
        })
    }

    /// Reads up to `calls` batches from a relay socket; true when it was drained (or is
    /// gone).
    pub(crate) fn read_relay(&self, relay: SocketAddr, calls: usize) -> bool {
        IO.with(|io| {
            let io = &mut *io.borrow_mut();
            for _ in 0..calls {
                // The table is not held while the core runs: the core may release relays.
                let read = match self.relays.read().get(&relay) {
                    Some(r) => io.recv.recv(&self.udp_state, (&r.socket).into()),
                    None => return true,
                };
                let outcome = self.handle_read(io, read, |core, now, peer, data, out| {
                    core.handle_peer(now, relay, peer, data, out)
                });
                if let Read::Drained = outcome {
                    return true;
                }
            }
            false
        })
    }

    /// Runs a received batch through the core and queues the outputs.
    fn handle_read(
        &self,
        io: &mut ThreadIo,
        read: io::Result<usize>,
        mut handle: impl FnMut(
            &mut TurnServer<Ports>,
            Instant,
            SocketAddr,
            &[u8],
            &mut Vec<u8>,
        ) -> Option<Route>,
    ) -> Read {
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Read::Drained,
            // An ICMP error surfaced as a receive error: the socket still has to be read.
            Err(_) => return Read::More,
        };
        let ThreadIo { recv, outbox, out } = io;
        let now = Instant::now();
        let mut core = self.core.lock();
        for (from, data) in recv.datagrams() {
            if let Some(route) = handle(&mut core, now, from, data, out) {
                self.route(outbox, route, out);
            }
        }
        // A short batch means the socket's queue was empty when it was read.
        if n < RecvBatch::CAPACITY {
            Read::Drained
        } else {
            Read::More
        }
    }
}
