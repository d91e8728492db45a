//! Opus RTP payload format (RFC 7587): one Opus packet per RTP payload, timestamps in a
//! 48 kHz clock whatever the encoder's input rate, discontinuous transmission (DTX).

mod packet;

pub use packet::{
    Bandwidth, MAX_FRAME_BYTES, MAX_FRAMES, MAX_PACKET_SAMPLES, OpusMode, OpusPacketInfo, Toc,
    parse_packet,
};

use super::{PayloadPacket, SeqUnwrapper};
use bytes::Bytes;

/// RTP clock rate of Opus, whatever the encoder's sampling rate (RFC 7587 §4.1).
pub const CLOCK_RATE: u32 = 48_000;

/// A packet of at most this many bytes carries no audio: libopus returns such packets
/// while DTX is active and documents that they need not be transmitted.
pub const DTX_MAX_BYTES: usize = 2;

/// Why an Opus payload was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpusError {
    /// The payload is empty: not even a TOC byte (RFC 6716 §3.4, R1).
    #[error("empty Opus payload")]
    Empty,
    /// The packet ends inside a length or frame count field.
    #[error("Opus packet truncated")]
    Truncated,
    /// Frame lengths or padding exceed the packet (RFC 6716 §3.4, R4/R7).
    #[error("Opus frame lengths exceed the packet")]
    FrameOverrun,
    /// Equal-size frames do not divide the packet evenly (RFC 6716 §3.4, R3/R6).
    #[error("Opus CBR frames do not divide the packet evenly")]
    OddCbrLength,
    /// A frame is longer than 1275 bytes (RFC 6716 §3.4, R2).
    #[error("Opus frame of {0} bytes exceeds 1275")]
    FrameTooLarge(usize),
    /// A code 3 packet announces zero frames (RFC 6716 §3.4, R5).
    #[error("Opus code 3 packet with zero frames")]
    ZeroFrames,
    /// The packet lasts more than 120 ms (RFC 6716 §3.4, R5).
    #[error("Opus packet longer than 120 ms")]
    TooLong,
    /// A sample rate Opus does not encode at.
    #[error("unsupported Opus input rate {0} Hz")]
    UnsupportedRate(u32),
}

/// Turns encoder output into RTP payloads with 48 kHz timestamps (RFC 7587 §4.1–§4.2).
#[derive(Debug, Clone)]
pub struct OpusPacketizer {
    /// RTP timestamp of the next packet.
    next_timestamp: u32,
    /// Skip DTX packets (≤ 2 bytes) instead of sending them; their time still passes.
    suppress_dtx: bool,
    /// Packets were skipped since the last one sent: the next one starts a talkspurt.
    after_gap: bool,
}

impl OpusPacketizer {
    /// A packetizer whose first packet has RTP timestamp `initial_timestamp` (random per
    /// RFC 3550 §5.1). DTX packets are not sent, as libopus recommends.
    pub fn new(initial_timestamp: u32) -> Self {
        Self {
            next_timestamp: initial_timestamp,
            suppress_dtx: true,
            after_gap: false,
        }
    }

    /// Whether DTX packets (≤ 2 bytes) are skipped (default) or sent.
    pub fn with_dtx_suppression(mut self, suppress: bool) -> Self {
        self.suppress_dtx = suppress;
        self
    }

    /// RTP timestamp the next packet will get.
    pub fn next_timestamp(&self) -> u32 {
        self.next_timestamp
    }

    /// Wraps one encoded Opus packet. Returns `None` when the packet is a DTX packet that
    /// is not sent; its duration is still added to the timestamp (RFC 7587 §4.1), and
    /// the next packet sent carries the marker bit as the start of a talkspurt
    /// (RFC 3551 §4.1).
    pub fn packetize(&mut self, packet: Bytes) -> Result<Option<PayloadPacket>, OpusError> {
        let info = parse_packet(&packet)?;
        let timestamp = self.next_timestamp;
        self.next_timestamp = timestamp.wrapping_add(info.duration_samples());
        if self.suppress_dtx && packet.len() <= DTX_MAX_BYTES {
            self.after_gap = true;
            return Ok(None);
        }
        let marker = std::mem::take(&mut self.after_gap);
        Ok(Some(PayloadPacket {
            timestamp,
            marker,
            payload: packet,
        }))
    }

