//! The sans-IO routing core: rooms, participants, published tracks and subscriptions,
//! which subscriber gets which track, keyframe-request throttling, active speaker and
//! limits. Fed with calls and `now`; changes come out as [`RouterEvent`]s that the driver
//! turns into SDP renegotiation and signalling events.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::config::RouterConfig;
use crate::error::RouterError;
use crate::ids::{ParticipantId, RoomId, TrackId, TrackKind, TrackKinds};
use crate::keyframe::KeyframeThrottle;
use crate::picture::Size;
use crate::simulcast::RateMeter;
use crate::speaker::SpeakerDetector;

/// Simulcast layers accepted per track (libwebrtc sends at most three; one spare).
pub const MAX_LAYERS: usize = 4;
/// Longest rid accepted (RFC 8851 does not bound it; str0m keeps eight bytes).
pub const MAX_RID_LEN: usize = 8;
/// Members one participant may pin into view under "last N".
pub const MAX_PINNED: usize = 4;

/// A change in the routing state the outside world must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterEvent {
    /// A participant published a track.
    TrackPublished {
        /// Its room.
        room: RoomId,
        /// The new track.
        track: TrackId,
        /// Who sends it.
        publisher: ParticipantId,
        /// Audio or video.
        kind: TrackKind,
    },
    /// A track went away (unpublished, or its publisher left). Its subscribers each got
    /// an [`RouterEvent::Unsubscribed`] first.
    TrackUnpublished {
        /// Its room.
        room: RoomId,
        /// The track.
        track: TrackId,
        /// Who sent it.
        publisher: ParticipantId,
    },
    /// `subscriber` now receives `track`: its peer needs a send m-line for it.
    Subscribed {
        /// Who receives.
        subscriber: ParticipantId,
        /// What.
        track: TrackId,
        /// Who sends it.
        publisher: ParticipantId,
        /// Audio or video.
        kind: TrackKind,
    },
    /// `subscriber` no longer receives `track`: its send m-line is to be stopped.
    Unsubscribed {
        /// Who received.
        subscriber: ParticipantId,
        /// What.
        track: TrackId,
    },
    /// The room's active speaker changed; `None` when the speaker left.
    ActiveSpeaker {
        /// The room.
        room: RoomId,
        /// The new speaker.
        participant: Option<ParticipantId>,
    },
}

/// A published track.
#[derive(Debug)]
pub struct Track {
    /// Who sends it.
    pub publisher: ParticipantId,
    /// The publisher's room (tracks are routed within a room only).
    pub room: RoomId,
    /// Audio or video.
    pub kind: TrackKind,
    /// Who receives it, in subscription order.
    subscribers: Vec<ParticipantId>,
    /// Keyframe requests toward the publisher (video only; per layer for simulcast).
    keyframe: KeyframeThrottle,
    /// Bitrate of the unlayered stream (all of an audio track).
    meter: RateMeter,
    /// Simulcast layers from low to high; empty for an unlayered track.
    layers: Vec<Layer>,
    /// Picture size of the unlayered stream's latest keyframe (video).
    size: Option<Size>,
    /// Muted by the server (a moderator): its frames reach nobody.
    muted: bool,
    /// Video unmuted by the server: the streams that wait for their next keyframe, as
    /// everyone missed the pictures before it (bit 0 the unlayered stream, bit `i` layer
    /// `i`).
    awaiting_keyframe: u32,
}

/// What happens to a frame of a track the server may have muted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuteGate {
    /// Not muted: forwarded.
    Pass,
    /// Muted: dropped.
    Drop,
    /// Unmuted video whose stream has not had a keyframe since: dropped, and a keyframe
    /// is to be asked for.
    NeedsKeyframe,
}

