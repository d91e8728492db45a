//! # huddle-client
//!
//! The native Rust client SDK: signalling, WebRTC and media for in-app calls, tests and the
//! benchmark. Not built yet: this crate is empty until the client work lands.
#![forbid(unsafe_code)]
