//! Media through the SFU (`huddle-sfu`), carried over the signalling socket: a session in
//! a room joins the room's media session, offers, and answers the SFU's offers; the SFU's
//! events (its offers, tracks coming and going, the active speaker, a lost media session)
//! are pushed to the sessions and rooms concerned. A session leaving its room, for any
//! reason, leaves the SFU too.
//!
//! Offer/answer direction: the client offers first (`media_offer`, answered with
//! `media_answer`); afterwards the SFU offers when tracks come and go (`media_offer`
//! push, answered with `media_answer {offer_id}`). On glare the client's offer wins: the
//! SFU drops its own offer (an answer to it gets `stale_offer`) and offers again later.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use huddle_sfu::{
    LeaveReason, ParticipantStats, Quality, SfuError, SfuEvent, SfuEvents, SfuHandle, TrackId,
    TrackKind, TrackKinds, TrackRefusal,
};
use tokio::sync::mpsc;

use crate::hub::{Hub, SessionKey};
use crate::protocol::{
    ClientMessage, ErrorCode, ProtocolError, QualityUpdate, RequestId, ServerMessage,
};
use crate::service::AppState;

/// Largest SDP accepted from a client.
pub const MAX_SDP_BYTES: usize = 32 * 1024;

fn error(e: SfuError) -> ProtocolError {
    use huddle_sfu::RouterError as R;
    match e {
        SfuError::Router(R::RoomFull(_) | R::TooManyRooms) => {
            ProtocolError::new(ErrorCode::RoomFull, e.to_string())
        }
        SfuError::Router(R::AlreadyJoined(_)) => {
            ProtocolError::new(ErrorCode::InvalidState, "already in the media session")
        }
        SfuError::Router(R::UnknownParticipant(_)) => {
            ProtocolError::new(ErrorCode::InvalidState, "send media_join first")
        }
        SfuError::Router(R::UnknownTrack(_) | R::NotSubscribable { .. }) => {
            ProtocolError::new(ErrorCode::NotFound, e.to_string())
        }
        SfuError::Router(R::TooManyTracks(_) | R::TooManyPublishers(_) | R::TooManyPinned(_)) => {
            ProtocolError::new(ErrorCode::InvalidMessage, e.to_string())
        }
        SfuError::Router(R::NotInRoom(_)) => ProtocolError::new(ErrorCode::NotFound, e.to_string()),
        SfuError::BadSdp(_) | SfuError::Negotiation(_) => {
            ProtocolError::new(ErrorCode::BadSdp, e.to_string())
        }
        SfuError::StaleAnswer(_) => ProtocolError::new(ErrorCode::StaleOffer, e.to_string()),
        SfuError::Closed => ProtocolError::new(ErrorCode::ShuttingDown, e.to_string()),
        SfuError::Config(_) | SfuError::Io(_) => {
            ProtocolError::new(ErrorCode::Internal, e.to_string())
        }
    }
}

fn parse_track(t: &str) -> Result<TrackId, ProtocolError> {
    t.strip_prefix('T')
        .and_then(|n| n.parse().ok())
        .map(TrackId)
        .ok_or_else(|| ProtocolError::new(ErrorCode::InvalidMessage, "track ids look like T7"))
}

fn parse_quality(q: &str) -> Result<Quality, ProtocolError> {
    Quality::parse(q).ok_or_else(|| {
        ProtocolError::new(
            ErrorCode::InvalidMessage,
            "max_quality is \"low\", \"medium\" or \"high\"",
        )
    })
}

/// Members one `media_pin` may name (the SFU's limit).
const MAX_PINNED: usize = huddle_sfu::router::MAX_PINNED;

/// Largest width or height accepted in `media_subscribe` (beyond any camera).
const MAX_PICTURE_SIDE: u32 = 16_384;