/// One simulcast layer of a published track (RFC 8853 rid).
#[derive(Debug)]
pub struct Layer {
    /// Its rid as the SDP declares it.
    pub rid: Box<str>,
    /// Its measured bitrate.
    meter: RateMeter,
    /// Keyframe requests for this layer: a subscriber switching to it must not be
    /// held back by a request just sent for another layer.
    keyframe: KeyframeThrottle,
    /// Picture size of its latest keyframe: what the publisher's encoder really sends
    /// on this layer.
    pub size: Option<Size>,
}

/// A participant in a room.
#[derive(Debug)]
struct Participant {
    /// Its room.
    room: RoomId,
    /// Tracks it publishes.
    published: Vec<TrackId>,
    /// Tracks it receives.
    subscriptions: Vec<TrackId>,
    /// Whether it is subscribed to every new track of the room.
    auto_subscribe: bool,
    /// Members whose video it always receives under "last N" (they take its first
    /// slots), at most [`MAX_PINNED`].
    pinned: Vec<ParticipantId>,
    /// Kinds the server muted (a moderator): its tracks of such a kind are muted, also
    /// those it publishes later, until unmuted.
    muted: TrackKinds,
}

/// A room: its members in joining order and its speaker detector.
#[derive(Debug)]
struct Room {
    /// Members in joining order.
    members: Vec<ParticipantId>,
    /// Active speaker from the members' audio levels.
    speaker: SpeakerDetector,
    /// Members by how recently they were the active speaker, most recent first;
    /// those who never spoke follow in joining order ("last N" forwarding).
    recent: Vec<ParticipantId>,
}

/// Counts of everything the router holds, to prove state is freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Census {
    /// Open rooms.
    pub rooms: usize,
    /// Participants in any room.
    pub participants: usize,
    /// Published tracks.
    pub tracks: usize,
    /// (subscriber, track) pairs.
    pub subscriptions: usize,
    /// Members of rooms spread over shards whose sessions are on another shard, held
    /// here as mirrors (see [`crate::Sfu`]); the other counts leave them out.
    pub mirrored: usize,
}

impl std::ops::Add for Census {
    type Output = Census;
    fn add(self, o: Census) -> Census {
        Census {
            rooms: self.rooms + o.rooms,
            participants: self.participants + o.participants,
            tracks: self.tracks + o.tracks,
            subscriptions: self.subscriptions + o.subscriptions,
            mirrored: self.mirrored + o.mirrored,
        }
    }
}

/// The routing state of the whole SFU (of one shard).
#[derive(Debug)]
pub struct Router {
    /// Limits and timings.
    config: RouterConfig,
    /// Open rooms; a room exists while it has members.
    rooms: HashMap<RoomId, Room>,
    /// Everyone in a room.
    participants: HashMap<ParticipantId, Participant>,
    /// Every published track.
    tracks: HashMap<TrackId, Track>,
    /// Next track number; never reused, so a stale id cannot hit a new track.
    next_track: u64,
    /// Step between track numbers: with shards, shard `i` of `n` numbers `i+1, i+1+n,
    /// ...`, so track ids are unique across the SFU.
    track_step: u64,
    /// Changes not yet taken by [`poll_event`](Self::poll_event).
    events: VecDeque<RouterEvent>,
}

impl Router {
    /// An empty router.
    pub fn new(config: RouterConfig) -> Self {
        Self::with_track_ids(config, 1, 1)
    }

    /// An empty router numbering its tracks `first, first + step, ...`.
    pub fn with_track_ids(config: RouterConfig, first: u64, step: u64) -> Self {
        Self {
            config,
            rooms: HashMap::new(),
            participants: HashMap::new(),
            tracks: HashMap::new(),
            next_track: first.max(1),
            track_step: step.max(1),
            events: VecDeque::new(),
        }
    }

    /// Adds `participant` to `room` (created on first join), subscribed to every track
    /// already published there.
    pub fn join(&mut self, room: &RoomId, participant: &ParticipantId) -> Result<(), RouterError> {
        self.add_member(room, participant, true)
    }

