//! # huddle-sfu
//!
//! huddle's selective forwarding unit: one WebRTC endpoint on one UDP port (7882 by
//! default) that every participant connects to. Each participant publishes its audio
//! (Opus) and video (H.264 or VP8) once; the SFU forwards each track to every other
//! participant of the room who subscribes to it (everyone, by default).
//!
//! Built on [str0m](https://docs.rs/str0m) (sans-IO WebRTC): str0m does ICE (lite),
//! DTLS-SRTP, RTP/RTCP, packetization, per-subscriber SSRC/sequence rewriting and NACK
//! answers from its send buffer; this crate decides who gets what and drives the loop.
//!
//! Each subscriber's session runs str0m's send-side bandwidth estimator (TWCC); what it
//! allows, capped per subscriber and minus audio, picks the simulcast layer each
//! subscriber receives of each layered video track ([`simulcast`]).
//!
//! Clients whose network blocks UDP reach it over ICE-TCP (RFC 6544 passive candidates;
//! [`SfuConfig::tcp_bind`]).
//!
//! It does not do signalling (`huddle-signal` carries SDP over its WebSocket and calls
//! this API), codec work (`huddle-media`) or temporal/SVC layers yet (see `docs/sfu.md`).
//!
//! ## Layout
//!
//! - [`router`]: the sans-IO core. Rooms, participants, tracks, subscriptions, forwarding
//!   decisions, keyframe-request throttling ([`keyframe`]), active speaker ([`speaker`]),
//!   limits, cleanup. Plain calls with `now`; tested with simulated time.
//! - [`simulcast`]: sans-IO layer choice: layer rates, the split of a subscriber's
//!   budget, keyframe-gated switches with upgrade hysteresis, timestamp rewriting.
//! - [`quality`]: sans-IO connection quality of each participant (loss both ways,
//!   jitter, round trip, paused video) as an E-model score and a level with hysteresis.
//! - `peer` (private): one participant's str0m `Rtc`, the negotiation state of its
//!   m-lines and its bandwidth state.
//! - `driver` (private): one per shard, on its own thread, owning its socket (all
//!   shards share one address), its rooms' `Rtc`s and its router (see [`Sfu`] for how
//!   rooms and datagrams find their shard). A datagram goes to the peer whose
//!   `Rtc::accepts` it; the driver then polls
//!   `poll_output` until a timeout, sends transmits, and forwards each received frame to
//!   the subscribers' `Rtc`s with str0m's frame writer.
//! - [`Sfu`] / [`SfuHandle`]: requests to the driver; [`SfuEvents`]: what it reports.
//!
//! ## Offer/answer direction
//!
//! The **client offers first**: after [`SfuHandle::join`], it sends an offer with its
//! send-only (or send-recv) m-lines and gets the answer from [`SfuHandle::offer`]. When
//! tracks come and go, the **SFU offers**: it emits [`SfuEvent::NeedsAnswer`] with an
//! `offer_id`, signalling relays the SDP, and the client's answer comes back through
//! [`SfuHandle::answer`]. The client may offer again at any time (to publish or remove
//! its own tracks).
//!
//! **Glare**: the SFU is the polite peer. A client offer arriving while an SFU offer is
//! outstanding wins: the SFU rolls its offer back, answers, and offers the same changes
//! again with a new `offer_id`; an answer to the rolled-back offer is refused with
//! [`SfuError::StaleAnswer`]. The client is the impolite peer: while its own offer is
//! outstanding it ignores SFU offers (the SFU re-offers right after answering). An SFU
//! offer left unanswered for `answer_timeout` (5 s) is withdrawn and offered again.
//!
//! **Ordering**: signalling must deliver, per participant, the answer returned by
//! [`SfuHandle::offer`] before any `NeedsAnswer` for that participant received after
//! `offer` returned (e.g. by relaying both through the participant's connection task,
//! which awaits `offer` before taking its next queued message). The SFU emits events in
//! the order it makes decisions; this rule keeps that order on the client's side.
//!
//! ## Example
//!
//! ```no_run
//! use huddle_sfu::{Sfu, SfuConfig, SfuEvent};
//!
//! # async fn signalling(client_offer: String) -> Result<(), huddle_sfu::SfuError> {
//! let config = SfuConfig {
//!     bind: "192.0.2.10:7882".parse().unwrap(),
//!     ..SfuConfig::default()
//! };
//! let (sfu, mut events) = Sfu::start(config).await?;
//!
//! // A participant joins the room for media and sends its offer.
//! sfu.join("standup", "alice").await?;
//! let answer: String = sfu.offer("alice", client_offer).await?;
//! // ... send `answer` to alice over the WebSocket.
//!
//! let handle = sfu.clone();
//! tokio::spawn(async move {
//!     while let Some(event) = events.recv().await {
//!         match event {
//!             SfuEvent::NeedsAnswer { participant, offer_id, sdp } => {
//!                 // Relay `sdp` to the participant; when its answer arrives:
//!                 # let client_answer = String::new();
//!                 let _ = handle.answer(participant, offer_id, client_answer).await;
//!             }
//!             SfuEvent::ActiveSpeaker { room, participant } => {
//!                 // Tell the room who speaks.
//!             }
//!             _ => {}
//!         }
//!     }
//! });
//!
//! // Later: frees all of alice's state; the others' m-lines for her are stopped.
//! sfu.leave("alice").await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod capture;
pub mod config;
mod driver;
pub mod error;
pub mod event;
mod handle;
pub mod ids;
pub mod keyframe;
pub mod metrics;
mod peer;
pub mod picture;
mod policer;
pub mod quality;
pub mod router;
pub mod simulcast;
pub mod speaker;

pub use config::{
    BandwidthConfig, DEFAULT_PORT, DEFAULT_TCP_PORT, RouterConfig, SfuConfig, SpeakerConfig,
};
pub use driver::ICE_TCP_MAX_WAITING_PER_ADDRESS;
pub use error::{RouterError, SfuError};
pub use event::{
    LayerStats, LeaveReason, ParticipantStats, PauseReason, PublishedTrackStats, SfuEvent,
    SfuEvents, SubscribedTrackStats, TrackRefusal,
};
pub use handle::{Sfu, SfuHandle};
pub use ids::{ParticipantId, RoomId, TrackId, TrackKind, TrackKinds};
pub use metrics::SfuMetrics;
pub use quality::{ConnectionQuality, QualityLevel};
pub use simulcast::Quality;
