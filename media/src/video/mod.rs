//! The video frame buffer: reorders RTP packets, assembles frames, decides which are
//! decodable, asks for retransmissions (NACK) and keyframes (PLI), and measures frame
//! rate and freezes.
//!
//! It is sans-IO: packets go in with their arrival time, and the caller polls for
//! decodable frames, NACK lists, keyframe requests and the next deadline:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::Bytes;
//! use huddle_media::video::{FrameBuffer, FrameBufferConfig, VideoPacket};
//!
//! let mut buffer = FrameBuffer::new(FrameBufferConfig::default());
//! let now = Instant::now();
//! // A keyframe in one packet: STAP-A with SPS, PPS and an IDR slice.
//! let payload = Bytes::from_static(&[0x78, 0, 2, 0x67, 1, 0, 2, 0x68, 2, 0, 2, 0x65, 3]);
//! buffer.insert(VideoPacket::h264(100, 9000, true, payload).unwrap(), now);
//! let frame = buffer.poll_frame().unwrap();
//! assert!(frame.keyframe);
//!
//! let mut nacks = Vec::new();
//! buffer.poll_nack(now + Duration::from_millis(10), &mut nacks);
//! assert!(nacks.is_empty());
//! assert!(!buffer.poll_keyframe_request(now));
//! ```
//!
//! Decodability without codec-level reference information (H.264 as WebRTC sends it):
//! a keyframe starts a chain; a delta frame is decodable only when it directly follows
//! (by sequence number) the last decodable frame. Any gap breaks the chain until NACK
//! fills it or the next keyframe arrives.

mod frame_buffer;
#[doc(hidden)]
pub mod fuzz;
mod nack;
mod stats;

pub use frame_buffer::{FrameBuffer, FrameBufferConfig, InsertOutcome};
pub use nack::NackConfig;
pub use stats::FrameBufferStats;

use crate::rtp::h264::{H264Error, inspect_payload};
use bytes::Bytes;
use std::time::Instant;

/// One received video RTP packet: the header fields the buffer needs, what the codec
/// says about it, and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoPacket {
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp: all packets of a frame share it.
    pub timestamp: u32,
    /// RTP marker bit: last packet of a frame.
    pub marker: bool,
    /// The packet carries keyframe data (H.264: an IDR slice).
    pub keyframe: bool,
    /// The codec says this packet opens a frame (H.264: its first NAL unit is an SPS or
    /// access unit delimiter); lets a frame be assembled without its predecessor.
    pub starts_frame: bool,
    /// The RTP payload.
    pub payload: Bytes,
}

impl VideoPacket {
    /// A packet of an H.264 stream, with keyframe and frame-start flags read from its
    /// payload (RFC 6184).
    pub fn h264(seq: u16, timestamp: u32, marker: bool, payload: Bytes) -> Result<Self, H264Error> {
        let info = inspect_payload(&payload)?;
        Ok(Self {
            seq,
            timestamp,
            marker,
            keyframe: info.idr,
            starts_frame: info.starts_access_unit,
            payload,
        })
    }
}

/// A complete, decodable frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// RTP timestamp.
    pub timestamp: u32,
    /// Unwrapped sequence numbers of its first and last packets.
    pub first_seq: u64,
    pub last_seq: u64,
    /// A keyframe: starts a new decodable chain.
    pub keyframe: bool,
    /// Payloads in sequence order, ready for the depacketizer.
    pub payloads: Vec<Bytes>,
    /// Arrival of its first and last packets (for jitter and delay estimates).
    pub first_arrival: Instant,
    pub last_arrival: Instant,
    /// When it became decodable.
    pub decodable_at: Instant,
}

#[cfg(test)]
mod pipeline_tests;
#[cfg(test)]
mod tests;