    /// As [`join`](Self::join) without the limits, which the caller checked (a room
    /// spread over shards: the SFU counts its members across the shards).
    pub fn join_unchecked(
        &mut self,
        room: &RoomId,
        participant: &ParticipantId,
    ) -> Result<(), RouterError> {
        self.add_member(room, participant, false)
    }

    fn add_member(
        &mut self,
        room: &RoomId,
        participant: &ParticipantId,
        limits: bool,
    ) -> Result<(), RouterError> {
        if self.participants.contains_key(participant) {
            return Err(RouterError::AlreadyJoined(participant.clone()));
        }
        match self.rooms.get(room) {
            _ if !limits => {}
            Some(r) if r.members.len() >= self.config.max_participants_per_room => {
                return Err(RouterError::RoomFull(room.clone()));
            }
            None if self.rooms.len() >= self.config.max_rooms => {
                return Err(RouterError::TooManyRooms);
            }
            _ => {}
        }
        let speaker = self.config.speaker.clone();
        let r = self.rooms.entry(room.clone()).or_insert_with(|| Room {
            members: Vec::new(),
            speaker: SpeakerDetector::new(speaker),
            recent: Vec::new(),
        });
        r.members.push(participant.clone());
        r.recent.push(participant.clone());
        let existing: Vec<TrackId> = r
            .members
            .iter()
            .filter_map(|m| self.participants.get(m))
            .flat_map(|p| p.published.iter().copied())
            .collect();
        self.participants.insert(
            participant.clone(),
            Participant {
                room: room.clone(),
                published: Vec::new(),
                subscriptions: Vec::new(),
                auto_subscribe: true,
                pinned: Vec::new(),
                muted: TrackKinds::default(),
            },
        );
        for track in existing {
            self.attach(participant, track);
        }
        Ok(())
    }

    /// Removes a participant and everything it owns: its tracks (their subscribers are
    /// unsubscribed), its subscriptions, its speaker state, and its room when empty.
    pub fn leave(&mut self, participant: &ParticipantId) -> Result<(), RouterError> {
        let Some(p) = self.participants.get(participant) else {
            return Err(RouterError::UnknownParticipant(participant.clone()));
        };
        let room_id = p.room.clone();
        for track in p.published.clone() {
            self.unpublish(track)?;
        }
        let Some(p) = self.participants.remove(participant) else {
            return Err(RouterError::UnknownParticipant(participant.clone()));
        };
        for track in p.subscriptions {
            if let Some(t) = self.tracks.get_mut(&track) {
                t.subscribers.retain(|s| s != participant);
            }
        }
        if let Some(room) = self.rooms.get_mut(&room_id) {
            for m in &room.members {
                if let Some(other) = self.participants.get_mut(m) {
                    other.pinned.retain(|x| x != participant);
                }
            }
            room.members.retain(|m| m != participant);
            room.recent.retain(|m| m != participant);
            if room.speaker.remove(participant) {
                self.events.push_back(RouterEvent::ActiveSpeaker {
                    room: room_id.clone(),
                    participant: None,
                });
            }
            if room.members.is_empty() {
                self.rooms.remove(&room_id);
            }
        }
        Ok(())
    }

    /// Registers a track sent by `participant`; every member with auto-subscribe gets it.
    pub fn publish(
        &mut self,
        participant: &ParticipantId,
        kind: TrackKind,
    ) -> Result<TrackId, RouterError> {
        let Some(p) = self.participants.get(participant) else {
            return Err(RouterError::UnknownParticipant(participant.clone()));
        };
        if p.published.len() >= self.config.max_tracks_per_participant {
            return Err(RouterError::TooManyTracks(participant.clone()));
        }
        // A member's first track makes it a publisher. A spread room's router holds the
        // other shards' publishers as mirrors, so they count too; the driver also counts
        // the room's publishers across shards, which admitting at once would not see here.
        let limit = self.config.max_publishers_per_room;
        if limit > 0 && p.published.is_empty() {
            let publishers = self.rooms.get(&p.room).map_or(0, |r| {
                r.members
                    .iter()
                    .filter(|m| {
                        self.participants
                            .get(*m)
                            .is_some_and(|m| !m.published.is_empty())
                    })
                    .count()
            });
            if publishers >= limit {
                return Err(RouterError::TooManyPublishers(p.room.clone()));
            }
        }
        let track = TrackId(self.next_track);
        self.next_track += self.track_step;
        self.add_track(participant, kind, track)?;
        Ok(track)
    }

