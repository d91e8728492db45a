//! Rooms spread over shards (`SfuConfig::spread_rooms_above`). A participant's session
//! lives on the shard it was placed on; a room whose members are on several shards is
//! held whole by each of them: every such shard's router has its own members and,
//! mirrored, the other shards' (joins, leaves, published tracks, sent over unbounded
//! queues that never drop). A shard that takes its first member of a room asks the
//! shards holding it (the shared member counts say which) and each answers with its
//! members and tracks; a shard whose last member of a room leaves drops the room.
//! Rooms on one shard, the usual case, send nothing.
//!
//! A frame is forwarded to this shard's subscribers and handed, once per shard, to the
//! shards holding other subscribers of its track (bounded queues; a full one drops the
//! frame, counted, and a dropped video frame asks the publisher for a keyframe), which
//! forward it to theirs as if it had been published there. A keyframe request for a
//! track published elsewhere goes to the publisher's shard. Every shard holding the room
//! runs speaker detection on the same audio levels (for "last N"); the lowest-numbered
//! of them reports the active speaker.

use std::time::Instant;

use str0m::media::MediaData;

use super::{Driver, Handoff, Mirror};
use crate::ids::{ParticipantId, RoomId, TrackId};
use crate::router::Census;

impl Driver {
    /// The other shards holding members of `room`, as this shard knows them.
    pub(super) fn room_shards(&self, room: &RoomId) -> Vec<usize> {
        let mut shards = Vec::new();
        self.shards_of(self.router.members(room), &mut shards);
        shards
    }

    /// The other shards holding any of `participants` (into `out`, cleared first).
    fn shards_of(&self, participants: &[ParticipantId], out: &mut Vec<usize>) {
        out.clear();
        for p in participants {
            if let Some(&s) = self.remote.get(p)
                && !out.contains(&s)
            {
                out.push(s);
            }
        }
    }

    /// Whether this shard reports `room`'s active speaker: the lowest-numbered shard
    /// holding it (the only one, for a room that is not spread).
    pub(super) fn reports_speaker(&self, room: &RoomId) -> bool {
        !self.spread || self.room_shards(room).iter().all(|&s| s > self.shard.index)
    }

    /// Sends a room change to `shards`.
    pub(super) fn send_mirror(&self, shards: &[usize], msg: &Mirror) {
        for &s in shards {
            // Only fails once that shard has stopped (shutdown).
            let _ = self.shard.mirrors[s].send(msg.clone());
        }
    }

    /// The other shards with members of `room`, from the SFU's shared counts: a
    /// shard that just took its first member counts there before this router knows.
    pub(super) fn holders(&self, room: &RoomId) -> Vec<usize> {
        let mut shards = self.shared.holders(room);
        shards.retain(|&s| s != self.shard.index);
        shards
    }

    /// A member joined here: the other shards holding the room mirror it and, when it
    /// is this shard's first (`answer`), answer with their members and tracks.
    pub(super) fn mirror_join(&self, room: &RoomId, participant: &ParticipantId, answer: bool) {
        self.send_mirror(
            &self.holders(room),
            &Mirror::Join {
                room: room.clone(),
                participant: participant.clone(),
                shard: self.shard.index,
                answer,
            },
        );
    }

    /// A member of this shard left `room` (the router and the shared counts have let it
    /// go): the other holders drop its mirror. When it was the last one here, the
    /// room's mirrors go too.
    pub(super) fn mirror_leave(&mut self, room: &RoomId, participant: &ParticipantId) {
        self.send_mirror(
            &self.holders(room),
            &Mirror::Leave {
                participant: participant.clone(),
                shard: self.shard.index,
            },
        );
        if !self.holds(room) {
            let mirrors = self.router.members(room).to_vec();
            for m in &mirrors {
                self.forget_remote(m);
            }
        }
    }

    /// What this shard holds; in a spread room only its own members and their tracks
    /// and subscriptions count, the room itself on the shard reporting its speaker,
    /// the other shards' members as `mirrored`, so that the shards' counts add up.
    pub(super) fn census(&self) -> Census {
        if !self.spread {
            return self.router.census();
        }
        self.router.census_of(
            |p| !self.remote.contains_key(p),
            |r| self.holds(r) && self.reports_speaker(r),
        )
    }

    /// Whether this shard has members of `room` of its own.
    pub(super) fn holds(&self, room: &RoomId) -> bool {
        self.router
            .members(room)
            .iter()
            .any(|m| self.peers.contains_key(m))
    }

