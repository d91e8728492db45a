//! The public face of the SFU: [`Sfu::start`] binds the socket and spawns the driver
//! task; [`SfuHandle`] sends it requests and awaits the replies.

use std::net::SocketAddr;

use tokio::sync::{mpsc, oneshot};

use crate::config::SfuConfig;
use crate::driver::Driver;
use crate::error::SfuError;
use crate::event::{ParticipantStats, SfuEvents};
use crate::ids::{ParticipantId, RoomId, TrackId};
use crate::metrics::SfuMetrics;
use crate::router::Census;
use crate::simulcast::Quality;

/// Requests queued between the handle and the driver.
const COMMAND_QUEUE: usize = 256;

/// A request to the driver task, with where its reply goes.
pub(crate) enum Command {
    Join {
        room: RoomId,
        participant: ParticipantId,
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
    Quality {
        participant: ParticipantId,
        track: TrackId,
        quality: Quality,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    AutoSubscribe {
        participant: ParticipantId,
        on: bool,
        reply: oneshot::Sender<Result<(), SfuError>>,
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
pub struct Sfu;

impl Sfu {
    /// Binds the media socket and spawns the driver on the current tokio runtime.
    /// Returns the handle (clone it freely) and the event stream (one consumer).
    pub async fn start(config: SfuConfig) -> Result<(SfuHandle, SfuEvents), SfuError> {
        let metrics = SfuMetrics::default();
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (driver, events) = Driver::bind(config, rx, metrics.clone()).await?;
        let local_addr = driver.local_addr();
        tokio::spawn(driver.run());
        Ok((
            SfuHandle {
                tx,
                local_addr,
                metrics,
            },
            events,
        ))
    }
}

/// Sends requests to a running SFU. Cheap to clone; the SFU stops when every handle is
/// dropped or [`shutdown`](Self::shutdown) is called.
#[derive(Clone, Debug)]
pub struct SfuHandle {
    /// To the driver task.
    tx: mpsc::Sender<Command>,
    /// The bound media socket.
    local_addr: SocketAddr,
    /// Shared counters.
    metrics: SfuMetrics,
}

impl SfuHandle {
    /// The media socket's address (the port is the one bound, useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// SFU-wide counters; register them with [`SfuMetrics::register`].
    pub fn metrics(&self) -> &SfuMetrics {
        &self.metrics
    }

    /// Admits `participant` to `room` for media. The client offers next.
    pub async fn join(
        &self,
        room: impl Into<RoomId>,
        participant: impl Into<ParticipantId>,
    ) -> Result<(), SfuError> {
        let (room, participant) = (room.into(), participant.into());
        self.call(|reply| Command::Join {
            room,
            participant,
            reply,
        })
        .await?
    }

    /// Applies a client's SDP offer (the first one creates the session; later ones
    /// renegotiate, e.g. to add or remove published tracks) and returns the SDP answer.
    pub async fn offer(
        &self,
        participant: impl Into<ParticipantId>,
        sdp: impl Into<String>,
    ) -> Result<String, SfuError> {
        let (participant, sdp) = (participant.into(), sdp.into());
        self.call(|reply| Command::Offer {
            participant,
            sdp,
            reply,
        })
        .await?
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
        self.call(|reply| Command::Answer {
            participant,
            offer_id,
            sdp,
            reply,
        })
        .await?
    }

    /// Ends a participant's media session and frees all its state; the others stop
    /// receiving its tracks (their m-lines are stopped by renegotiation).
    pub async fn leave(&self, participant: impl Into<ParticipantId>) -> Result<(), SfuError> {
        let participant = participant.into();
        self.call(|reply| Command::Leave { participant, reply })
            .await?
    }

    /// Subscribes `participant` to `track` (selective subscription).
    pub async fn subscribe(
        &self,
        participant: impl Into<ParticipantId>,
        track: TrackId,
    ) -> Result<(), SfuError> {
        let participant = participant.into();
        self.call(|reply| Command::Subscribe {
            participant,
            track,
            on: true,
            reply,
        })
        .await?
    }

    /// Stops sending `track` to `participant`.
    pub async fn unsubscribe(
        &self,
        participant: impl Into<ParticipantId>,
        track: TrackId,
    ) -> Result<(), SfuError> {
        let participant = participant.into();
        self.call(|reply| Command::Subscribe {
            participant,
            track,
            on: false,
            reply,
        })
        .await?
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
        let participant = participant.into();
        self.call(|reply| Command::Quality {
            participant,
            track,
            quality,
            reply,
        })
        .await?
    }

    /// Whether `participant` is subscribed to new tracks of its room automatically
    /// (on by default; existing subscriptions stay either way).
    pub async fn set_auto_subscribe(
        &self,
        participant: impl Into<ParticipantId>,
        on: bool,
    ) -> Result<(), SfuError> {
        let participant = participant.into();
        self.call(|reply| Command::AutoSubscribe {
            participant,
            on,
            reply,
        })
        .await?
    }

    /// Current per-participant statistics.
    pub async fn stats(&self) -> Result<Vec<ParticipantStats>, SfuError> {
        self.call(|reply| Command::Stats { reply }).await
    }

    /// Counts of rooms, participants, tracks and subscriptions held by the router, and
    /// of WebRTC sessions held by the driver.
    pub async fn census(&self) -> Result<(Census, usize), SfuError> {
        self.call(|reply| Command::Census { reply }).await
    }

    /// Ends every session and stops the driver; returns once it has.
    pub async fn shutdown(&self) -> Result<(), SfuError> {
        self.call(|reply| Command::Shutdown { reply }).await
    }

    /// Sends a request and awaits its reply.
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| SfuError::Closed)?;
        rx.await.map_err(|_| SfuError::Closed)
    }
}