    /// Registers a track published on another shard under the id that shard gave it
    /// (a room spread over shards), without the track limit its shard checked.
    pub fn publish_mirror(
        &mut self,
        participant: &ParticipantId,
        kind: TrackKind,
        track: TrackId,
    ) -> Result<(), RouterError> {
        if self.tracks.contains_key(&track) {
            return Ok(());
        }
        self.add_track(participant, kind, track)
    }

    fn add_track(
        &mut self,
        participant: &ParticipantId,
        kind: TrackKind,
        track: TrackId,
    ) -> Result<(), RouterError> {
        let Some(p) = self.participants.get_mut(participant) else {
            return Err(RouterError::UnknownParticipant(participant.clone()));
        };
        p.published.push(track);
        let room = p.room.clone();
        let muted = p.muted.contains(kind);
        self.tracks.insert(
            track,
            Track {
                publisher: participant.clone(),
                room: room.clone(),
                kind,
                subscribers: Vec::new(),
                keyframe: KeyframeThrottle::new(self.config.keyframe_min_interval),
                meter: RateMeter::default(),
                size: None,
                layers: Vec::new(),
                muted,
                awaiting_keyframe: 0,
            },
        );
        self.events.push_back(RouterEvent::TrackPublished {
            room: room.clone(),
            track,
            publisher: participant.clone(),
            kind,
        });
        let auto: Vec<ParticipantId> = self
            .rooms
            .get(&room)
            .map(|r| r.members.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|m| *m != participant)
            .filter(|m| self.participants.get(*m).is_some_and(|p| p.auto_subscribe))
            .cloned()
            .collect();
        for member in auto {
            self.attach(&member, track);
        }
        Ok(())
    }

    /// Removes a track; its subscribers are unsubscribed first.
    pub fn unpublish(&mut self, track: TrackId) -> Result<(), RouterError> {
        let Some(t) = self.tracks.remove(&track) else {
            return Err(RouterError::UnknownTrack(track));
        };
        for s in &t.subscribers {
            if let Some(p) = self.participants.get_mut(s) {
                p.subscriptions.retain(|x| *x != track);
            }
            self.events.push_back(RouterEvent::Unsubscribed {
                subscriber: s.clone(),
                track,
            });
        }
        if let Some(p) = self.participants.get_mut(&t.publisher) {
            p.published.retain(|x| *x != track);
            let still_audio = p.published.iter().any(|x| {
                self.tracks
                    .get(x)
                    .is_some_and(|t| t.kind == TrackKind::Audio)
            });
            if t.kind == TrackKind::Audio
                && !still_audio
                && let Some(room) = self.rooms.get_mut(&t.room)
                && room.speaker.remove(&t.publisher)
            {
                self.events.push_back(RouterEvent::ActiveSpeaker {
                    room: t.room.clone(),
                    participant: None,
                });
            }
        }
        self.events.push_back(RouterEvent::TrackUnpublished {
            room: t.room,
            track,
            publisher: t.publisher,
        });
        Ok(())
    }

    /// Subscribes `participant` to a track of another member of its room (idempotent).
    pub fn subscribe(
        &mut self,
        participant: &ParticipantId,
        track: TrackId,
    ) -> Result<(), RouterError> {
        let p = self
            .participants
            .get(participant)
            .ok_or_else(|| RouterError::UnknownParticipant(participant.clone()))?;
        let t = self
            .tracks
            .get(&track)
            .ok_or(RouterError::UnknownTrack(track))?;
        if t.publisher == *participant || t.room != p.room {
            return Err(RouterError::NotSubscribable {
                participant: participant.clone(),
                track,
            });
        }
        self.attach(participant, track);
        Ok(())
    }

