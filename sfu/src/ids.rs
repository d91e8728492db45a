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
    /// Every kind, audio first.
    pub const ALL: [TrackKind; 2] = [TrackKind::Audio, TrackKind::Video];

    /// Whether keyframe requests make sense for this track.
    pub fn is_video(self) -> bool {
        self == TrackKind::Video
    }
}

/// A set of track kinds (those a moderator muted).
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct TrackKinds(u8);

impl TrackKinds {
    /// `kind`, or every kind when `None` (a request that names none).
    pub fn of(kind: Option<TrackKind>) -> Self {
        match kind {
            Some(k) => Self(1 << k as u8),
            None => Self(0b11),
        }
    }

    pub fn contains(self, kind: TrackKind) -> bool {
        self.0 & (1 << kind as u8) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Adds the kinds of `other` (`on`) or removes them.
    pub fn set(&mut self, other: TrackKinds, on: bool) {
        if on {
            self.0 |= other.0;
        } else {
            self.0 &= !other.0;
        }
    }

    /// Its kinds, audio first.
    pub fn iter(self) -> impl Iterator<Item = TrackKind> {
        TrackKind::ALL
            .into_iter()
            .filter(move |&k| self.contains(k))
    }
}

#[cfg(test)]
mod tests {
    use super::{TrackKind, TrackKinds};

    #[test]
    fn track_kinds_add_and_remove_one_kind_or_all() {
        let mut k = TrackKinds::default();
        assert!(k.is_empty());
        k.set(TrackKinds::of(Some(TrackKind::Video)), true);
        assert_eq!(k.iter().collect::<Vec<_>>(), [TrackKind::Video]);
        k.set(TrackKinds::of(None), true);
        assert_eq!(k.iter().collect::<Vec<_>>(), TrackKind::ALL);
        k.set(TrackKinds::of(Some(TrackKind::Audio)), false);
        assert!(k.contains(TrackKind::Video) && !k.contains(TrackKind::Audio));
        k.set(TrackKinds::of(None), false);
        assert!(k.is_empty());
    }
}