/// The picture limit `media_subscribe` asks for: `None` when it gives neither
/// dimension (the limit stays as it is), `Some(None)` when a dimension is 0 (the limit
/// is lifted); a missing dimension is unlimited.
fn max_size(
    width: Option<u32>,
    height: Option<u32>,
) -> Result<Option<Option<(u16, u16)>>, ProtocolError> {
    if width.is_none() && height.is_none() {
        return Ok(None);
    }
    if width == Some(0) || height == Some(0) {
        return Ok(Some(None));
    }
    let side = |v: Option<u32>| match v {
        None => Ok(u16::MAX),
        Some(v) if (1..=MAX_PICTURE_SIDE).contains(&v) => Ok(v as u16),
        Some(_) => Err(ProtocolError::new(
            ErrorCode::InvalidMessage,
            format!(
                "max_width and max_height are 1..={MAX_PICTURE_SIDE} pixels (0 lifts the limit)"
            ),
        )),
    };
    Ok(Some(Some((side(width)?, side(height)?))))
}

fn check_sdp(sdp: &str) -> Result<(), ProtocolError> {
    if sdp.len() > MAX_SDP_BYTES {
        return Err(ProtocolError::new(
            ErrorCode::MessageTooLarge,
            format!("SDP is limited to {MAX_SDP_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Handles one media request of session `key`. The SFU's reply is awaited in a task, so
/// the connection keeps reading meanwhile; the answer goes to the session by key.
pub(crate) fn handle(
    st: &Arc<AppState>,
    key: SessionKey,
    id: Option<RequestId>,
    msg: ClientMessage,
) {
    let ctx = st.hub.lock().media_context(key);
    let result = (|| {
        let sfu = st.sfu.clone().ok_or_else(|| {
            ProtocolError::new(ErrorCode::MediaUnavailable, "this server runs no SFU")
        })?;
        let crate::hub::MediaContext { sid, grants, room } =
            ctx.ok_or_else(|| ProtocolError::new(ErrorCode::Internal, "session not found"))?;
        let room = room.ok_or_else(|| {
            ProtocolError::new(ErrorCode::NotInRoom, "join a room before its media session")
        })?;
        if !grants.publish && !grants.subscribe {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                "the access token grants neither publish nor subscribe",
            ));
        }
        let req = Request::parse(msg)?;
        Ok((sfu, sid, room, req))
    })();
    let (sfu, sid, room, req) = match result {
        Ok((sfu, sid, room, Some(req))) => (sfu, sid, room, req),
        // Not a media request: nothing to answer here.
        Ok((_, _, _, None)) => return,
        Err(e) => {
            st.hub
                .lock()
                .answer(key, id.as_ref(), Err(e), Instant::now());
            return;
        }
    };
    let st = st.clone();
    tokio::spawn(async move {
        let sid_s = sid.to_string();
        let r = match req {
            Request::Join => {
                let joined = ServerMessage::MediaJoined {
                    room: room.to_string(),
                    sid: sid_s.clone(),
                };
                let r = sfu.join(room.as_ref(), sid_s.as_str()).await;
                if r.is_ok() {
                    apply_moderation(&st, &sfu, &sid_s).await;
                }
                r.map(|()| joined)
            }
            Request::Offer(sdp) => sfu
                .offer(sid_s.as_str(), sdp)
                .await
                .map(|sdp| ServerMessage::MediaAnswer { sdp }),
            Request::Answer { offer_id, sdp } => sfu
                .answer(sid_s.as_str(), offer_id, sdp)
                .await
                .map(|()| ServerMessage::Ok {}),
            Request::Subscribe {
                track,
                on: true,
                quality,
                size,
            } => {
                let mut r = sfu.subscribe(sid_s.as_str(), track).await;
                if let (Ok(()), Some(q)) = (&r, quality) {
                    r = sfu.set_max_quality(sid_s.as_str(), track, q).await;
                }
                // Sent whenever either dimension is given, or to lift an earlier
                // limit: a subscribe without them leaves the limit as it was.
                if let (Ok(()), Some(size)) = (&r, size) {
                    r = sfu.set_max_size(sid_s.as_str(), track, size).await;
                }
                r.map(|()| ServerMessage::Ok {})
            }
            Request::Subscribe { track, .. } => sfu
                .unsubscribe(sid_s.as_str(), track)
                .await
                .map(|()| ServerMessage::Ok {}),
            Request::AutoSubscribe(on) => sfu
                .set_auto_subscribe(sid_s.as_str(), on)
                .await
                .map(|()| ServerMessage::Ok {}),
            Request::Pin(pinned) => sfu
                .set_pinned(sid_s.as_str(), pinned)
                .await
                .map(|()| ServerMessage::Ok {}),
            Request::Leave => sfu
                .leave(sid_s.as_str())
                .await
                .map(|()| ServerMessage::Ok {}),
        };
        st.hub
            .lock()
            .answer(key, id.as_ref(), r.map_err(error), Instant::now());
    });
}

/// Applies a moderator's mute, which outlasts the media session it was made in, to a
/// session that just joined the SFU: before the client hears it joined, so before it
/// publishes. The record is read again after each change until it holds still: a
/// moderator who mutes or unmutes meanwhile also changes the session directly, but that
/// change may reach the SFU before this one, which must not then undo it (the SFU
/// handles one participant's requests in order, so the last read decides).
async fn apply_moderation(st: &AppState, sfu: &SfuHandle, sid: &str) {
    /// More rounds than this means a moderator toggling without pause; the last
    /// toggle's own request to the SFU is then what decides.
    const ROUNDS: usize = 4;
    let mut applied = TrackKinds::default();
    for _ in 0..ROUNDS {
        let wanted = st.hub.lock().moderated_kinds(sid);
        if wanted == applied {
            return;
        }
        for kind in TrackKind::ALL {
            let muted = wanted.contains(kind);
            if muted == applied.contains(kind) {
                continue;
            }
            if let Err(e) = sfu.mute(sid, Some(kind), muted).await {
                tracing::debug!(sid, "moderator's mute not applied: {e}");
            }
        }
        applied = wanted;
    }
}

/// A media request, checked and parsed once before it goes to the SFU.
enum Request {
    Join,
    Offer(String),
    Answer {
        offer_id: u64,
        sdp: String,
    },
    /// `on` false unsubscribes; `quality` and `size` (see [`max_size`]) cap the layer.
    Subscribe {
        track: TrackId,
        on: bool,
        quality: Option<Quality>,
        size: Option<Option<(u16, u16)>>,
    },
    AutoSubscribe(bool),
    Pin(Vec<huddle_sfu::ParticipantId>),
    Leave,
}

impl Request {
    /// The media request `msg` is (`None` for any other message), or why it is refused.
    fn parse(msg: ClientMessage) -> Result<Option<Request>, ProtocolError> {
        Ok(Some(match msg {
            ClientMessage::MediaJoin {} => Request::Join,
            ClientMessage::MediaOffer { sdp } => {
                check_sdp(&sdp)?;
                Request::Offer(sdp)
            }
            ClientMessage::MediaAnswer { offer_id, sdp } => {
                check_sdp(&sdp)?;
                Request::Answer { offer_id, sdp }
            }
            ClientMessage::MediaSubscribe {
                track,
                on,
                max_quality,
                max_width,
                max_height,
            } => Request::Subscribe {
                track: parse_track(&track)?,
                on,
                quality: max_quality.as_deref().map(parse_quality).transpose()?,
                size: max_size(max_width, max_height)?,
            },
            ClientMessage::MediaAutoSubscribe { on } => Request::AutoSubscribe(on),
            ClientMessage::MediaPin { participants } => {
                if participants.len() > MAX_PINNED {
                    return Err(ProtocolError::new(
                        ErrorCode::InvalidMessage,
                        format!("at most {MAX_PINNED} participants can be pinned"),
                    ));
                }
                Request::Pin(
                    participants
                        .iter()
                        .map(|p| huddle_sfu::ParticipantId::from(p.as_str()))
                        .collect(),
                )
            }
            ClientMessage::MediaLeave {} => Request::Leave,
            _ => return Ok(None),
        }))
    }
}

fn reason(r: LeaveReason) -> &'static str {
    match r {
        LeaveReason::Left => "left",
        LeaveReason::Disconnected => "disconnected",
        LeaveReason::ConnectTimeout => "connect_timeout",
        LeaveReason::ProtocolError => "protocol_error",
        LeaveReason::Shutdown => "shutdown",
    }
}

/// A track kind's name on the wire and in the admin API.
pub(crate) fn kind(k: TrackKind) -> &'static str {
    match k {
        TrackKind::Audio => "audio",
        TrackKind::Video => "video",
    }
}

/// The track kind named `name` (as [`kind`] writes it).
pub(crate) fn parse_kind(name: &str) -> Option<TrackKind> {
    TrackKind::ALL.into_iter().find(|&k| kind(k) == name)
}

/// Relays the SFU's events to sessions and rooms until the SFU stops.
pub(crate) async fn relay_events(st: Arc<AppState>, mut events: SfuEvents) {
    // The rooms each SFU shard reported last: its next snapshot replaces them.
    let mut shard_rooms: HashMap<usize, Vec<String>> = HashMap::new();
    while let Some(ev) = events.recv().await {
        let now = Instant::now();
        let mut hub = st.hub.lock();
        match ev {
            SfuEvent::NeedsAnswer {
                participant,
                offer_id,
                sdp,
            } => hub.push_to_sid(
                participant.as_str(),
                &ServerMessage::MediaOffer { offer_id, sdp },
                now,
            ),
            SfuEvent::TrackPaused {
                participant,
                track,
                paused,
                reason,
            } => hub.push_to_sid(
                participant.as_str(),
                &ServerMessage::MediaTrackPaused {
                    track: track.to_string(),
                    paused,
                    reason: reason.as_str(),
                },
                now,
            ),
            SfuEvent::TrackRefused {
                participant,
                mid,
                kind: k,
                reason,
            } => {
                let message = match reason {
                    TrackRefusal::TooManyTracks => {
                        "this session publishes as many tracks as it may"
                    }
                    TrackRefusal::TooManyPublishers => "the room has as many publishers as it may",
                };
                hub.push_to_sid(
                    participant.as_str(),
                    &ServerMessage::MediaTrackRefused {
                        mid,
                        kind: kind(k),
                        code: reason.as_str(),
                        message: message.to_owned(),
                    },
                    now,
                )
            }
            SfuEvent::Connected { participant } => {
                hub.push_to_sid(participant.as_str(), &ServerMessage::MediaConnected {}, now)
            }
            SfuEvent::ParticipantLeft {
                room,
                participant,
                reason: r,
            } => {
                hub.forget_quality(room.as_str(), participant.as_str());
                hub.push_to_sid(
                    participant.as_str(),
                    &ServerMessage::MediaLeft { reason: reason(r) },
                    now,
                )
            }
            SfuEvent::TrackPublished {
                room,
                participant,
                track,
                kind: k,
            } => {
                let identity = hub
                    .identity_of_sid(participant.as_str())
                    .map(|i| i.to_string())
                    .unwrap_or_default();
                hub.push_to_room(
                    room.as_str(),
                    &ServerMessage::TrackPublished {
                        room: room.to_string(),
                        sid: participant.to_string(),
                        identity,
                        track: track.to_string(),
                        kind: kind(k),
                    },
                    now,
                )
            }
            SfuEvent::TrackMuted {
                room,
                participant,
                track,
                kind: k,
                muted,
            } => hub.push_to_room(
                room.as_str(),
                &ServerMessage::TrackMuted {
                    room: room.to_string(),
                    sid: participant.to_string(),
                    track: track.to_string(),
                    kind: kind(k),
                    muted,
                },
                now,
            ),
            SfuEvent::TrackUnpublished {
                room,
                participant,
                track,
            } => hub.push_to_room(
                room.as_str(),
                &ServerMessage::TrackUnpublished {
                    room: room.to_string(),
                    sid: participant.to_string(),
                    track: track.to_string(),
                },
                now,
            ),
            SfuEvent::ActiveSpeaker { room, participant } => {
                let identity = participant
                    .as_ref()
                    .and_then(|p| hub.identity_of_sid(p.as_str()))
                    .map(|i| i.to_string());
                hub.push_to_room(
                    room.as_str(),
                    &ServerMessage::ActiveSpeaker {
                        room: room.to_string(),
                        sid: participant.map(|p| p.to_string()),
                        identity,
                    },
                    now,
                )
            }
            SfuEvent::Stats {
                shard,
                participants,
            } => {
                announce_qualities(&mut hub, &participants, now);
                let mut by_room: HashMap<String, Vec<ParticipantStats>> = HashMap::new();
                for s in participants {
                    by_room.entry(s.room.to_string()).or_default().push(s);
                }
                // The snapshot covers all of the shard's participants: its rooms absent
                // from it have none there (a room spread over shards keeps the others').
                let mut stats = st.media_stats.lock();
                for room in shard_rooms.remove(&shard).unwrap_or_default() {
                    if let Some(shards) = stats.get_mut(&room) {
                        shards.remove(&shard);
                        if shards.is_empty() {
                            stats.remove(&room);
                        }
                    }
                }
                shard_rooms.insert(shard, by_room.keys().cloned().collect());
                for (room, participants) in by_room {
                    stats.entry(room).or_default().insert(shard, participants);
                }
            }
        }
    }
}

/// Tells each room which of its members' connection-quality levels changed in `stats`
/// (the hub keeps every member's latest, which a member who joins is told).
fn announce_qualities(hub: &mut Hub, stats: &[ParticipantStats], now: Instant) {
    let mut changed: HashMap<&str, Vec<QualityUpdate>> = HashMap::new();
    for s in stats {
        let Some(q) = s.quality else { continue };
        let sid = s.participant.as_str();
        let update = QualityUpdate {
            sid: sid.to_owned(),
            identity: hub
                .identity_of_sid(sid)
                .map(|i| i.to_string())
                .unwrap_or_default(),
            quality: q.level.as_str(),
            score: (q.mos * 10.0).round() / 10.0,
        };
        let room = s.room.as_str();
        if hub.note_quality(room, &update) {
            changed.entry(room).or_default().push(update);
        }
    }
    for (room, participants) in changed {
        let msg = ServerMessage::ConnectionQuality {
            room: room.to_owned(),
            participants,
        };
        hub.push_to_room(room, &msg, now);
    }
}

/// Ends the SFU session of every session that leaves its room.
pub(crate) async fn follow_exits(sfu: SfuHandle, mut exits: mpsc::UnboundedReceiver<Arc<str>>) {
    while let Some(sid) = exits.recv().await {
        match sfu.leave(sid.as_ref()).await {
            Ok(()) | Err(SfuError::Router(huddle_sfu::RouterError::UnknownParticipant(_))) => {}
            Err(SfuError::Closed) => return,
            Err(e) => tracing::warn!(error = %e, %sid, "SFU leave failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picture_limits_parse_and_are_bounded() {
        assert_eq!(max_size(None, None).unwrap(), None, "no change");
        assert_eq!(
            max_size(Some(640), Some(360)).unwrap(),
            Some(Some((640, 360)))
        );
        assert_eq!(
            max_size(Some(640), None).unwrap(),
            Some(Some((640, u16::MAX))),
            "a missing side is unlimited"
        );
        assert_eq!(max_size(Some(0), None).unwrap(), Some(None), "0 lifts it");
        assert_eq!(max_size(Some(640), Some(0)).unwrap(), Some(None));
        assert!(max_size(Some(MAX_PICTURE_SIDE + 1), Some(360)).is_err());
        assert!(max_size(None, Some(u32::MAX)).is_err());
    }
}