    /// Stops sending `track` to `participant` (idempotent).
    pub fn unsubscribe(
        &mut self,
        participant: &ParticipantId,
        track: TrackId,
    ) -> Result<(), RouterError> {
        let p = self
            .participants
            .get_mut(participant)
            .ok_or_else(|| RouterError::UnknownParticipant(participant.clone()))?;
        let t = self
            .tracks
            .get_mut(&track)
            .ok_or(RouterError::UnknownTrack(track))?;
        if let Some(i) = t.subscribers.iter().position(|s| s == participant) {
            t.subscribers.remove(i);
            p.subscriptions.retain(|x| *x != track);
            self.events.push_back(RouterEvent::Unsubscribed {
                subscriber: participant.clone(),
                track,
            });
        }
        Ok(())
    }

    /// Whether `participant` gets new tracks of its room automatically (the default).
    /// Turning it off keeps current subscriptions; selective subscribers call
    /// [`subscribe`](Self::subscribe).
    pub fn set_auto_subscribe(
        &mut self,
        participant: &ParticipantId,
        on: bool,
    ) -> Result<(), RouterError> {
        let p = self
            .participants
            .get_mut(participant)
            .ok_or_else(|| RouterError::UnknownParticipant(participant.clone()))?;
        p.auto_subscribe = on;
        Ok(())
    }

    /// Pins members of its room into `participant`'s view under "last N": their video
    /// is always forwarded to it, in the first of its N slots (more pinned than N: all
    /// of them, no one else). Replaces the earlier list; empty unpins. At most
    /// [`MAX_PINNED`]; itself and repeats are ignored; every one must be in its room.
    pub fn set_pinned(
        &mut self,
        participant: &ParticipantId,
        pinned: &[ParticipantId],
    ) -> Result<(), RouterError> {
        let room = self
            .participants
            .get(participant)
            .map(|p| p.room.clone())
            .ok_or_else(|| RouterError::UnknownParticipant(participant.clone()))?;
        let mut list: Vec<ParticipantId> = Vec::with_capacity(pinned.len().min(MAX_PINNED));
        for m in pinned {
            if m == participant || list.contains(m) {
                continue;
            }
            if self.participants.get(m).is_none_or(|o| o.room != room) {
                return Err(RouterError::NotInRoom(m.clone()));
            }
            if list.len() == MAX_PINNED {
                return Err(RouterError::TooManyPinned(participant.clone()));
            }
            list.push(m.clone());
        }
        if let Some(p) = self.participants.get_mut(participant) {
            p.pinned = list;
        }
        Ok(())
    }

    /// Who a packet of `track` is forwarded to (the forwarding decision).
    pub fn subscribers(&self, track: TrackId) -> &[ParticipantId] {
        self.tracks
            .get(&track)
            .map(|t| t.subscribers.as_slice())
            .unwrap_or_default()
    }

    /// A published track.
    pub fn track(&self, track: TrackId) -> Option<&Track> {
        self.tracks.get(&track)
    }

    /// Mutes or unmutes what `participant` publishes, of `kind` or both, for everyone (a
    /// moderator's decision): its tracks now, and those it publishes later while muted.
    /// The tracks that changed, with their kinds.
    pub fn mute_participant(
        &mut self,
        participant: &ParticipantId,
        kind: Option<TrackKind>,
        muted: bool,
    ) -> Result<Vec<(TrackId, TrackKind)>, RouterError> {
        let Some(p) = self.participants.get_mut(participant) else {
            return Err(RouterError::UnknownParticipant(participant.clone()));
        };
        let kinds = TrackKinds::of(kind);
        p.muted.set(kinds, muted);
        let mut changed = Vec::new();
        for track in p.published.clone() {
            let Some(k) = self.tracks.get(&track).map(|t| t.kind) else {
                continue;
            };
            if kinds.contains(k) && self.set_muted(track, muted) {
                changed.push((track, k));
            }
        }
        Ok(changed)
    }

