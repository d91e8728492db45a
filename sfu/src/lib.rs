//! # huddle-sfu
//!
//! The selective forwarding unit: one WebRTC endpoint on one UDP port (ICE, DTLS-SRTP,
//! RTP/RTCP routing, NACK/RTX, keyframe requests, bandwidth estimation, simulcast layer
//! choice, active speaker). Not built yet: this crate is empty until the SFU work lands.
//! It will not do signalling (`huddle-signal`) nor codec work (`huddle-media`).
#![forbid(unsafe_code)]