    /// Applies a room change of another shard.
    pub(super) fn handle_mirror(&mut self, msg: Mirror, now: Instant) {
        match msg {
            Mirror::Join {
                room,
                participant,
                shard,
                answer,
            } => {
                if self.peers.contains_key(&participant) || !self.holds(&room) {
                    // It left here and joined there (this shard's leave is on its
                    // way), or the room is no longer here.
                    return;
                }
                if self.remote.get(&participant).is_some_and(|&s| s != shard) {
                    // It moved; the leave from its old shard is on its way.
                    self.forget_remote(&participant);
                }
                // Known already when its shard's answer and its own join both came.
                if !self.remote.contains_key(&participant) {
                    if self.router.join_unchecked(&room, &participant).is_err() {
                        return;
                    }
                    self.remote.insert(participant, shard);
                }
                if answer {
                    self.answer_join(&room, shard);
                }
            }
            Mirror::Leave { participant, shard } => {
                if self.remote.get(&participant) == Some(&shard) {
                    self.forget_remote(&participant);
                }
            }
            Mirror::Publish {
                participant,
                track,
                kind,
                rids,
            } => {
                if self.remote.contains_key(&participant)
                    && self
                        .router
                        .publish_mirror(&participant, kind, track)
                        .is_ok()
                {
                    let rids: Vec<&str> = rids.iter().map(String::as_str).collect();
                    self.router.set_layers(track, &rids);
                }
            }
            Mirror::Unpublish { track } => {
                let remote = self
                    .router
                    .track(track)
                    .is_some_and(|t| self.remote.contains_key(&t.publisher));
                if remote {
                    let _ = self.router.unpublish(track);
                }
            }
            Mirror::Keyframe { track, layer } => self.request_keyframe(track, layer, now),
            Mirror::Room { track, bps } => {
                let local = self
                    .router
                    .track(track)
                    .is_some_and(|t| self.peers.contains_key(&t.publisher));
                if local {
                    self.remote_rooms.insert(track, (bps, now));
                }
            }
        }
    }

    /// Tells `shard`, which just took a member of `room`, this shard's members of it
    /// and their tracks.
    fn answer_join(&self, room: &RoomId, shard: usize) {
        for m in self.router.members(room) {
            if !self.peers.contains_key(m) {
                continue;
            }
            let join = Mirror::Join {
                room: room.clone(),
                participant: m.clone(),
                shard: self.shard.index,
                answer: false,
            };
            self.send_mirror(&[shard], &join);
            for &track in self.router.published(m) {
                if let Some(publish) = self.publish_message(track) {
                    self.send_mirror(&[shard], &publish);
                }
            }
        }
    }

    /// Removes a member of another shard from this router; its events (its tracks
    /// leaving this shard's subscribers) are applied while it still counts as remote,
    /// so none is reported to signalling twice.
    pub(super) fn forget_remote(&mut self, participant: &ParticipantId) {
        let _ = self.router.leave(participant);
        self.apply_router_events();
        self.remote.remove(participant);
    }

    /// The message announcing `track` (published here) to other shards.
    fn publish_message(&self, track: TrackId) -> Option<Mirror> {
        let t = self.router.track(track)?;
        let rids = self
            .router
            .layers(track)
            .iter()
            .map(|l| l.rid.to_string())
            .collect();
        Some(Mirror::Publish {
            participant: t.publisher.clone(),
            track,
            kind: t.kind,
            rids,
        })
    }

    /// Tells the other shards holding its room about a track published here.
    pub(super) fn mirror_publish(&self, track: TrackId) {
        let Some(room) = self.router.track(track).map(|t| t.room.clone()) else {
            return;
        };
        if let Some(msg) = self.publish_message(track) {
            self.send_mirror(&self.holders(&room), &msg);
        }
    }

    /// Tells the other shards holding its room that a track published here went away
    /// (`room`: its room, looked up before it went).
    pub(super) fn mirror_unpublish(&self, room: &RoomId, track: TrackId) {
        self.send_mirror(&self.holders(room), &Mirror::Unpublish { track });
    }

    /// Hands a frame published here to every other shard holding a subscriber of its
    /// track. Returns false when a video frame was dropped on a full queue: that
    /// shard's subscribers need a keyframe.
    pub(super) fn frame_to_shards(&mut self, track: TrackId, data: &MediaData) -> bool {
        if self.remote.is_empty() {
            // No room of this shard is spread.
            return true;
        }
        let Some(video) = self.router.track(track).map(|t| t.kind.is_video()) else {
            return true;
        };
        let mut shards = std::mem::take(&mut self.scratch_shards);
        self.shards_of(self.router.subscribers(track), &mut shards);
        let mut whole = true;
        for &s in &shards {
            let frame = Handoff::Frame {
                track,
                data: Box::new(copy_media_data(data)),
            };
            whole &= self.hand_off(s, frame) || !video;
        }
        self.scratch_shards = shards;
        whole
    }

    /// A frame of a track published on another shard, for this shard's subscribers.
    pub(super) fn frame_from_shard(&mut self, track: TrackId, data: Box<MediaData>, now: Instant) {
        if self.router.track(track).is_none() {
            // Its publish is still on the way, or the room left this shard.
            return;
        }
        self.fan_out(track, *data, false, now);
    }
}

/// A frame for another shard (str0m's `MediaData` is not `Clone`; its payload is
/// shared, not copied).
fn copy_media_data(d: &MediaData) -> MediaData {
    MediaData {
        mid: d.mid,
        pt: d.pt,
        rid: d.rid,
        params: d.params,
        time: d.time,
        network_time: d.network_time,
        seq_range: d.seq_range.clone(),
        contiguous: d.contiguous,
        data: d.data.clone(),
        ext_vals: d.ext_vals.clone(),
        codec_extra: d.codec_extra,
        last_sender_info: d.last_sender_info,
        audio_start_of_talk_spurt: d.audio_start_of_talk_spurt,
    }
}