    /// Whether the server mutes what `participant` publishes of `kind`, including
    /// tracks it has not published yet.
    pub fn is_participant_muted(&self, participant: &ParticipantId, kind: TrackKind) -> bool {
        self.participants
            .get(participant)
            .is_some_and(|p| p.muted.contains(kind))
    }

    /// Mutes or unmutes `track` for everyone, whatever its publisher sends (a
    /// moderator's decision); false if it is unknown or already so. Unmuted video
    /// resumes at each stream's next keyframe.
    pub fn set_muted(&mut self, track: TrackId, muted: bool) -> bool {
        let Some(t) = self.tracks.get_mut(&track) else {
            return false;
        };
        if t.muted == muted {
            return false;
        }
        t.muted = muted;
        t.awaiting_keyframe = if muted || !t.kind.is_video() {
            0
        } else {
            // Bit 0 for an unlayered stream, one per layer otherwise (at most 32).
            let streams = t.layers.len().clamp(1, 32);
            u32::MAX >> (32 - streams)
        };
        true
    }

    /// Whether the server muted `track`.
    pub fn is_muted(&self, track: TrackId) -> bool {
        self.tracks.get(&track).is_some_and(|t| t.muted)
    }

    /// What becomes of a frame of `track` (of simulcast `layer`) that its publisher
    /// sent: dropped while the server mutes it; after unmuting, a video stream's frames
    /// from its next keyframe on.
    pub fn mute_gate(&mut self, track: TrackId, layer: Option<usize>, keyframe: bool) -> MuteGate {
        let Some(t) = self.tracks.get_mut(&track) else {
            return MuteGate::Pass;
        };
        if t.muted {
            return MuteGate::Drop;
        }
        let bit = 1u32 << layer.unwrap_or(0).min(31);
        if t.awaiting_keyframe & bit == 0 {
            return MuteGate::Pass;
        }
        if keyframe {
            t.awaiting_keyframe &= !bit;
            MuteGate::Pass
        } else {
            MuteGate::NeedsKeyframe
        }
    }

    /// The room of a participant.
    pub fn room_of(&self, participant: &ParticipantId) -> Option<&RoomId> {
        self.participants.get(participant).map(|p| &p.room)
    }

    /// Members of a room in joining order.
    pub fn members(&self, room: &RoomId) -> &[ParticipantId] {
        self.rooms
            .get(room)
            .map(|r| r.members.as_slice())
            .unwrap_or_default()
    }

    /// Tracks a participant publishes.
    pub fn published(&self, participant: &ParticipantId) -> &[TrackId] {
        self.participants
            .get(participant)
            .map(|p| p.published.as_slice())
            .unwrap_or_default()
    }

    /// A subscriber lost pictures of `track` (PLI/FIR from it, or a gap seen by us):
    /// whether a keyframe request goes to the publisher now, throttled per track.
    pub fn request_keyframe(&mut self, track: TrackId, now: Instant) -> bool {
        match self.tracks.get_mut(&track) {
            Some(t) if t.kind.is_video() => t.keyframe.allow(now),
            _ => false,
        }
    }

    /// Keyframe requests swallowed by the throttle for `track` (all layers).
    pub fn keyframe_requests_suppressed(&self, track: TrackId) -> u64 {
        self.tracks.get(&track).map_or(0, |t| {
            t.keyframe.suppressed()
                + t.layers
                    .iter()
                    .map(|l| l.keyframe.suppressed())
                    .sum::<u64>()
        })
    }

