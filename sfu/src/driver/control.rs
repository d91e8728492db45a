//! The driver's control side: requests from handles, router changes turned into
//! renegotiation and events, and removal of participants with all their state.

use std::time::Instant;

use str0m::Rtc;
use str0m::bwe::Bitrate;
use tracing::{debug, info};

use super::Driver;
use crate::error::{RouterError, SfuError};
use crate::event::{LeaveReason, SfuEvent};
use crate::handle::Command;
use crate::ids::{ParticipantId, RoomId};
use crate::metrics::QualityLabel;
use crate::peer::Peer;
use crate::policer::Policer;
use crate::quality::QualityLevel;
use crate::router::RouterEvent;

/// Audio packets str0m may hold back waiting for a missing one (see `join`).
const AUDIO_REORDERING_PACKETS: usize = 2;
impl Driver {
    /// Serves one request from a handle.
    pub(super) fn handle_command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Join {
                room,
                participant,
                admitted,
                reply,
            } => {
                let _ = reply.send(self.join(room, participant, admitted, now));
            }
            Command::Offer {
                participant,
                sdp,
                reply,
            } => {
                let res = match self.peers.get_mut(&participant) {
                    Some(p) => p.accept_offer(&sdp),
                    None => Err(RouterError::UnknownParticipant(participant.clone()).into()),
                };
                // A client's ICE restart gives the session a new ufrag of ours.
                self.index_ufrag(&participant);
                if let Err(e) = &res {
                    debug!(%participant, "offer refused: {e}");
                }
                let _ = reply.send(res);
                // The answer goes out before any offer of ours that follows it.
                self.mark_dirty(&participant);
            }
            Command::Answer {
                participant,
                offer_id,
                sdp,
                reply,
            } => {
                let (res, connected) = match self.peers.get_mut(&participant) {
                    Some(p) => (p.accept_answer(offer_id, &sdp), p.connected),
                    None => (
                        Err(RouterError::UnknownParticipant(participant.clone()).into()),
                        false,
                    ),
                };
                let res = res.map(|opened| {
                    // Not connected yet: asked for when it connects (nothing is
                    // forwarded before, and the throttle would refuse a second request
                    // then).
                    if connected {
                        self.request_start_keyframes(opened, now);
                    }
                });
                let _ = reply.send(res);
                self.mark_dirty(&participant);
            }
            Command::Leave { participant, reply } => {
                let res = if self.peers.contains_key(&participant) {
                    self.remove_participant(&participant, LeaveReason::Left);
                    Ok(())
                } else {
                    Err(RouterError::UnknownParticipant(participant).into())
                };
                let _ = reply.send(res);
            }
            Command::Subscribe {
                participant,
                track,
                on,
                reply,
            } => {
                let res = if on {
                    self.router.subscribe(&participant, track)
                } else {
                    self.router.unsubscribe(&participant, track)
                };
                let _ = reply.send(res.map_err(SfuError::from));
            }
            Command::Limit {
                participant,
                track,
                limit,
                reply,
            } => {
                let ok = self
                    .peers
                    .get_mut(&participant)
                    .is_some_and(|p| p.set_limit(track, limit));
                debug!(%participant, %track, ?limit, ok, "subscriber's layer limit");
                if ok {
                    // Applied at once rather than at the next allocation tick (to this
                    // subscriber only: a client repeating requests costs little).
                    self.allocate(Some(&participant), now);
                    let _ = reply.send(Ok(()));
                } else {
                    let e = RouterError::NotSubscribable { participant, track };
                    let _ = reply.send(Err(e.into()));
                }
            }
            Command::AutoSubscribe {
                participant,
                on,
                reply,
            } => {
                let res = self.router.set_auto_subscribe(&participant, on);
                let _ = reply.send(res.map_err(SfuError::from));
            }
            Command::Pin {
                participant,
                pinned,
                reply,
            } => {
                // Noticed by each held camera at its next frame, like a speaker change.
                let res = self.router.set_pinned(&participant, &pinned);
                let _ = reply.send(res.map_err(SfuError::from));
            }
            Command::Mute {
                participant,
                kind,
                muted,
                reply,
            } => {
                let _ = reply.send(self.mute(&participant, kind, muted, now));
            }
            Command::Stats { reply } => {
                let stats = self
                    .peers
                    .values_mut()
                    .map(|p| p.stats(None, &self.router))
                    .collect();
                let _ = reply.send(stats);
            }
            Command::Census { reply } => {
                let _ = reply.send((self.census(), self.peers.len()));
            }
            // Handled by the run loop, which has to stop.
            Command::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
        self.pump(now);
    }

    /// Admits a participant: router first (limits), then its `Rtc`.
    fn join(
        &mut self,
        room: RoomId,
        participant: ParticipantId,
        admitted: bool,
        now: Instant,
    ) -> Result<(), SfuError> {
        // The limits count every shard's rooms and members (the handle counted it when
        // it placed it).
        if !admitted {
            let limits = &self.config.router;
            self.shared.admit(
                &room,
                self.shard.index,
                limits.max_rooms,
                limits.max_participants_per_room,
            )?;
        }
        if self.peers.contains_key(&participant) {
            self.shared.release(&room, self.shard.index);
            return Err(RouterError::AlreadyJoined(participant).into());
        }
        if self.remote.contains_key(&participant) {
            // It was held by another shard, whose leave is still on its way.
            self.forget_remote(&participant);
        }
        // Its first member here learns the room from the other shards.
        let first_here = self.spread && !self.holds(&room);
        let joined = if self.spread {
            // This router may not see the whole room yet; the shared counts do.
            self.router.join_unchecked(&room, &participant)
        } else {
            self.router.join(&room, &participant)
        };
        if let Err(e) = joined {
            self.shared.release(&room, self.shard.index);
            return Err(e.into());
        }
        if self.spread {
            self.mirror_join(&room, &participant, first_here);
        }
        let rtc_config = Rtc::builder()
            // The SFU has a public address and never initiates checks (RFC 8445 §2.5).
            .set_ice_lite(true)
            .set_crypto_provider(self.shared.crypto.clone())
            .clear_codecs()
            .enable_opus(true, self.config.audio_red)
            .enable_h264(true)
            .enable_vp8(true)
            .set_stats_interval(Some(self.config.stats_interval))
            // A lost audio packet must not hold back the ones after it: str0m's default
            // waits for 15 later packets (300 ms of Opus), which a publisher's upstream
            // loss turns into 300 ms of added delay for every listener. Two packets
            // cover ordinary reordering; the listeners' jitter buffers conceal the rest.
            .set_reordering_size_audio(AUDIO_REORDERING_PACKETS)
            .enable_bwe(
                self.config
                    .bandwidth
                    .estimate
                    .then(|| Bitrate::bps(self.config.bandwidth.initial_bitrate)),
            );
        let rtc_config = match &self.shared.dtls_cert {
            Some(cert) => rtc_config.set_dtls_cert(cert.clone()),
            None => rtc_config,
        };
        let mut rtc = rtc_config.build(now);
        for c in &self.shared.candidates {
            rtc.add_local_candidate(c.clone());
        }
        info!(%room, %participant, "joined");
        let mut peer = Peer::new(participant.clone(), room, rtc, now);
        peer.policer = Policer::new(
            self.config.max_incoming_bitrate,
            self.config.max_incoming_packet_rate,
        );
        self.peers.insert(participant.clone(), peer);
        self.index_ufrag(&participant);
        self.mark_dirty(&participant);
        Ok(())
    }

    /// Turns router changes into m-line changes and signalling events.
    pub(super) fn apply_router_events(&mut self) {
        while let Some(ev) = self.router.poll_event() {
            // A track gone here or on another shard: a refused one may fit now.
            if matches!(ev, RouterEvent::TrackUnpublished { .. }) {
                self.retry_refused = true;
            }
            match ev {
                // A mirrored track is reported by its publisher's shard.
                RouterEvent::TrackPublished {
                    room,
                    track,
                    publisher,
                    kind,
                } if !self.remote.contains_key(&publisher) => {
                    self.events.send(SfuEvent::TrackPublished {
                        room,
                        participant: publisher.clone(),
                        track,
                        kind,
                    });
                    // Published while the server mutes its kind: muted from the start.
                    if self.router.is_muted(track) {
                        self.tell_muted(&publisher, track, kind, true);
                    }
                }
                RouterEvent::TrackUnpublished {
                    room,
                    track,
                    publisher,
                } if !self.remote.contains_key(&publisher) => {
                    self.events.send(SfuEvent::TrackUnpublished {
                        room,
                        participant: publisher,
                        track,
                    })
                }
                RouterEvent::TrackPublished { .. } | RouterEvent::TrackUnpublished { .. } => {}
                RouterEvent::Subscribed {
                    subscriber,
                    track,
                    publisher,
                    kind,
                } => {
                    if let Some(p) = self.peers.get_mut(&subscriber) {
                        p.add_out(track, kind, publisher);
                    }
                }
                RouterEvent::Unsubscribed { subscriber, track } => {
                    if let Some(p) = self.peers.get_mut(&subscriber) {
                        p.remove_out(track);
                    }
                }
                RouterEvent::ActiveSpeaker { room, participant } => {
                    // A spread room's speaker is reported by one of its shards.
                    if self.reports_speaker(&room) {
                        self.events
                            .send(SfuEvent::ActiveSpeaker { room, participant });
                    }
                }
            }
        }
    }

    /// Makes an offer to every peer with m-line changes and none outstanding.
    pub(super) fn negotiate_all(&mut self, now: Instant) {
        for (id, peer) in &mut self.peers {
            if !peer.may_want_negotiation() {
                continue;
            }
            let offer_id = self.next_offer_id;
            if let Some(sdp) = peer.negotiate(offer_id, now) {
                // Shard i of n numbers i+1, i+1+n, ...: unique across shards.
                self.next_offer_id += self.shard.count as u64;
                debug!(participant = %id, offer_id, "offering");
                self.events.send(SfuEvent::NeedsAnswer {
                    participant: id.clone(),
                    offer_id,
                    sdp,
                });
            }
        }
    }

    /// Removes peers whose `Rtc` has closed (ICE lost, DTLS closed, protocol error).
    pub(super) fn reap_dead(&mut self) {
        if self.peers.values().all(|p| p.rtc.is_alive()) {
            return;
        }
        let dead: Vec<(ParticipantId, LeaveReason)> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.rtc.is_alive())
            .map(|(id, p)| {
                let reason = if p.protocol_error {
                    LeaveReason::ProtocolError
                } else {
                    LeaveReason::Disconnected
                };
                (id.clone(), reason)
            })
            .collect();
        for (id, reason) in dead {
            self.remove_participant(&id, reason);
            self.update_gauges();
        }
    }

    /// Frees everything of a participant: its session, its address routes, its router
    /// state (its tracks leave every subscriber, renegotiated by the next pump).
    pub(super) fn remove_participant(&mut self, id: &ParticipantId, reason: LeaveReason) {
        let Some(mut peer) = self.peers.remove(id) else {
            return;
        };
        peer.rtc.disconnect();
        {
            let mut placement = self.shard.placement.lock();
            if placement.get(id) == Some(&self.shard.index) {
                placement.remove(id);
            }
        }
        self.by_addr.retain(|_, p| p != id);
        self.refused.retain(|(p, _, _)| p != id);
        if self.by_ufrag.get(&peer.ufrag) == Some(id) {
            self.by_ufrag.remove(&peer.ufrag);
        }
        self.tcp.close_peer(id);
        self.dirty.retain(|p| p != id);
        let _ = self.router.leave(id);
        if peer.publishes() {
            self.shared.release_publisher(&peer.room);
        }
        self.shared.release(&peer.room, self.shard.index);
        if self.spread {
            self.mirror_leave(&peer.room, id);
        }
        info!(participant = %id, ?reason, "left");
        self.events.send(SfuEvent::ParticipantLeft {
            room: peer.room,
            participant: id.clone(),
            reason,
        });
        self.apply_router_events();
    }

    /// Ends every session (shutdown).
    pub(super) fn close_all(&mut self) {
        let ids: Vec<ParticipantId> = self.peers.keys().cloned().collect();
        for id in ids {
            self.remove_participant(&id, LeaveReason::Shutdown);
        }
        self.update_gauges();
    }

    /// Adds the change of this shard's census to the gauges (every shard adds its own).
    pub(super) fn update_gauges(&mut self) {
        let c = self.census();
        let now = (c.rooms as i64, self.peers.len() as i64, c.tracks as i64);
        let (rooms, participants, tracks) = self.gauges;
        self.metrics.rooms.inc_by(now.0 - rooms);
        self.metrics.participants.inc_by(now.1 - participants);
        self.metrics.tracks.inc_by(now.2 - tracks);
        self.gauges = now;
    }

    /// Refreshes this shard's part of the connection-quality gauges from its peers'
    /// last levels.
    pub(super) fn update_quality_gauges(&mut self) {
        let mut now = [0i64; 4];
        for p in self.peers.values() {
            if let Some(q) = p.quality {
                // `ALL` lists the levels in declaration order.
                now[q.level as usize] += 1;
            }
        }
        for ((level, before), after) in QualityLevel::ALL.iter().zip(self.quality_gauges).zip(now) {
            if after != before {
                self.metrics
                    .connection_quality
                    .get_or_create(&QualityLabel {
                        quality: level.as_str(),
                    })
                    .inc_by(after - before);
            }
        }
        self.quality_gauges = now;
    }
}
