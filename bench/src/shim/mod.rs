//! The impairment shim: a UDP relay that drops, delays, reorders and rate-limits datagrams
//! like a bad network, deterministically from a seed, in each direction separately.
//! [`model::Impairment`] decides (sans-IO, time injected); [`relay::Relay`] moves the bytes.
//! Call benchmarks put one in front of each participant; tests use it to check that loss
//! repair (NACK, FEC) and jitter buffers do what they claim.

pub mod model;
pub mod relay;

pub use model::{Impairment, ImpairmentConfig, Loss};
pub use relay::Relay;
