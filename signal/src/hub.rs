//! The signalling core: sessions, rooms, presence and resume, as a plain struct driven by
//! method calls with the current time. It does no I/O: messages for a session go into that
//! session's bounded outbound queue (or, while its connection is lost, into a bounded
//! replay buffer), and timers are read with [`Hub::next_timeout`] and fired with
//! [`Hub::handle_timeouts`]. One-to-one calls live in [`crate::call`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use base64::Engine;
use huddle_sfu::{TrackKind, TrackKinds};
use serde_json::Value;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

use crate::auth::{Claims, check_name, check_room_name};
use crate::call::Call;
use crate::config::{CallsConfig, IceConfig, RoomsConfig, SignalConfig};
use crate::ice;
use crate::metrics::{Metrics, ReasonLabel};
use crate::protocol::{
    CallEndReason, ClientMessage, ErrorCode, IceServer, LeaveReason, ParticipantInfo, Permissions,
    ProtocolError, QualityUpdate, RequestId, ServerMessage, encode,
};

/// Internal handle of a session.
pub type SessionKey = u64;

/// The sending half of a connection's outbound queue.
pub type Link = mpsc::Sender<Utf8Bytes>;

/// What the hub needs from the configuration.
#[derive(Debug, Clone, Default)]
pub struct HubConfig {
    pub signal: SignalConfig,
    pub rooms: RoomsConfig,
    pub calls: CallsConfig,
    pub ice: IceConfig,
}

/// A deadline the hub asked to be woken for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Close the room if it is still empty.
    RoomIdle(Arc<str>),
    /// End the call if it is still unanswered.
    CallRing(Arc<str>),
    /// End the session if this generation's connection was not resumed.
    ResumeGrace(SessionKey, u64),
}

pub(crate) struct Session {
    pub(crate) sid: Arc<str>,
    pub(crate) identity: Arc<str>,
    pub(crate) name: String,
    pub(crate) grants: Permissions,
    /// The room the token allows (`*` for any).
    room_claim: Option<String>,
    pub(crate) room: Option<Arc<str>>,
    metadata: Option<Value>,
    joined_at: u64,
    resume_secret: [u8; 24],
    /// Bumped on every (re)attach so a stale connection's disconnect is ignored.
    generation: u64,
    link: Option<Link>,
    /// Pushes held while the connection is lost, replayed on resume.
    pending: VecDeque<Utf8Bytes>,
    /// The call this session placed or answered.
    pub(crate) call: Option<Arc<str>>,
}

impl Session {
    pub(crate) fn is_connected(&self) -> bool {
        self.link.is_some()
    }
}

struct Room {
    /// Members by identity: an identity is in a room at most once.
    members: BTreeMap<Arc<str>, SessionKey>,
    created_at: u64,
    empty_since: Option<Instant>,
    /// What a moderator muted, by identity: the kinds the SFU mutes in that identity's
    /// media sessions, those it starts later included, while the room lasts or until
    /// unmuted.
    moderated: BTreeMap<Arc<str>, TrackKinds>,
    /// Each scored member's connection quality (its last level and score) by sid: a
    /// member who joins is told them all, the room each level change.
    quality: BTreeMap<Arc<str>, QualityUpdate>,
}

/// What the media side needs to know of a session.
pub(crate) struct MediaContext {
    pub sid: Arc<str>,
    pub grants: Permissions,
    pub room: Option<Arc<str>>,
}

/// Result of attaching a connection to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    pub key: SessionKey,
    pub generation: u64,
    pub resumed: bool,
}

/// A room as listed by the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoomSummary {
    pub name: String,
    pub participants: usize,
    pub created_at: u64,
}

