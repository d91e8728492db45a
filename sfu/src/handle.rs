//! The public face of the SFU: [`Sfu::start`] binds the sockets and starts one driver
//! thread per shard; [`SfuHandle`] routes requests to them and awaits the replies.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{mpsc, oneshot};
use tracing::info;

use crate::config::SfuConfig;
use crate::driver::{Driver, DriverParts, HANDOFF_QUEUE, ShardLink, Shared};
use crate::error::{RouterError, SfuError};
use crate::event::{EventSink, ParticipantStats, SfuEvents};
use crate::ids::{ParticipantId, RoomId, TrackId, TrackKind};
use crate::metrics::SfuMetrics;
use crate::picture::Size;
use crate::router::Census;
use crate::simulcast::{LayerLimit, Quality};

/// Requests queued between the handle and each driver.
const COMMAND_QUEUE: usize = 256;

/// Socket buffer asked for each shard's socket, in bytes.
const SOCKET_BUFFER: usize = 4 << 20;

/// A request to the driver task, with where its reply goes.
pub(crate) enum Command {
    Join {
        room: RoomId,
        participant: ParticipantId,
        /// Counted against the limits already (else the shard counts it).
        admitted: bool,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Offer {
        participant: ParticipantId,
        sdp: String,
        reply: oneshot::Sender<Result<String, SfuError>>,
    },
    Answer {
        participant: ParticipantId,
        offer_id: u64,
        sdp: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Leave {
        participant: ParticipantId,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Subscribe {
        participant: ParticipantId,
        track: TrackId,
        on: bool,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Limit {
        participant: ParticipantId,
        track: TrackId,
        limit: LayerLimit,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    AutoSubscribe {
        participant: ParticipantId,
        on: bool,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Pin {
        participant: ParticipantId,
        pinned: Vec<ParticipantId>,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Mute {
        participant: ParticipantId,
        kind: Option<TrackKind>,
        muted: bool,
        reply: oneshot::Sender<Result<Vec<TrackId>, SfuError>>,
    },
    Stats {
        reply: oneshot::Sender<Vec<ParticipantStats>>,
    },
    Census {
        reply: oneshot::Sender<(Census, usize)>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Starts SFUs.
///
/// ## Shards
///
/// The SFU runs [`SfuConfig::shards`] drivers, each on its own thread with its own
/// single-threaded runtime, its own socket bound to the same address (SO_REUSEPORT), its
/// own router and its own sessions: no lock on the packet path. A room's first
/// [`SfuConfig::spread_rooms_above`] members join its home shard (the one with the fewest
/// sessions when the room opened), so a small room's forwarding never crosses shards;
/// later ones fill other shards as many at a time, the shards holding a room mirror each
/// other's members and tracks, and frames cross to the shards of their subscribers
/// through bounded channels (docs/sfu.md, "Shards"). The kernel spreads
/// incoming datagrams over the sockets by their source address, so a datagram may arrive
/// at a shard that does not hold its peer: that shard hands it to the owner through a
/// bounded channel (and learns the owner of a new source by passing its first datagram
/// around the shards). Replies leave through the owner's socket, from the same address.
pub struct Sfu;

impl Sfu {
    /// Binds the media sockets and starts the drivers on their threads. Returns the
    /// handle (clone it freely) and the event stream (one consumer, all shards).
    pub async fn start(config: SfuConfig) -> Result<(SfuHandle, SfuEvents), SfuError> {
        let metrics = SfuMetrics::default();
        let count = config.shard_count().max(1);
        let sockets = bind_sockets(config.bind, count)?;
        let local_addr = sockets[0].local_addr()?;
        let mut listeners: Vec<Option<std::net::TcpListener>> = match config.tcp_bind {
            Some(bind) => bind_tcp(bind, count)?.into_iter().map(Some).collect(),
            None => (0..count).map(|_| None).collect(),
        };
        let tcp_addr = listeners[0].as_ref().map(|l| l.local_addr()).transpose()?;
        let shared = Arc::new(Shared::new(
            &config,
            local_addr,
            tcp_addr.map(|a| a.port()),
            count,
        )?);
        let (events, stream) = EventSink::new(config.event_backlog, metrics.events_dropped.clone());
        let placement: Placement = Arc::default();
        let (handoff_tx, handoff_rx): (Vec<_>, Vec<_>) =
            (0..count).map(|_| mpsc::channel(HANDOFF_QUEUE)).unzip();
        let (mirror_tx, mirror_rx): (Vec<_>, Vec<_>) =
            (0..count).map(|_| mpsc::unbounded_channel()).unzip();
        let mut commands = Vec::with_capacity(count);
        let links = sockets.into_iter().zip(handoff_rx).zip(mirror_rx);
        for (index, ((socket, handoff), mirror)) in links.enumerate() {
            let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
            commands.push(tx);
            let shard = ShardLink {
                index,
                count,
                handoff,
                peers: handoff_tx.clone(),
                mirror,
                mirrors: mirror_tx.clone(),
                placement: placement.clone(),
            };
            let driver = DriverParts {
                config: config.clone(),
                shared: shared.clone(),
                socket,
                tcp: listeners[index].take(),
                shard,
                commands: rx,
                events: events.clone(),
                metrics: metrics.clone(),
            };
            let ready_rx = spawn_shard(index, driver)?;
            ready_rx.await.map_err(|_| SfuError::Closed)??;
        }
        info!(%local_addr, ?tcp_addr, shards = count, candidates = ?shared.candidate_ips(), "SFU media socket bound");
        Ok((
            SfuHandle {
                shards: commands.into(),
                placement,
                shared,
                spread_above: config.spread_rooms_above,
                limits: (
                    config.router.max_rooms,
                    config.router.max_participants_per_room,
                ),
                local_addr,
                tcp_addr,
                metrics,
            },
            stream,
        ))
    }
}

/// Starts shard `index`'s thread: a current-thread runtime running its driver. The
/// receiver says whether the driver started.
fn spawn_shard(
    index: usize,
    p: DriverParts,
) -> Result<oneshot::Receiver<Result<(), SfuError>>, SfuError> {
    let (ready_tx, ready_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("huddle-sfu-{index}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(SfuError::Io(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                match Driver::new(p) {
                    Ok(driver) => {
                        let _ = ready_tx.send(Ok(()));
                        driver.run().await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })?;
    Ok(ready_rx)
}

/// Binds `count` UDP sockets to `bind`; with more than one they share the address
/// (SO_REUSEPORT; port 0 takes the first one's port). Non-blocking, ready for tokio.
fn bind_sockets(bind: SocketAddr, count: usize) -> Result<Vec<std::net::UdpSocket>, SfuError> {
    let mut sockets = Vec::with_capacity(count);
    let mut addr = bind;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if count > 1 {
            socket.set_reuse_port(true)?;
        }
        if addr.is_ipv6() {
            // IPv4 peers would otherwise arrive as mapped IPv6 addresses that match no
            // candidate.
            socket.set_only_v6(true)?;
        }
        // Bursts (a keyframe to many subscribers) must not overflow the default buffers;
        // the kernel caps these at net.core.{r,w}mem_max.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let socket: std::net::UdpSocket = socket.into();
        addr = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// Binds `count` TCP listeners for ICE over TCP to `bind`, sharing the address like
/// the UDP sockets (the kernel spreads connections over them). Non-blocking.
fn bind_tcp(bind: SocketAddr, count: usize) -> Result<Vec<std::net::TcpListener>, SfuError> {
    let mut listeners = Vec::with_capacity(count);
    let mut addr = bind;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        // A restarted server must not wait for the old connections' TIME_WAIT.
        socket.set_reuse_address(true)?;
        if count > 1 {
            socket.set_reuse_port(true)?;
        }
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Which shard holds each participant: written on join and removal (control path
/// only), read by the handle to route a participant's requests.
pub(crate) type Placement = Arc<Mutex<HashMap<ParticipantId, usize>>>;

/// The shard a room's name hashes to: its home among shards equally loaded.
fn shard_of(room: &RoomId, count: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    room.as_str().hash(&mut h);
    (h.finish() % count as u64) as usize
}

/// Sends requests to a running SFU. Cheap to clone; the SFU stops when every handle is
/// dropped or [`shutdown`](Self::shutdown) is called.
#[derive(Clone, Debug)]
pub struct SfuHandle {
    /// To each shard's driver.
    shards: Arc<[mpsc::Sender<Command>]>,
    /// Which shard holds each participant.
    placement: Placement,
    /// Rooms' members per shard, for placing a spread room's members.
    shared: Arc<Shared>,
    /// [`SfuConfig::spread_rooms_above`].
    spread_above: usize,
    /// Rooms, and members per room, the SFU admits.
    limits: (usize, usize),
    /// The bound media socket.
    local_addr: SocketAddr,
    /// The ICE-TCP listeners' address, if ICE-TCP is on.
    tcp_addr: Option<SocketAddr>,
    /// Shared counters.
    metrics: SfuMetrics,
}

impl SfuHandle {
    /// The media socket's address (the port is the one bound, useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where ICE over TCP listens (the port is the one bound), if it is on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// SFU-wide counters; register them with [`SfuMetrics::register`].
    pub fn metrics(&self) -> &SfuMetrics {
        &self.metrics
    }

    /// How many shards (driver threads) run.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Admits `participant` to `room` for media. The client offers next.
    pub async fn join(
        &self,
        room: impl Into<RoomId>,
        participant: impl Into<ParticipantId>,
    ) -> Result<(), SfuError> {
        let (room, participant) = (room.into(), participant.into());
        // A participant already in a room (of any shard) is refused by its own shard.
        let placed = self.placement.lock().get(&participant).copied();
        let shard = match placed {
            Some(shard) => shard,
            None => {
                // Placed and counted at once: members joining together see each other.
                let hashed = shard_of(&room, self.shards.len());
                let (max_rooms, max_members) = self.limits;
                self.shared.place_and_admit(
                    &room,
                    hashed,
                    self.spread_above,
                    max_rooms,
                    max_members,
                )?
            }
        };
        let id = participant.clone();
        let joined = self
            .call_shard(shard, |reply| Command::Join {
                room: room.clone(),
                participant,
                admitted: placed.is_none(),
                reply,
            })
            .await;
        if placed.is_none() && matches!(joined, Err(SfuError::Closed)) {
            self.shared.release(&room, shard);
        }
        joined??;
        self.placement.lock().insert(id, shard);
        Ok(())
    }

    /// Applies a client's SDP offer (the first one creates the session; later ones
    /// renegotiate, e.g. to add or remove published tracks) and returns the SDP answer.
    pub async fn offer(
        &self,
        participant: impl Into<ParticipantId>,
        sdp: impl Into<String>,
    ) -> Result<String, SfuError> {
        let (participant, sdp) = (participant.into(), sdp.into());
        self.call(&participant.clone(), |reply| Command::Offer {
            participant,
            sdp,
            reply,
        })
        .await
    }

    /// Applies the client's answer to the SFU's offer `offer_id`
    /// (from [`SfuEvent::NeedsAnswer`](crate::SfuEvent::NeedsAnswer)).
    pub async fn answer(
        &self,
        participant: impl Into<ParticipantId>,
        offer_id: u64,
        sdp: impl Into<String>,
    ) -> Result<(), SfuError> {
        let (participant, sdp) = (participant.into(), sdp.into());
        self.call(&participant.clone(), |reply| Command::Answer {
            participant,
            offer_id,
            sdp,
            reply,
        })
        .await
    }

    /// Ends a participant's media session and frees all its state; the others stop
    /// receiving its tracks (their m-lines are stopped by renegotiation).
    pub async fn leave(&self, participant: impl Into<ParticipantId>) -> Result<(), SfuError> {
        let participant = participant.into();
        self.call(&participant.clone(), |reply| Command::Leave {
            participant,
            reply,
        })
        .await
    }

    /// Subscribes `participant` to `track` (selective subscription).
    pub async fn subscribe(
        &self,
        participant: impl Into<ParticipantId>,
        track: TrackId,
    ) -> Result<(), SfuError> {
        self.set_subscribed(participant.into(), track, true).await
    }

    /// Stops sending `track` to `participant`.
    pub async fn unsubscribe(
        &self,
        participant: impl Into<ParticipantId>,
        track: TrackId,
    ) -> Result<(), SfuError> {
        self.set_subscribed(participant.into(), track, false).await
    }

    /// Subscribes or unsubscribes.
    async fn set_subscribed(
        &self,
        participant: ParticipantId,
        track: TrackId,
        on: bool,
    ) -> Result<(), SfuError> {
        self.call(&participant.clone(), |reply| Command::Subscribe {
            participant,
            track,
            on,
            reply,
        })
        .await
    }

    /// Sets the best simulcast quality `participant` wants of `track` (it must receive
    /// the track). The layer sent is the best one at or below it that its bandwidth
    /// allows; unlayered tracks ignore it. [`Quality::High`] by default.
    pub async fn set_max_quality(
        &self,
        participant: impl Into<ParticipantId>,
        track: TrackId,
        quality: Quality,
    ) -> Result<(), SfuError> {
        self.limit(participant.into(), track, LayerLimit::Quality(quality))
            .await
    }

    /// Sets the largest picture `participant` wants of `track` (it must receive the
    /// track): the layer sent is the best one whose picture, as its keyframes declare
    /// it, fits within `max` (the lowest layer if none does), and at or below the
    /// requested quality. `None` lifts the limit (the default). Unlayered tracks ignore
    /// it. A layer whose size is not known yet counts as fitting unless a lower layer
    /// is already too large.
    pub async fn set_max_size(
        &self,
        participant: impl Into<ParticipantId>,
        track: TrackId,
        max: Option<Size>,
    ) -> Result<(), SfuError> {
        self.limit(participant.into(), track, LayerLimit::Size(max))
            .await
    }

    async fn limit(
        &self,
        participant: ParticipantId,
        track: TrackId,
        limit: LayerLimit,
    ) -> Result<(), SfuError> {
        self.call(&participant.clone(), |reply| Command::Limit {
            participant,
            track,
            limit,
            reply,
        })
        .await
    }

    /// Pins members of its room into `participant`'s view under "last N"
    /// (`sfu.last_n`): their video is always forwarded to it, taking the first of its N
    /// slots. Replaces the earlier list; an empty one unpins. At most
    /// [`MAX_PINNED`](crate::router::MAX_PINNED); each must be in the room. Without
    /// "last N" every video is forwarded anyway.
    pub async fn set_pinned(
        &self,
        participant: impl Into<ParticipantId>,
        pinned: Vec<ParticipantId>,
    ) -> Result<(), SfuError> {
        let participant = participant.into();
        self.call(&participant.clone(), |reply| Command::Pin {
            participant,
            pinned,
            reply,
        })
        .await
    }

    /// Mutes (`muted`) or unmutes what `participant` publishes, of `kind` or all, for
    /// everyone: a moderator's decision that its own client cannot undo, not even by
    /// publishing again (tracks it publishes while muted start muted). While muted a
    /// track's frames reach nobody (and its audio levels choose no speaker); unmuted
    /// video resumes at a keyframe, which the SFU asks for. Each track that changed, or
    /// started muted, is reported as [`SfuEvent::TrackMuted`](crate::SfuEvent::TrackMuted);
    /// the ones that changed are returned.
    pub async fn mute(
        &self,
        participant: impl Into<ParticipantId>,
        kind: Option<TrackKind>,
        muted: bool,
    ) -> Result<Vec<TrackId>, SfuError> {
        let participant = participant.into();
        self.call(&participant.clone(), |reply| Command::Mute {
            participant,
            kind,
            muted,
            reply,
        })
        .await
    }

    /// Whether `participant` is subscribed to new tracks of its room automatically
    /// (on by default; existing subscriptions stay either way).
    pub async fn set_auto_subscribe(
        &self,
        participant: impl Into<ParticipantId>,
        on: bool,
    ) -> Result<(), SfuError> {
        let participant = participant.into();
        self.call(&participant.clone(), |reply| Command::AutoSubscribe {
            participant,
            on,
            reply,
        })
        .await
    }

    /// Current per-participant statistics (of every shard).
    pub async fn stats(&self) -> Result<Vec<ParticipantStats>, SfuError> {
        let all = self.call_all(|reply| Command::Stats { reply }).await?;
        Ok(all.into_iter().flatten().collect())
    }

    /// Counts of rooms, participants, tracks and subscriptions held by the routers, and
    /// of WebRTC sessions held by the drivers (summed over the shards).
    pub async fn census(&self) -> Result<(Census, usize), SfuError> {
        let all = self.call_all(|reply| Command::Census { reply }).await?;
        Ok(all
            .into_iter()
            .fold((Census::default(), 0), |(sum, sessions), (c, n)| {
                (sum + c, sessions + n)
            }))
    }

    /// Ends every session and stops the drivers; returns once they have.
    pub async fn shutdown(&self) -> Result<(), SfuError> {
        self.call_all(|reply| Command::Shutdown { reply }).await?;
        Ok(())
    }

    /// Sends a request to shard `shard` and awaits its reply.
    async fn call_shard<T>(
        &self,
        shard: usize,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.shards[shard]
            .send(make(reply))
            .await
            .map_err(|_| SfuError::Closed)?;
        rx.await.map_err(|_| SfuError::Closed)
    }

    /// Sends a request about `participant` to the shard holding it.
    async fn call<T>(
        &self,
        participant: &ParticipantId,
        make: impl FnOnce(oneshot::Sender<Result<T, SfuError>>) -> Command,
    ) -> Result<T, SfuError> {
        let shard = self.placement.lock().get(participant).copied();
        match shard {
            Some(shard) => self.call_shard(shard, make).await?,
            None => Err(RouterError::UnknownParticipant(participant.clone()).into()),
        }
    }

    /// Sends a request to every shard and collects the replies in shard order.
    async fn call_all<T>(
        &self,
        make: impl Fn(oneshot::Sender<T>) -> Command,
    ) -> Result<Vec<T>, SfuError> {
        let mut replies = Vec::with_capacity(self.shards.len());
        for shard in 0..self.shards.len() {
            replies.push(self.call_shard(shard, &make).await?);
        }
        Ok(replies)
    }
}
