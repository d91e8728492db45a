//! # huddle-sfu
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod ids;
pub mod keyframe;
pub mod router;
pub mod speaker;
