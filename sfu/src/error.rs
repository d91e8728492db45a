//! Errors the SFU reports to its caller (signalling) and errors of the routing core.

use crate::ids::{ParticipantId, RoomId, TrackId};

/// Why a routing operation was refused. The router's state is unchanged when one is
/// returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    /// The participant identity is already in a room on this SFU.
    #[error("participant {0} has already joined")]
    AlreadyJoined(ParticipantId),
    /// No participant with this identity.
    #[error("unknown participant {0}")]
    UnknownParticipant(ParticipantId),
    /// No track with this id (never published, or already gone).
    #[error("unknown track {0}")]
    UnknownTrack(TrackId),
    /// The room holds `max_participants_per_room` already.
    #[error("room {0} is full")]
    RoomFull(RoomId),
    /// The SFU holds `max_rooms` already.
    #[error("too many rooms")]
    TooManyRooms,
    /// The participant publishes `max_tracks_per_participant` already.
    #[error("participant {0} publishes too many tracks")]
    TooManyTracks(ParticipantId),
    /// `max_publishers_per_room` other members of the room publish already.
    #[error("room {0} has as many publishers as it may")]
    TooManyPublishers(RoomId),
    /// Pinning someone who is not a member of the participant's room.
    #[error("{0} is not in the room")]
    NotInRoom(ParticipantId),
    /// More than `MAX_PINNED` members pinned.
    #[error("participant {0} pins too many members")]
    TooManyPinned(ParticipantId),
    /// Subscribing to one's own track, or to a track of another room.
    #[error("track {track} cannot be subscribed by {participant}")]
    NotSubscribable {
        /// Who asked.
        participant: ParticipantId,
        /// What was asked for.
        track: TrackId,
    },
}

/// Why a request to the SFU failed.
#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    /// The routing core refused (limits, unknown ids).
    #[error(transparent)]
    Router(#[from] RouterError),
    /// The SDP could not be parsed.
    #[error("malformed SDP: {0}")]
    BadSdp(String),
    /// str0m refused the offer or answer (e.g. missing fingerprint, m-line mismatch).
    #[error("negotiation failed: {0}")]
    Negotiation(String),
    /// An answer to an offer the SFU no longer waits for (answered already, or rolled back
    /// by a client offer in glare, or withdrawn after the answer timeout).
    #[error("answer to stale offer {0}")]
    StaleAnswer(u64),
    /// The configuration cannot work (e.g. no address to advertise as an ICE candidate).
    #[error("bad configuration: {0}")]
    Config(String),
    /// Binding or reading the UDP socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The SFU task has stopped.
    #[error("the SFU has shut down")]
    Closed,
}
