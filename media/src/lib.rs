//! # huddle-media
//!
//! RTP payload formats (Opus RFC 7587, H.264 RFC 6184), the adaptive audio jitter buffer,
//! the video frame buffer, loss concealment and FEC, and codec wrappers (libopus,
//! openh264). Pure code with time injected; no sockets. Not built yet: this crate is empty
//! until the media work lands.
#![forbid(unsafe_code)]
