//! # huddle-signal
//!
//! The signalling service of huddle: an axum HTTP + WebSocket API (`/v1/ws`) that
//! authenticates users with access tokens (HS256 JWTs), keeps rooms and presence, negotiates
//! one-to-one peer-to-peer calls (invite, ring, accept, reject, cancel, hang up, busy, SDP
//! and trickle ICE relay) and hands clients their ICE servers with short-lived TURN
//! credentials. The wire protocol is documented in `docs/protocol.md`.
//!
//! It does **not** move media (that is the SFU's job) nor run STUN/TURN (the `huddle-turn`
//! crate); it only tells clients where those are.
//!
//! ## Shape
//! - [`hub::Hub`] is the sans-IO core: sessions, rooms, calls and timers, driven by method
//!   calls that take `now`. It is unit-tested with simulated time.
//! - [`connection`] runs one task per WebSocket that feeds the hub and writes its
//!   per-session outbound queue; the queue is bounded, and a client that does not read
//!   its messages is disconnected rather than allowed to grow memory.
//! - [`service::SignalService`] wires it together: HTTP routes, the hub's timer task,
//!   metrics, and graceful shutdown.
//!
//! ```no_run
//! # async fn run(store: huddle_signal::store::Store) {
//! use huddle_signal::service::{ServiceOptions, SignalService};
//! let opts = ServiceOptions {
//!     http: Default::default(),
//!     auth: Default::default(),
//!     hub: Default::default(),
//!     chat: Default::default(),
//!     data_dir: "./data".into(),
//!     sfu: None,
//!     dev: true,
//! };
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let service = SignalService::new(opts, store, Default::default(), shutdown);
//! let app = service.router();
//! service.spawn_timers();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
//! service.set_ready();
//! axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
//!     .await
//!     .unwrap();
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod auth;
pub mod call;
pub mod chat;
pub mod config;
pub mod connection;
pub mod http;
pub mod hub;
#[cfg(test)]
mod hub_tests;
pub mod ice;
pub mod limits;
pub mod media;
pub mod metrics;
pub mod protocol;
pub mod service;
pub mod store;
