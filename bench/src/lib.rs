//! # huddle-bench
//!
//! `huddle bench`: measurements of a running huddle, printed as a table and written as JSON.
//! It has the chat throughput and latency scenario ([`chat_load`]), the signalling load
//! scenario ([`signal_load`]): many authenticated
//! WebSocket clients join rooms, and the server's memory per idle connection and the join
//! latency are reported. The SFU load scenario ([`sfu_load`]) ramps rooms of synthetic
//! WebRTC peers through the server's SFU until loss or latency degrade. The call-quality
//! scenarios ([`call`]: one call, and a sweep over impairments) place real calls with
//! the client SDK behind the impairment [`shim`] and measure them as a listener would;
//! [`compare`] puts two reports side by side.
//!
//! The benchmark talks to the server only over its public interfaces (REST token minting,
//! WebSocket protocol v1), so it measures exactly what a deployment would see.
#![forbid(unsafe_code)]

pub mod call;
pub mod chat_load;
pub mod compare;
pub mod report;
pub mod server;
pub mod sfu_load;
pub mod shim;
pub mod signal_load;
pub mod turn_load;

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("server: {0}")]
    Server(String),
}

pub type Result<T> = std::result::Result<T, BenchError>;
