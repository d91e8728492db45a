//! # huddle-turn
//!
//! The STUN (RFC 8489) and TURN (RFC 8656) server, built on stun-rs with a sans-IO
//! allocation core. Not built yet: this crate is empty until the TURN work lands. It
//! depends on nothing else in huddle; the signalling service only hands out credentials
//! for it (TURN REST scheme, see `huddle_signal::ice`).
#![forbid(unsafe_code)]