pub struct Hub {
    pub(crate) cfg: HubConfig,
    pub(crate) sessions: HashMap<SessionKey, Session>,
    by_sid: HashMap<Arc<str>, SessionKey>,
    /// Sessions of each identity, to ring every device on a call.
    pub(crate) by_identity: HashMap<Arc<str>, Vec<SessionKey>>,
    rooms: HashMap<Arc<str>, Room>,
    pub(crate) calls: HashMap<Arc<str>, Call>,
    timers: BTreeSet<(Instant, Timer)>,
    next_key: SessionKey,
    /// Sessions found too slow during a push; ended once the current operation is done.
    overflowed: Vec<SessionKey>,
    pub(crate) metrics: Arc<Metrics>,
    /// Sessions (by sid) that left their room, for the media side to end their SFU
    /// sessions; `None` without an SFU.
    media_exits: Option<mpsc::UnboundedSender<Arc<str>>>,
    /// Wall clock at `mono_base`, so that wall time follows the injected `now`.
    unix_base: SystemTime,
    mono_base: Instant,
}

fn random_token<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::fill(&mut b[..]);
    b
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Hub {
    pub fn new(cfg: HubConfig, metrics: Arc<Metrics>, now: Instant) -> Self {
        Self {
            cfg,
            sessions: HashMap::new(),
            by_sid: HashMap::new(),
            by_identity: HashMap::new(),
            rooms: HashMap::new(),
            calls: HashMap::new(),
            timers: BTreeSet::new(),
            next_key: 1,
            overflowed: Vec::new(),
            metrics,
            media_exits: None,
            unix_base: SystemTime::now(),
            mono_base: now,
        }
    }

    /// Where the sids of sessions leaving their room are sent (for the SFU).
    pub fn set_media_exits(&mut self, tx: mpsc::UnboundedSender<Arc<str>>) {
        self.media_exits = Some(tx);
    }

    /// A session's sid, grants and current room.
    pub(crate) fn media_context(&self, key: SessionKey) -> Option<MediaContext> {
        let s = self.sessions.get(&key)?;
        Some(MediaContext {
            sid: s.sid.clone(),
            grants: s.grants,
            room: s.room.clone(),
        })
    }

    /// The identity of the session with this sid.
    pub(crate) fn identity_of_sid(&self, sid: &str) -> Option<Arc<str>> {
        let key = self.by_sid.get(sid)?;
        Some(self.sessions.get(key)?.identity.clone())
    }

    /// Keeps the connection quality of a member of `room` (`update.sid`) for members
    /// who join later. True when its level is new or changed, for the room to be told;
    /// false too when the session is not (or no longer) a member of `room`.
    pub(crate) fn note_quality(&mut self, room: &str, update: &QualityUpdate) -> bool {
        let member = self
            .by_sid
            .get(update.sid.as_str())
            .and_then(|k| self.sessions.get(k))
            .is_some_and(|s| s.room.as_deref() == Some(room));
        let Some(r) = self.rooms.get_mut(room).filter(|_| member) else {
            return false;
        };
        let before = r.quality.insert(update.sid.as_str().into(), update.clone());
        before.is_none_or(|b| b.quality != update.quality)
    }

    /// Forgets the connection quality of `sid` in `room` (its media session ended).
    pub(crate) fn forget_quality(&mut self, room: &str, sid: &str) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.quality.remove(sid);
        }
    }

    /// Sends a push to the session with this sid, if it still exists.
    pub(crate) fn push_to_sid(&mut self, sid: &str, msg: &ServerMessage, now: Instant) {
        if let Some(&key) = self.by_sid.get(sid) {
            self.respond(key, None, msg);
            self.settle(now);
        }
    }

    /// Sends a push to every member of a room.
    pub(crate) fn push_to_room(&mut self, room: &str, msg: &ServerMessage, now: Instant) {
        self.broadcast(room, msg, None);
        self.settle(now);
    }

    /// Answers a request of session `key` (from a task that finished after the call).
    pub(crate) fn answer(
        &mut self,
        key: SessionKey,
        id: Option<&RequestId>,
        result: Result<ServerMessage, ProtocolError>,
        now: Instant,
    ) {
        match result {
            Ok(msg) => self.respond(key, id, &msg),
            Err(e) => self.send_error(key, id, &e),
        }
        self.settle(now);
    }

    pub(crate) fn wall(&self, now: Instant) -> SystemTime {
        self.unix_base + now.saturating_duration_since(self.mono_base)
    }

    pub(crate) fn unix_ms(&self, now: Instant) -> u64 {
        self.wall(now)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    pub(crate) fn schedule(&mut self, at: Instant, timer: Timer) {
        self.timers.insert((at, timer));
    }

    /// The earliest deadline the hub wants [`Hub::handle_timeouts`] called at.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    pub fn ice_servers(&self, identity: &str, now: Instant) -> Vec<IceServer> {
        ice::ice_servers(&self.cfg.ice, identity, self.wall(now))
    }

    /// Attaches a new connection: resumes the session named by `resume_token` if it exists,
    /// belongs to the same identity and the secret matches; otherwise starts a new one. The
    /// first message queued on `link` is `welcome`, followed by any replayed pushes.
    pub fn connect(
        &mut self,
        claims: &Claims,
        resume_token: Option<&str>,
        link: Link,
        now: Instant,
    ) -> Attached {
        if let Some(key) = resume_token.and_then(|t| self.find_resumable(claims, t)) {
            let heartbeat = self.cfg.signal.heartbeat_interval;
            let ice = self.ice_servers(&claims.sub, now);
            let session = self.sessions.get_mut(&key).expect("found above");
            session.generation += 1;
            session.grants = claims.grants;
            session.room_claim = claims.room.clone();
            session.link = Some(link);
            let pending = std::mem::take(&mut session.pending);
            let welcome = welcome(session, true, heartbeat, ice);
            let generation = session.generation;
            self.metrics.sessions_resumed.inc();
            self.push(key, welcome.into());
            for frame in pending {
                self.push(key, frame);
            }
            self.settle(now);
            return Attached {
                key,
                generation,
                resumed: true,
            };
        }
        let key = self.next_key;
        self.next_key += 1;
        let sid: Arc<str> = format!("S_{}", b64(&random_token::<12>())).into();
        let identity: Arc<str> = claims.sub.as_str().into();
        let session = Session {
            sid: sid.clone(),
            identity: identity.clone(),
            name: claims.display_name().to_owned(),
            grants: claims.grants,
            room_claim: claims.room.clone(),
            room: None,
            metadata: None,
            joined_at: 0,
            resume_secret: random_token(),
            generation: 1,
            link: Some(link),
            pending: VecDeque::new(),
            call: None,
        };
        let welcome = welcome(
            &session,
            false,
            self.cfg.signal.heartbeat_interval,
            self.ice_servers(&claims.sub, now),
        );
        self.sessions.insert(key, session);
        self.by_sid.insert(sid, key);
        self.by_identity.entry(identity).or_default().push(key);
        self.metrics.sessions.set(self.sessions.len() as i64);
        self.push(key, welcome.into());
        Attached {
            key,
            generation: 1,
            resumed: false,
        }
    }

    fn find_resumable(&self, claims: &Claims, token: &str) -> Option<SessionKey> {
        let (sid, secret) = token.split_once('.')?;
        let key = *self.by_sid.get(sid)?;
        let s = self.sessions.get(&key)?;
        let secret_ok: bool = b64(&s.resume_secret)
            .as_bytes()
            .ct_eq(secret.as_bytes())
            .into();
        (secret_ok && *s.identity == *claims.sub).then_some(key)
    }

    /// The connection of `generation` is gone. A clean close ends the session now; a lost
    /// connection keeps it (and its room and call) for the resume grace period.
    pub fn disconnect(&mut self, key: SessionKey, generation: u64, clean: bool, now: Instant) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.generation != generation {
            return;
        }
        s.link = None;
        if clean {
            self.end_session(key, LeaveReason::Left, now);
        } else {
            let at = now + self.cfg.signal.resume_grace;
            self.schedule(at, Timer::ResumeGrace(key, generation));
        }
        self.settle(now);
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeouts(&mut self, now: Instant) {
        while let Some((at, _)) = self.timers.first() {
            if *at > now {
                break;
            }
            let (_, timer) = self.timers.pop_first().expect("checked non-empty");
            match timer {
                Timer::RoomIdle(name) => {
                    let idle = self.cfg.rooms.idle_timeout;
                    if let Some(room) = self.rooms.get(&name)
                        && room.members.is_empty()
                        && room.empty_since.is_some_and(|t| t + idle <= now)
                    {
                        self.rooms.remove(&name);
                        tracing::info!(room = %name, "room closed after idle timeout");
                        self.update_room_gauges();
                    }
                }
                Timer::CallRing(call_id) => self.ring_timeout(&call_id, now),
                Timer::ResumeGrace(key, generation) => {
                    if self
                        .sessions
                        .get(&key)
                        .is_some_and(|s| s.generation == generation && s.link.is_none())
                    {
                        self.end_session(key, LeaveReason::Disconnected, now);
                    }
                }
            }
        }
        self.settle(now);
    }

    /// Handles one decoded request from session `key`.
    pub fn handle(
        &mut self,
        key: SessionKey,
        id: Option<RequestId>,
        msg: ClientMessage,
        now: Instant,
    ) {
        let result = match msg {
            ClientMessage::Ping {} => {
                self.respond(key, id.as_ref(), &ServerMessage::Pong {});
                Ok(())
            }
            ClientMessage::Join { room, metadata } => {
                self.join(key, id.as_ref(), room, metadata, now)
            }
            ClientMessage::Leave {} => self.leave(key, id.as_ref(), now),
            ClientMessage::ListParticipants {} => self.list_participants(key, id.as_ref()),
            ClientMessage::UpdateParticipant { name, metadata } => {
                self.update_participant(key, id.as_ref(), name, metadata)
            }
            ClientMessage::GetIceServers {} => {
                let identity = self.sessions.get(&key).map(|s| s.identity.clone());
                if let Some(identity) = identity {
                    let ice_servers = self.ice_servers(&identity, now);
                    self.respond(key, id.as_ref(), &ServerMessage::IceServers { ice_servers });
                }
                Ok(())
            }
            call => self.handle_call(key, id.as_ref(), call, now),
        };
        if let Err(e) = result {
            self.send_error(key, id.as_ref(), &e);
        }
        self.settle(now);
    }

    /// Sends an error to one session.
    pub fn send_error(&mut self, key: SessionKey, id: Option<&RequestId>, e: &ProtocolError) {
        self.metrics
            .errors
            .get_or_create(&crate::metrics::CodeLabel {
                code: e.code.as_str(),
            })
            .inc();
        self.respond(key, id, &e.to_message());
    }

    pub(crate) fn respond(&mut self, key: SessionKey, id: Option<&RequestId>, msg: &ServerMessage) {
        self.push(key, encode(msg, id).into());
    }

    /// Queues a frame for a session: on its connection, or in its replay buffer while the
    /// connection is lost. A full queue or buffer marks the session as overflowed.
    pub(crate) fn push(&mut self, key: SessionKey, frame: Utf8Bytes) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        match &s.link {
            Some(tx) => match tx.try_send(frame) {
                Ok(()) => {
                    self.metrics.messages_out.inc();
                }
                Err(mpsc::error::TrySendError::Full(_)) => self.overflowed.push(key),
                // The connection task is gone and will report the disconnect itself.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            },
            None => {
                if s.pending.len() < self.cfg.signal.resume_buffer {
                    s.pending.push_back(frame);
                } else {
                    self.overflowed.push(key);
                }
            }
        }
    }

    /// Ends sessions that could not keep up, until no more overflow.
    fn settle(&mut self, now: Instant) {
        while let Some(key) = self.overflowed.pop() {
            if let Some(s) = self.sessions.get_mut(&key) {
                tracing::warn!(sid = %s.sid, identity = %s.identity, "closing slow consumer");
                self.metrics.slow_consumers.inc();
                s.link = None;
                s.pending.clear();
                self.end_session(key, LeaveReason::Disconnected, now);
            }
        }
    }

    /// Removes a session for good: leaves its room, ends its calls, drops its connection.
    pub(crate) fn end_session(&mut self, key: SessionKey, reason: LeaveReason, now: Instant) {
        self.leave_room(key, reason, now);
        self.end_calls_of(key, CallEndReason::PeerDisconnected, now);
        if let Some(s) = self.sessions.remove(&key) {
            self.by_sid.remove(&s.sid);
            if let Some(list) = self.by_identity.get_mut(&s.identity) {
                list.retain(|k| *k != key);
                if list.is_empty() {
                    self.by_identity.remove(&s.identity);
                }
            }
            tracing::debug!(sid = %s.sid, identity = %s.identity, ?reason, "session ended");
        }
        self.metrics.sessions.set(self.sessions.len() as i64);
    }

    /// The room `key` is in, or `not_in_room`.
    fn current_room(&self, key: SessionKey) -> Result<Arc<str>, ProtocolError> {
        self.sessions
            .get(&key)
            .and_then(|s| s.room.clone())
            .ok_or_else(not_in_room)
    }

    fn participant_info(&self, key: SessionKey) -> Option<ParticipantInfo> {
        let s = self.sessions.get(&key)?;
        Some(ParticipantInfo {
            sid: s.sid.to_string(),
            identity: s.identity.to_string(),
            name: s.name.clone(),
            metadata: s.metadata.clone(),
            joined_at: s.joined_at,
            permissions: Permissions {
                admin: false,
                ..s.grants
            },
        })
    }

    fn room_infos(&self, room: &Room) -> Vec<ParticipantInfo> {
        room.members
            .values()
            .filter_map(|k| self.participant_info(*k))
            .collect()
    }

    /// Sends one message to every member of `room` except `except`, serialising it once.
    fn broadcast(&mut self, room: &str, msg: &ServerMessage, except: Option<SessionKey>) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let targets: Vec<SessionKey> = r
            .members
            .values()
            .copied()
            .filter(|k| Some(*k) != except)
            .collect();
        if targets.is_empty() {
            return;
        }
        let frame: Utf8Bytes = encode(msg, None).into();
        for k in targets {
            self.push(k, frame.clone());
        }
    }

    fn check_metadata(&self, metadata: &Option<Value>) -> Result<(), ProtocolError> {
        if let Some(m) = metadata {
            let len = serde_json::to_string(m)
                .map(|s| s.len())
                .unwrap_or(usize::MAX);
            if len > self.cfg.rooms.max_metadata_bytes {
                return Err(ProtocolError::new(
                    ErrorCode::InvalidMessage,
                    format!(
                        "metadata is {len} bytes; the limit is {}",
                        self.cfg.rooms.max_metadata_bytes
                    ),
                ));
            }
        }
        Ok(())
    }

    fn join(
        &mut self,
        key: SessionKey,
        id: Option<&RequestId>,
        room: Option<String>,
        metadata: Option<Value>,
        now: Instant,
    ) -> Result<(), ProtocolError> {
        let s = self
            .sessions
            .get(&key)
            .ok_or_else(|| internal("no session"))?;
        let room =
            match room.or_else(|| s.room_claim.clone().filter(|r| r != crate::auth::ANY_ROOM)) {
                Some(r) => r,
                None => {
                    return Err(ProtocolError::new(
                        ErrorCode::InvalidMessage,
                        "no room given and the token names none",
                    ));
                }
            };
        check_room_name(&room).map_err(|m| ProtocolError::new(ErrorCode::InvalidRoom, m))?;
        let may_join = match s.room_claim.as_deref() {
            Some(crate::auth::ANY_ROOM) => true,
            Some(r) => r == room,
            None => false,
        };
        if !may_join {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                format!("the access token does not allow joining room {room:?}"),
            ));
        }
        if let Some(current) = &s.room {
            return Err(ProtocolError::new(
                ErrorCode::InvalidState,
                format!("already in room {current:?}; leave it first"),
            ));
        }
        self.check_metadata(&metadata)?;
        let identity = s.identity.clone();
        let room_key: Arc<str> = room.as_str().into();
        match self.rooms.get(&room_key) {
            Some(r) => {
                let replacing = r.members.contains_key(&identity);
                if !replacing && r.members.len() >= self.cfg.rooms.max_participants {
                    return Err(ProtocolError::new(
                        ErrorCode::RoomFull,
                        format!(
                            "room {room:?} has its maximum of {} participants",
                            self.cfg.rooms.max_participants
                        ),
                    ));
                }
            }
            None => {
                if self.rooms.len() >= self.cfg.rooms.max_rooms {
                    return Err(ProtocolError::new(
                        ErrorCode::TooManyRooms,
                        "the server has its maximum number of rooms",
                    ));
                }
                let created_at = self.unix_ms(now);
                self.rooms.insert(
                    room_key.clone(),
                    Room {
                        members: BTreeMap::new(),
                        created_at,
                        empty_since: None,
                        moderated: BTreeMap::new(),
                        quality: BTreeMap::new(),
                    },
                );
                tracing::info!(room = %room_key, "room created");
            }
        }
        // The same identity joining again replaces its older session in the room.
        let older = self
            .rooms
            .get(&room_key)
            .and_then(|r| r.members.get(&identity).copied());
        if let Some(older) = older {
            self.leave_room(older, LeaveReason::DuplicateIdentity, now);
        }
        let joined_at = self.unix_ms(now);
        let s = self
            .sessions
            .get_mut(&key)
            .ok_or_else(|| internal("no session"))?;
        s.room = Some(room_key.clone());
        s.metadata = metadata;
        s.joined_at = joined_at;
        let sid = s.sid.clone();
        let r = self
            .rooms
            .get_mut(&room_key)
            .ok_or_else(|| internal("no room"))?;
        r.members.insert(identity.clone(), key);
        r.empty_since = None;
        let participant = self
            .participant_info(key)
            .ok_or_else(|| internal("no session"))?;
        let r = self
            .rooms
            .get(&room_key)
            .ok_or_else(|| internal("no room"))?;
        let participants = self.room_infos(r);
        let ice_servers = self.ice_servers(&identity, now);
        tracing::info!(room = %room_key, %identity, %sid, "participant joined");
        self.respond(
            key,
            id,
            &ServerMessage::Joined {
                room: room.clone(),
                participant: participant.clone(),
                participants,
                ice_servers,
            },
        );
        self.broadcast(
            &room,
            &ServerMessage::ParticipantJoined {
                room: room.clone(),
                participant,
            },
            Some(key),
        );
        // The members' connection quality so far; changes follow as they come.
        let scored: Vec<QualityUpdate> = self
            .rooms
            .get(&room_key)
            .map(|r| r.quality.values().cloned().collect())
            .unwrap_or_default();
        if !scored.is_empty() {
            self.respond(
                key,
                None,
                &ServerMessage::ConnectionQuality {
                    room: room.clone(),
                    participants: scored,
                },
            );
        }
        self.update_room_gauges();
        Ok(())
    }

    fn leave(
        &mut self,
        key: SessionKey,
        id: Option<&RequestId>,
        now: Instant,
    ) -> Result<(), ProtocolError> {
        let room = self.current_room(key)?;
        self.leave_room(key, LeaveReason::Left, now);
        self.respond(
            key,
            id,
            &ServerMessage::Left {
                room: room.to_string(),
            },
        );
        Ok(())
    }

    /// Takes a session out of its room and tells the others. For reasons other than
    /// `Left` and `Disconnected` the session itself is told with `removed`.
    fn leave_room(&mut self, key: SessionKey, reason: LeaveReason, now: Instant) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(room) = s.room.take() else {
            return;
        };
        s.metadata = None;
        let (sid, identity) = (s.sid.to_string(), s.identity.clone());
        if let Some(tx) = &self.media_exits {
            let _ = tx.send(s.sid.clone());
        }
        if let Some(r) = self.rooms.get_mut(&room) {
            if r.members.get(&identity) == Some(&key) {
                r.members.remove(&identity);
            }
            r.quality.remove(sid.as_str());
            if r.members.is_empty() {
                r.empty_since = Some(now);
                let at = now + self.cfg.rooms.idle_timeout;
                self.schedule(at, Timer::RoomIdle(room.clone()));
            }
        }
        if !matches!(reason, LeaveReason::Left | LeaveReason::Disconnected) {
            self.respond(
                key,
                None,
                &ServerMessage::Removed {
                    room: room.to_string(),
                    reason,
                },
            );
        }
        tracing::info!(room = %room, %identity, %sid, ?reason, "participant left");
        self.broadcast(
            &room,
            &ServerMessage::ParticipantLeft {
                room: room.to_string(),
                sid,
                identity: identity.to_string(),
                reason,
            },
            None,
        );
        self.update_room_gauges();
    }

    fn list_participants(
        &mut self,
        key: SessionKey,
        id: Option<&RequestId>,
    ) -> Result<(), ProtocolError> {
        let room = self.current_room(key)?;
        let participants = self
            .rooms
            .get(&room)
            .map(|r| self.room_infos(r))
            .unwrap_or_default();
        self.respond(
            key,
            id,
            &ServerMessage::Participants {
                room: room.to_string(),
                participants,
            },
        );
        Ok(())
    }

    fn update_participant(
        &mut self,
        key: SessionKey,
        id: Option<&RequestId>,
        name: Option<String>,
        metadata: Option<Value>,
    ) -> Result<(), ProtocolError> {
        if let Some(n) = &name {
            check_name("name", n).map_err(|m| ProtocolError::new(ErrorCode::InvalidMessage, m))?;
        }
        self.check_metadata(&metadata)?;
        let s = self
            .sessions
            .get_mut(&key)
            .ok_or_else(|| internal("no session"))?;
        let room = s.room.clone().ok_or_else(not_in_room)?;
        if let Some(n) = name {
            s.name = n;
        }
        if metadata.is_some() {
            s.metadata = metadata;
        }
        let participant = self
            .participant_info(key)
            .ok_or_else(|| internal("no session"))?;
        let msg = ServerMessage::ParticipantUpdated {
            room: room.to_string(),
            participant,
        };
        self.respond(key, id, &msg);
        self.broadcast(&room, &msg, Some(key));
        Ok(())
    }

    fn update_room_gauges(&self) {
        self.metrics.rooms.set(self.rooms.len() as i64);
        let participants: usize = self.rooms.values().map(|r| r.members.len()).sum();
        self.metrics.participants.set(participants as i64);
    }

    pub(crate) fn call_ended_metric(&self, reason: CallEndReason) {
        let label = match reason {
            CallEndReason::Rejected => "rejected",
            CallEndReason::Busy => "busy",
            CallEndReason::Cancelled => "cancelled",
            CallEndReason::Timeout => "timeout",
            CallEndReason::Hangup => "hangup",
            CallEndReason::AnsweredElsewhere => "answered_elsewhere",
            CallEndReason::RejectedElsewhere => "rejected_elsewhere",
            CallEndReason::PeerDisconnected => "peer_disconnected",
            CallEndReason::ServerShutdown => "server_shutdown",
        };
        self.metrics
            .calls_ended
            .get_or_create(&ReasonLabel { reason: label })
            .inc();
        self.metrics.calls_active.set(self.calls.len() as i64);
    }

    // ---- admin ----

    pub fn rooms(&self) -> Vec<RoomSummary> {
        let mut out: Vec<RoomSummary> = self
            .rooms
            .iter()
            .map(|(name, r)| RoomSummary {
                name: name.to_string(),
                participants: r.members.len(),
                created_at: r.created_at,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn participants(&self, room: &str) -> Option<Vec<ParticipantInfo>> {
        self.rooms.get(room).map(|r| self.room_infos(r))
    }

    /// Removes `identity` from `room`; false if it is not there.
    pub fn remove_participant(&mut self, room: &str, identity: &str, now: Instant) -> bool {
        let Some(key) = self
            .rooms
            .get(room)
            .and_then(|r| r.members.get(identity).copied())
        else {
            return false;
        };
        self.leave_room(key, LeaveReason::Removed, now);
        self.settle(now);
        true
    }

    /// Records a moderator's mute (or unmute) of what `identity`, a member of `room`,
    /// publishes (of `kind`, or both), for its media sessions to come; false if it is
    /// not a member. The caller mutes its current sessions in the SFU.
    pub fn set_moderated(
        &mut self,
        room: &str,
        identity: &str,
        kind: Option<TrackKind>,
        muted: bool,
    ) -> bool {
        let Some(r) = self.rooms.get_mut(room) else {
            return false;
        };
        let Some((member, _)) = r.members.get_key_value(identity) else {
            return false;
        };
        let member = member.clone();
        let kinds = r.moderated.entry(member.clone()).or_default();
        kinds.set(TrackKinds::of(kind), muted);
        if kinds.is_empty() {
            r.moderated.remove(&member);
        }
        true
    }

    /// The kinds a moderator muted for the session with this sid, in its room.
    pub fn moderated_kinds(&self, sid: &str) -> TrackKinds {
        let Some(s) = self.by_sid.get(sid).and_then(|k| self.sessions.get(k)) else {
            return TrackKinds::default();
        };
        s.room
            .as_ref()
            .and_then(|room| self.rooms.get(room))
            .and_then(|r| r.moderated.get(&s.identity))
            .copied()
            .unwrap_or_default()
    }

    /// Closes `room`, telling every member; false if there is no such room.
    pub fn close_room(&mut self, room: &str, now: Instant) -> bool {
        let Some(r) = self.rooms.get(room) else {
            return false;
        };
        let members: Vec<SessionKey> = r.members.values().copied().collect();
        for key in members {
            self.leave_room(key, LeaveReason::RoomClosed, now);
        }
        self.rooms.remove(room);
        self.update_room_gauges();
        self.settle(now);
        tracing::info!(%room, "room closed by admin");
        true
    }

    /// Tells every connected session the server is going away and ends all calls.
    pub fn shutdown(&mut self, reconnect_after: Duration, now: Instant) {
        let ids: Vec<Arc<str>> = self.calls.keys().cloned().collect();
        for id in ids {
            self.end_call(&id, CallEndReason::ServerShutdown, None, now);
        }
        let frame: Utf8Bytes = encode(
            &ServerMessage::Shutdown {
                reconnect_after_ms: reconnect_after.as_millis() as u64,
            },
            None,
        )
        .into();
        let keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
        for key in keys {
            self.push(key, frame.clone());
            if let Some(s) = self.sessions.get_mut(&key) {
                // Dropping the sender lets the connection drain what is queued, then close.
                s.link = None;
            }
        }
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

fn welcome(s: &Session, resumed: bool, heartbeat: Duration, ice_servers: Vec<IceServer>) -> String {
    encode(
        &ServerMessage::Welcome {
            protocol: crate::protocol::PROTOCOL_VERSION,
            server_version: env!("CARGO_PKG_VERSION"),
            session_id: s.sid.to_string(),
            resume_token: format!("{}.{}", s.sid, b64(&s.resume_secret)),
            resumed,
            identity: s.identity.to_string(),
            name: s.name.clone(),
            permissions: s.grants,
            room: s.room.as_deref().map(str::to_owned),
            heartbeat_interval_ms: heartbeat.as_millis() as u64,
            ice_servers,
        },
        None,
    )
}

pub(crate) fn internal(what: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::Internal, what)
}

fn not_in_room() -> ProtocolError {
    ProtocolError::new(ErrorCode::NotInRoom, "join a room first")
}
