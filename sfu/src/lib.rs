//! # huddle-sfu
#![forbid(unsafe_code)]

pub mod config;
mod driver;
pub mod error;
pub mod event;
mod handle;
pub mod ids;
pub mod keyframe;
pub mod metrics;
mod peer;
pub mod router;
pub mod speaker;

pub use config::{RouterConfig, SfuConfig, SpeakerConfig};
pub use error::{RouterError, SfuError};
pub use event::{LeaveReason, ParticipantStats, SfuEvent, SfuEvents};
pub use handle::{Sfu, SfuHandle};
pub use ids::{ParticipantId, RoomId, TrackId, TrackKind};
pub use metrics::SfuMetrics;
