//! # huddle-turn
//!
//! A STUN (RFC 8489) and TURN (RFC 8656) server. The protocol logic is a sans-IO core,
//! [`server::TurnServer`]: feed it datagrams with the current time and it returns at most
//! one datagram to send and where; it asks a [`server::RelayPorts`] implementation for
//! relay sockets. Messages are encoded and decoded with stun-rs, except on the hot path
//! (ChannelData, Send and Data indications), which [`wire`] parses without allocating.
//!
//! Authentication is by long-term credentials: static users and the TURN REST
//! shared-secret scheme that coturn calls `use-auth-secret`, with stateless nonces.
//! By default peers on loopback, private, link-local and other special-purpose
//! networks are refused ([`policy::PeerPolicy`]).
//!
//! The crate depends on nothing else in huddle.
#![forbid(unsafe_code)]

pub mod allocation;
pub mod auth;
#[cfg(test)]
mod auth_tests;
mod dont_fragment;
#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod dont_fragment_tests;
pub mod driver;
pub mod fuzz;
pub mod message;
pub mod metrics;
pub mod policy;
mod relay_sockets;
mod requests;
pub mod server;
#[cfg(test)]
mod server_tests;
mod shard_io;
mod stream;
pub mod tls;
mod udp_io;
pub mod wire;
