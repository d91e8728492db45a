//! Identifiers of rooms, participants and tracks, and the kinds of media a track carries.

use std::fmt;
use std::sync::Arc;

/// A room's name as signalling knows it. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(Arc<str>);

/// A participant's identity as signalling knows it; unique across the whole SFU.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(Arc<str>);

macro_rules! string_id {
    ($name:ident) => {
        impl $name {
            /// The identifier's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(Arc::from(s))
            }
        }
        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(Arc::from(s))
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }
    };
}
string_id!(RoomId);
string_id!(ParticipantId);

/// A published track, numbered by the SFU; never reused while the SFU runs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct TrackId(pub u64);

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T{}", self.0)
    }
}

/// What a track carries.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TrackKind {
    /// Opus audio.
    Audio,
    /// H.264 or VP8 video.
    Video,
}

impl TrackKind {
    /// Whether keyframe requests make sense for this track.
    pub fn is_video(self) -> bool {
        self == TrackKind::Video
    }
}
