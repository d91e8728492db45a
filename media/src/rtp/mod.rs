//! RTP payload formats: Opus (RFC 7587), H.264 packetization-mode 1 (RFC 6184),
//! redundant audio (RED, RFC 2198) and the audio level header extension (RFC 6464).
//!
//! RTP headers themselves are parsed and written by the `rtp` crate (or the SFU's WebRTC
//! stack); this module starts where they stop: it turns codec output into RTP payloads
//! and RTP payloads back into codec input, validating everything a peer sends.
//!
//! Packetizers return [`PayloadPacket`]s (payload, RTP timestamp, marker bit); the RTP
//! sender adds sequence numbers and SSRC. Depacketizers take the header fields they need
//! (sequence number, timestamp, marker) next to the payload.
//!
//! ```
//! use huddle_media::rtp::h264::{H264Depacketizer, H264Packetizer, Output};
//!
//! let access_unit = [0, 0, 0, 1, 0x67, 0x42, 0, 0x1f, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80,
//!                    0, 0, 0, 1, 0x65, 0x88, 0x84, 0x21];
//! let mut packetizer = H264Packetizer::new(1200).unwrap();
//! let mut packets = Vec::new();
//! packetizer.packetize(&access_unit, 90_000, &mut packets).unwrap();
//!
//! let mut depacketizer = H264Depacketizer::default();
//! for (seq, p) in packets.iter().enumerate() {
//!     depacketizer.push(seq as u16, p.timestamp, p.marker, &p.payload).unwrap();
//! }
//! let Some(Output::AccessUnit(au)) = depacketizer.poll_output() else { panic!() };
//! assert!(au.keyframe);
//! assert_eq!(&au.data[..], &access_unit[..]);
//! ```

pub mod audio_level;
#[doc(hidden)]
pub mod fuzz;
pub mod h264;
pub mod opus;
pub mod red;
mod seq;

pub use seq::SeqUnwrapper;

use bytes::Bytes;

/// One RTP payload produced by a packetizer, with the header fields that depend on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadPacket {
    /// RTP timestamp in the payload format's clock (48 kHz for Opus, 90 kHz for video).
    pub timestamp: u32,
    /// RTP marker bit: last packet of a video access unit, first packet of an audio
    /// talkspurt.
    pub marker: bool,
    /// The RTP payload.
    pub payload: Bytes,
}