    /// Lets `samples` at `input_rate` pass without sending (muted or paused sender). The
    /// timestamp still advances in 48 kHz units, so the receiver sees the true gap.
    pub fn skip(&mut self, samples: u32, input_rate: u32) -> Result<(), OpusError> {
        let factor = match input_rate {
            8_000 | 12_000 | 16_000 | 24_000 | 48_000 => CLOCK_RATE / input_rate,
            other => return Err(OpusError::UnsupportedRate(other)),
        };
        if samples > 0 {
            self.next_timestamp = self
                .next_timestamp
                .wrapping_add(samples.wrapping_mul(factor));
            self.after_gap = true;
        }
        Ok(())
    }
}

/// What lies between the previous packet and this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// The packet directly follows the previous one.
    None,
    /// Sequence numbers are contiguous but the timestamp jumped: the sender stopped
    /// transmitting (DTX or mute, RFC 7587 §3.1.3); the receiver plays comfort noise.
    Silence {
        /// 48 kHz samples not covered by any packet.
        samples: u32,
    },
    /// Packets are missing.
    Lost {
        /// Number of missing sequence numbers.
        packets: u64,
        /// 48 kHz samples between the previous packet's end and this one, when the
        /// timestamps are plausible (`None` when the timestamp went backwards).
        samples: Option<u32>,
    },
    /// The packet is older than, or a duplicate of, one already seen.
    Late,
}

/// One received Opus payload, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusPayload {
    /// Unwrapped sequence number.
    pub seq: u64,
    /// RTP timestamp (48 kHz).
    pub timestamp: u32,
    /// Frames, duration and mode.
    pub info: OpusPacketInfo,
    /// The packet carries no audio (≤ 2 bytes): a DTX packet; decode it with PLC or
    /// comfort noise.
    pub dtx: bool,
    /// What lies between the previous packet and this one.
    pub gap: Gap,
}

impl OpusPayload {
    /// Duration in 48 kHz samples.
    pub fn duration_samples(&self) -> u32 {
        self.info.duration_samples()
    }
}

/// Validates received Opus payloads and classifies the space between them (loss,
/// silence, reordering) for the jitter buffer.
#[derive(Debug, Clone, Default)]
pub struct OpusDepacketizer {
    /// Sequence number unwrapping.
    seq: SeqUnwrapper,
    /// Newest packet so far: unwrapped sequence number, timestamp, duration.
    newest: Option<(u64, u32, u32)>,
}

impl OpusDepacketizer {
    /// A depacketizer that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates one RTP payload (RFC 7587 §4.2) with its header fields.
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<OpusPayload, OpusError> {
        let info = parse_packet(payload)?;
        let seq = self.seq.unwrap(seq);
        let duration = info.duration_samples();
        let gap = match self.newest {
            None => Gap::None,
            Some((last_seq, _, _)) if seq <= last_seq => Gap::Late,
            Some((last_seq, last_ts, last_duration)) => {
                // Signed distance handles timestamp wrap-around.
                let expected = last_ts.wrapping_add(last_duration);
                let jump = timestamp.wrapping_sub(expected) as i32;
                let missing = seq - last_seq - 1;
                if missing > 0 {
                    Gap::Lost {
                        packets: missing,
                        samples: u32::try_from(jump).ok(),
                    }
                } else if jump > 0 {
                    Gap::Silence {
                        samples: jump as u32,
                    }
                } else {
                    Gap::None
                }
            }
        };
        if gap != Gap::Late {
            self.newest = Some((seq, timestamp, duration));
        }
        Ok(OpusPayload {
            seq,
            timestamp,
            info,
            dtx: payload.len() <= DTX_MAX_BYTES,
            gap,
        })
    }
}

#[cfg(test)]
mod tests;
