//! The driver's media path: frames from publishers to subscribers (per-subscriber
//! simulcast layer and "last N" decisions), the periodic layer allocation, keyframe
//! requests toward publishers, and registration of published tracks.

use std::time::{Duration, Instant};

use str0m::media::Rids;
use tracing::{debug, info, trace, warn};

use super::{Driver, Mirror};
use crate::error::{RouterError, SfuError};
use crate::event::{PauseReason, SfuEvent, TrackRefusal};
use crate::ids::{ParticipantId, TrackId, TrackKind};
use crate::peer::Forwarded;
use crate::picture;
use crate::router::MuteGate;

/// A room told by another shard counts this long (it is told every allocation).
const REMOTE_ROOM_TTL: Duration = Duration::from_secs(1);

impl Driver {
    /// Chooses every connected subscriber's simulcast layers from its bandwidth and
    /// asks publishers for the keyframes the switches wait for.
    pub(super) fn allocate_layers(&mut self, now: Instant) {
        self.next_allocation = now + self.config.bandwidth.allocation_interval;
        self.allocate(None, now);
        // A single-stream camera's only subscriber (a one-to-one call): its room.
        let mut rooms = std::mem::take(&mut self.scratch_rooms);
        rooms.clear();
        let mut elsewhere = Vec::new();
        for peer in self.peers.values() {
            for &(track, room) in &peer.bandwidth.rooms {
                if self.router.subscribers(track).len() != 1 {
                    continue;
                }
                let publisher = self.router.track(track).map(|t| &t.publisher);
                match publisher.and_then(|p| self.remote.get(p)) {
                    // Its publisher is on another shard (a spread room): tell that one.
                    Some(&shard) => elsewhere.push((shard, track, room)),
                    None => {
                        rooms.insert(track, room);
                    }
                }
            }
        }
        for (shard, track, bps) in elsewhere {
            self.send_mirror(&[shard], &Mirror::Room { track, bps });
        }
        self.remote_rooms
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < REMOTE_ROOM_TTL);
        for (&track, &(bps, _)) in &self.remote_rooms {
            if self.router.subscribers(track).len() == 1 {
                rooms.insert(track, bps);
            }
        }
        let bw = &self.config.bandwidth;
        // What ends the feedback: the cap, or as good as none.
        let lift = if bw.max_publisher_bitrate > 0 {
            bw.max_publisher_bitrate
        } else {
            bw.max_subscriber_bitrate
        };
        for (id, peer) in self.peers.iter_mut().filter(|(_, p)| p.connected) {
            let engaged = peer.bandwidth.feedback_engaged;
            if let Some(bps) =
                peer.tell_publisher(bw.max_publisher_bitrate, &rooms, lift, &self.router, now)
                && (engaged || peer.bandwidth.feedback_engaged)
            {
                debug!(publisher = %id, bps, engaged = peer.bandwidth.feedback_engaged,
                    "publisher told its one subscriber's room");
            }
        }
        self.scratch_rooms = rooms;
    }

    /// Chooses the layers of one subscriber (`Some`) or of all, and asks for the
    /// keyframes the switches wait for.
    pub(super) fn allocate(&mut self, only: Option<&ParticipantId>, now: Instant) {
        let mut keyframes = std::mem::take(&mut self.scratch_keyframes);
        let mut pauses = Vec::new();
        for (id, peer) in &mut self.peers {
            if peer.connected && only.is_none_or(|o| o == id) {
                peer.allocate(
                    &self.router,
                    &self.config.bandwidth,
                    now,
                    &mut keyframes,
                    &mut pauses,
                );
                for (track, paused) in pauses.drain(..) {
                    debug!(subscriber = %id, %track, paused, "video paused for bandwidth");
                    self.events.send(SfuEvent::TrackPaused {
                        participant: id.clone(),
                        track,
                        paused,
                        reason: PauseReason::Bandwidth,
                    });
                }
            }
        }
        for (track, layer) in keyframes.drain(..) {
            self.request_keyframe(track, Some(layer), now);
        }
        self.scratch_keyframes = keyframes;
    }

    /// Registers a track the peer sends on `mid`. A refused one is reported once and
    /// waits: it is tried again whenever a track of any room goes away, in the order
    /// of refusal ([`Driver::retry_refused`]).
    pub(super) fn publish(
        &mut self,
        id: &ParticipantId,
        mid: str0m::media::Mid,
        kind: str0m::media::MediaKind,
    ) {
        if self.refused.iter().any(|(p, m, _)| p == id && *m == mid) {
            return;
        }
        let Err(e) = self.try_publish(id, mid, kind) else {
            return;
        };
        // The m-line stays negotiated but nothing it carries is forwarded.
        warn!(participant = %id, ?mid, "track refused: {e}");
        let reason = match e {
            RouterError::TooManyTracks(_) => TrackRefusal::TooManyTracks,
            RouterError::TooManyPublishers(_) => TrackRefusal::TooManyPublishers,
            // Not a member (it is leaving): nobody to tell.
            _ => return,
        };
        self.refused.push((id.clone(), mid, kind));
        self.events.send(SfuEvent::TrackRefused {
            participant: id.clone(),
            mid: mid.to_string(),
            kind: track_kind(kind),
            reason,
        });
    }

    /// Publishes the track on `mid`, if the router admits it.
    fn try_publish(
        &mut self,
        id: &ParticipantId,
        mid: str0m::media::Mid,
        kind: str0m::media::MediaKind,
    ) -> Result<(), RouterError> {
        // A member's first admitted track makes it a publisher. The room's publishers
        // are counted across shards before its router (which sees other shards'
        // publishers only once mirrored) is asked.
        let first = self
            .peers
            .get(id)
            .filter(|p| !p.publishes())
            .map(|p| p.room.clone());
        if let Some(room) = &first
            && !self
                .shared
                .claim_publisher(room, self.config.router.max_publishers_per_room)
        {
            return Err(RouterError::TooManyPublishers(room.clone()));
        }
        let track = match self.router.publish(id, track_kind(kind)) {
            Ok(track) => track,
            Err(e) => {
                if let Some(room) = &first {
                    self.shared.release_publisher(room);
                }
                return Err(e);
            }
        };
        let mut layers = 0;
        if let Some(p) = self.peers.get_mut(id) {
            p.add_in(mid, track);
            // Simulcast (RFC 8853): the rids the publisher's SDP declared.
            if let Some(Rids::Specific(rids)) = p.rtc.media(mid).map(|m| m.rids_rx()) {
                let rids: Vec<&str> = rids.iter().map(|r| &**r).collect();
                layers = self.router.set_layers(track, &rids);
            }
        }
        if self.spread {
            self.mirror_publish(track);
        }
        debug!(participant = %id, %track, ?mid, layers, "track published");
        Ok(())
    }

    /// Tries the refused tracks again, oldest first, after a track went away (a
    /// publisher left or unpublished, so a room may have room for another): those
    /// admitted now are published as any new track (the room is told), the others
    /// wait on. A refused m-line that no longer sends is forgotten.
    pub(super) fn retry_refused(&mut self) {
        for (id, mid, kind) in std::mem::take(&mut self.refused) {
            let sending = self
                .peers
                .get(&id)
                .and_then(|p| p.rtc.media(mid))
                .is_some_and(|m| m.direction().is_receiving());
            if !sending {
                continue;
            }
            match self.try_publish(&id, mid, kind) {
                Ok(()) => debug!(participant = %id, ?mid, "refused track admitted"),
                Err(RouterError::TooManyTracks(_) | RouterError::TooManyPublishers(_)) => {
                    self.refused.push((id, mid, kind));
                }
                Err(_) => {}
            }
        }
    }

    /// Forwards a frame from publisher `from` to its track's subscribers.
    pub(super) fn forward(
        &mut self,
        from: &ParticipantId,
        mut data: str0m::media::MediaData,
        now: Instant,
    ) {
        let Some(publisher) = self.peers.get_mut(from) else {
            return;
        };
        let Some(track) = publisher.track_in(data.mid) else {
            return;
        };
        publisher.counters.frames_in += 1;
        // From here on the frame's `network_time` is when it was captured, in local time
        // (the publisher's sender reports, capture.rs): the wallclock it is written with
        // toward every subscriber, whose sender reports then keep the publisher's
        // audio/video alignment.
        data.network_time = publisher.capture.wallclock(
            data.time,
            data.last_sender_info.as_ref(),
            data.network_time,
        );
        // The server's mute, before anything else sees the frame (other shards, speaker
        // detection, subscribers).
        let layer = data.rid.and_then(|rid| self.router.layer_of(track, &rid));
        match self.router.mute_gate(track, layer, data.is_keyframe()) {
            MuteGate::Pass => {}
            MuteGate::Drop => return,
            MuteGate::NeedsKeyframe => {
                self.request_keyframe(track, layer, now);
                return;
            }
        }
        let handed_off = !self.spread || self.frame_to_shards(track, &data);
        self.fan_out(track, data, true, now);
        if !handed_off {
            // Another shard's subscribers missed a picture.
            self.request_keyframe(track, layer, now);
        }
    }

    /// Forwards a frame of `track` to this shard's subscribers; `local`: its publisher
    /// is on this shard (else that shard asks for keyframes after gaps).
    pub(super) fn fan_out(
        &mut self,
        track: TrackId,
        data: str0m::media::MediaData,
        local: bool,
        now: Instant,
    ) {
        let layered = !self.router.layers(track).is_empty();
        let layer = match data.rid {
            Some(rid) if layered => match self.router.layer_of(track, &rid) {
                Some(i) => Some(i),
                None => {
                    // str0m only accepts declared rids; this would be a bug, not a peer.
                    trace!(%track, %rid, "frame of an undeclared layer dropped");
                    return;
                }
            },
            None if layered => {
                // A publisher that declared simulcast but sends one stream without rid
                // extensions: forwarded as it comes, outside the layer choice.
                trace!(%track, seq = ?data.seq_range, "frame without a rid on a simulcast track");
                None
            }
            _ => None,
        };
        self.router.record_frame(track, layer, data.data.len(), now);
        if let Some(level) = data.ext_vals.audio_level {
            // str0m gives -dBov as 0..=-127 (RFC 6464 §3).
            self.router
                .audio_level(track, level.unsigned_abs().min(127), now);
        }
        let is_video = self.router.track(track).is_some_and(|t| t.kind.is_video());
        let keyframe = is_video && data.is_keyframe();
        if keyframe
            && let Some(size) = picture::keyframe_size(data.params.spec().codec, &data.data)
            && let Some(before) = self.router.record_keyframe_size(track, layer, size)
        {
            debug!(%track, ?layer, rid = ?data.rid, ?size, ?before, seq = ?data.seq_range,
                "keyframe of a new picture size");
        }
        if is_video && !data.contiguous && local {
            // A gap the NACKs could not fill: the decoder needs a new keyframe.
            self.request_keyframe(track, layer, now);
        }
        let mut subscribers = std::mem::take(&mut self.scratch_subscribers);
        subscribers.extend_from_slice(self.router.subscribers(track));
        let mut needs_keyframe = false;
        for sub in subscribers.drain(..) {
            let allowed = self.router.video_forwarded(&sub, track);
            let Some(peer) = self.peers.get_mut(&sub) else {
                continue;
            };
            let result = peer.forward(track, layer, &data, allowed);
            for (held, paused) in peer.hold_changes.drain(..) {
                debug!(subscriber = %sub, track = %held, paused, "video held back (last N)");
                self.events.send(SfuEvent::TrackPaused {
                    participant: sub.clone(),
                    track: held,
                    paused,
                    reason: PauseReason::LastN,
                });
            }
            match result {
                Ok(done @ (Forwarded::Yes | Forwarded::Switched)) => {
                    self.metrics.frames_forwarded.inc();
                    if done == Forwarded::Switched {
                        self.metrics.layer_switches.inc();
                        let size = self.router.keyframe_size(track, layer);
                        debug!(subscriber = %sub, %track, ?layer, rid = ?data.rid, keyframe,
                            ?size, seq = ?data.seq_range, "simulcast layer switched");
                    }
                    if !peer.dirty {
                        peer.dirty = true;
                        self.dirty.push(sub);
                    }
                }
                Ok(Forwarded::No) => {}
                Ok(Forwarded::NeedsKeyframe) => needs_keyframe = true,
                Err(e) => debug!(subscriber = %sub, %track, "forward failed: {e}"),
            }
        }
        self.scratch_subscribers = subscribers;
        if needs_keyframe {
            self.request_keyframe(track, layer, now);
        }
    }

    /// Mutes or unmutes what `participant` publishes (of `kind`, or all) for everyone:
    /// its tracks now and those it publishes later while muted; the tracks that
    /// changed. Unmuted video asks for keyframes to resume at.
    pub(super) fn mute(
        &mut self,
        participant: &ParticipantId,
        kind: Option<TrackKind>,
        muted: bool,
        now: Instant,
    ) -> Result<Vec<TrackId>, SfuError> {
        if !self.peers.contains_key(participant) {
            return Err(RouterError::UnknownParticipant(participant.clone()).into());
        }
        let changed = self.router.mute_participant(participant, kind, muted)?;
        for &(track, k) in &changed {
            self.tell_muted(participant, track, k, muted);
            if !muted && k.is_video() {
                match self.router.layers(track).len() {
                    0 => self.request_keyframe(track, None, now),
                    n => (0..n).for_each(|l| self.request_keyframe(track, Some(l), now)),
                }
            }
        }
        Ok(changed.into_iter().map(|(track, _)| track).collect())
    }

    /// Reports a track the server muted or unmuted.
    pub(super) fn tell_muted(
        &self,
        participant: &ParticipantId,
        track: TrackId,
        kind: TrackKind,
        muted: bool,
    ) {
        let Some(room) = self.router.room_of(participant) else {
            return;
        };
        info!(%participant, %track, muted, "track muted by the server");
        self.events.send(SfuEvent::TrackMuted {
            room: room.clone(),
            participant: participant.clone(),
            track,
            kind,
            muted,
        });
    }

    /// Video tracks that start flowing to a subscriber (newly subscribed, or its session
    /// just came up) need a keyframe to start from: asked for unlayered ones here;
    /// simulcast ones get theirs from the allocation, of the layer it picks.
    pub(super) fn request_start_keyframes(&mut self, tracks: Vec<TrackId>, now: Instant) {
        for track in tracks {
            if self.router.layers(track).is_empty() {
                self.request_keyframe(track, None, now);
            }
        }
    }

    /// A subscriber needs a keyframe of `track` (of simulcast `layer`): ask its
    /// publisher, throttled to one request per track (per layer) per
    /// `keyframe_min_interval`.
    pub(super) fn request_keyframe(&mut self, track: TrackId, layer: Option<usize>, now: Instant) {
        let allowed = match layer {
            Some(l) => self.router.request_layer_keyframe(track, l, now),
            None => self.router.request_keyframe(track, now),
        };
        if !allowed {
            self.metrics.keyframe_requests_throttled.inc();
            trace!(%track, ?layer, "keyframe request throttled");
            return;
        }
        let Some(publisher) = self.router.track(track).map(|t| t.publisher.clone()) else {
            return;
        };
        let rid = layer.and_then(|l| self.router.layers(track).get(l).map(|l| l.rid.clone()));
        let Some(peer) = self.peers.get_mut(&publisher) else {
            if let Some(&shard) = self.remote.get(&publisher) {
                // Its shard asks (throttled there too).
                self.send_mirror(&[shard], &Mirror::Keyframe { track, layer });
            }
            return;
        };
        if peer.request_keyframe(track, rid.as_deref()) {
            debug!(%track, ?layer, "keyframe requested from the publisher");
            self.metrics.keyframe_requests_sent.inc();
            self.mark_dirty(&publisher);
        }
    }
}

/// The router's kind of a str0m m-line of `kind`.
pub(super) fn track_kind(kind: str0m::media::MediaKind) -> TrackKind {
    match kind {
        str0m::media::MediaKind::Audio => TrackKind::Audio,
        str0m::media::MediaKind::Video => TrackKind::Video,
    }
}