    /// An RFC 6464 level (-dBov) arrived on an audio track.
    pub fn audio_level(&mut self, track: TrackId, dbov: u8, now: Instant) {
        let Some(t) = self.tracks.get(&track) else {
            return;
        };
        if let Some(room) = self.rooms.get_mut(&t.room) {
            room.speaker.observe(&t.publisher, dbov, now);
        }
    }

    /// Whether `track` is forwarded to `subscriber` now (it must be subscribed too).
    /// Audio always is; with `last_n`, video only from the N members who spoke most
    /// recently, not counting the subscriber itself, so a big room does not send
    /// everyone every camera.
    pub fn video_forwarded(&self, subscriber: &ParticipantId, track: TrackId) -> bool {
        let Some(t) = self.tracks.get(&track) else {
            return false;
        };
        let Some(n) = self.config.last_n else {
            return true;
        };
        if !t.kind.is_video() {
            return true;
        }
        let pinned = self
            .participants
            .get(subscriber)
            .map_or(&[][..], |p| p.pinned.as_slice());
        if pinned.contains(&t.publisher) {
            return true;
        }
        self.rooms.get(&t.room).is_some_and(|r| {
            r.recent
                .iter()
                .filter(|m| *m != subscriber && !pinned.contains(m))
                .take(n.saturating_sub(pinned.len()))
                .any(|m| *m == t.publisher)
        })
    }

    /// The room's active speaker.
    pub fn active_speaker(&self, room: &RoomId) -> Option<&ParticipantId> {
        self.rooms.get(room).and_then(|r| r.speaker.current())
    }

    /// When [`handle_timeout`](Self::handle_timeout) should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.rooms
            .values()
            .filter_map(|r| r.speaker.poll_timeout())
            .min()
    }

    /// Runs due timers (speaker evaluation).
    pub fn handle_timeout(&mut self, now: Instant) {
        for (id, room) in &mut self.rooms {
            if let Some(p) = room.speaker.handle_timeout(now) {
                if let Some(i) = room.recent.iter().position(|m| *m == p) {
                    let speaker = room.recent.remove(i);
                    room.recent.insert(0, speaker);
                }
                self.events.push_back(RouterEvent::ActiveSpeaker {
                    room: id.clone(),
                    participant: Some(p),
                });
            }
        }
    }

    /// The next change to act on.
    pub fn poll_event(&mut self) -> Option<RouterEvent> {
        self.events.pop_front()
    }

    /// Counts of what is held for the members `local` accepts (a shard's own, in a
    /// room spread over shards; the others count as `mirrored`), with the rooms
    /// `counted` accepts (each spread room counted by one shard).
    pub fn census_of(
        &self,
        local: impl Fn(&ParticipantId) -> bool,
        counted: impl Fn(&RoomId) -> bool,
    ) -> Census {
        let mut c = Census::default();
        for (id, p) in &self.participants {
            if local(id) {
                c.participants += 1;
                c.tracks += p.published.len();
                c.subscriptions += p.subscriptions.len();
            } else {
                c.mirrored += 1;
            }
        }
        c.rooms = self.rooms.keys().filter(|r| counted(r)).count();
        c
    }

    /// Counts of everything held.
    pub fn census(&self) -> Census {
        self.census_of(|_| true, |_| true)
    }

    /// Adds a subscription both ways and reports it, unless it exists.
    fn attach(&mut self, subscriber: &ParticipantId, track: TrackId) {
        let (Some(p), Some(t)) = (
            self.participants.get_mut(subscriber),
            self.tracks.get_mut(&track),
        ) else {
            return;
        };
        if t.subscribers.contains(subscriber) {
            return;
        }
        t.subscribers.push(subscriber.clone());
        p.subscriptions.push(track);
        self.events.push_back(RouterEvent::Subscribed {
            subscriber: subscriber.clone(),
            track,
            publisher: t.publisher.clone(),
            kind: t.kind,
        });
    }
}

#[path = "router_layers.rs"]
mod layers;

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
