//! # huddle-media
//!
//! RTP payload formats (Opus RFC 7587, H.264 RFC 6184), the adaptive audio jitter buffer,
//! the video frame buffer, loss concealment and FEC, codec wrappers (libopus, openh264) and
//! call-quality metrics. Pure code with time injected; no sockets, no clocks inside.
//! It does not parse RTP headers (the `rtp` crate does) and does no networking.
//! One `unsafe` call, OpenH264's option to change a running encoder's bitrate (which
//! the `openh264` crate does not wrap), is allowed where it is made.
#![deny(unsafe_code)]

pub mod audio;
pub mod codec;
pub mod quality;
pub mod rtp;
pub mod video;
