//! Opus packet layout without decoding (RFC 6716 §3): the TOC byte, frame count, the
//! duration a packet decodes to, and whether it carries in-band FEC (LBRR) data.
//!
//! Pure safe code over untrusted bytes: every read is bounds-checked and a malformed packet
//! is an error, so the jitter buffer can ask about a packet before handing it to libopus.

use std::ops::Range;

/// Samples per channel in 120 ms at 48 kHz: the most one packet may hold (RFC 6716 §3.2.5).
pub const MAX_PACKET_SAMPLES: usize = 5760;

/// Largest frame, in bytes (RFC 6716 §3.4 [R2]).
pub const MAX_FRAME_BYTES: usize = 1275;

/// Why a packet's layout could not be read.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum TocError {
    /// An empty payload is not an Opus packet (RFC 6716 §3.4 [R1]).
    #[error("empty Opus packet")]
    Empty,
    /// The packet ends before the framing it announces.
    #[error("Opus packet truncated")]
    Truncated,
    /// The framing breaks one of the RFC 6716 §3.4 requirements.
    #[error("invalid Opus framing: {0}")]
    Invalid(&'static str),
}

/// Which coding layer a packet uses (RFC 6716 §3.1, Table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpusMode {
    /// Linear prediction only (speech, up to wideband).
    Silk,
    /// SILK below 8 kHz plus CELT above it.
    Hybrid,
    /// MDCT only (music, low delay); carries no LBRR data.
    Celt,
}

/// What the TOC byte and framing of one packet say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusPacketLayout {
    /// Coding layer of every frame in the packet.
    pub mode: OpusMode,
    /// Whether the frames are coded as stereo.
    pub stereo: bool,
    /// Samples per channel in one frame, at 48 kHz.
    pub frame_samples: usize,
    /// Frames in the packet (1..=48).
    pub frame_count: usize,
    /// Byte range of the first frame inside the packet.
    pub first_frame: Range<usize>,
}

impl OpusPacketLayout {
    /// Samples per channel the whole packet decodes to, at 48 kHz.
    pub fn samples(&self) -> usize {
        self.frame_samples * self.frame_count
    }

    /// Samples per channel the packet decodes to at `sample_rate` (an Opus rate).
    pub fn samples_at(&self, sample_rate: u32) -> usize {
        self.samples() * sample_rate as usize / 48_000
    }

    /// Whether the first frame carries LBRR data, i.e. a low-bitrate copy of the frame
    /// before this packet that the decoder can use in place of a lost packet.
    pub fn has_lbrr(&self, packet: &[u8]) -> bool {
        if self.mode == OpusMode::Celt {
            return false;
        }
        let Some(&first) = packet.get(self.first_frame.clone()).and_then(|f| f.first()) else {
            // An empty first frame is a DTX/PLC frame: nothing to recover from (§3.2.1).
            return false;
        };
        // RFC 6716 §4.2.3: the SILK header starts with one VAD flag per 20 ms SILK frame and
        // then the LBRR flag, for the mid channel and then the side channel; they are coded
        // with probability 1/2, so they are the leading bits of the first byte.
        let silk_frames = (self.frame_samples / 960).max(1);
        let mid = (first >> (7 - silk_frames)) & 1 == 1;
        let side = self.stereo && (first >> (6 - 2 * silk_frames)) & 1 == 1;
        mid || side
    }
}

/// Reads the TOC byte and framing of `packet` (RFC 6716 §3.1–§3.2).
pub fn parse_layout(packet: &[u8]) -> Result<OpusPacketLayout, TocError> {
    let (&toc, rest) = packet.split_first().ok_or(TocError::Empty)?;
    let config = toc >> 3;
    let stereo = toc & 0x04 != 0;
    let (mode, frame_samples) = match config {
        0..=11 => (
            OpusMode::Silk,
            [480, 960, 1920, 2880][usize::from(config % 4)],
        ),
        12..=15 => (OpusMode::Hybrid, [480, 960][usize::from(config % 2)]),
        _ => (
            OpusMode::Celt,
            [120, 240, 480, 960][usize::from(config % 4)],
        ),
    };
    let (frame_count, first_frame) = match toc & 0x03 {
        // Code 0: one frame fills the rest of the packet (§3.2.2).
        0 => (1, 1..implicit_length(rest.len())? + 1),
        // Code 1: two frames of equal size (§3.2.3, [R3]).
        1 => {
            if !rest.len().is_multiple_of(2) {
                return Err(TocError::Invalid("code 1 packet with odd payload length"));
            }
            (2, 1..1 + implicit_length(rest.len() / 2)?)
        }
        // Code 2: two frames, the first one's length coded up front (§3.2.4, [R4]).
        2 => {
            let (len, used) = frame_length(rest)?;
            if len > rest.len() - used {
                return Err(TocError::Truncated);
            }
            implicit_length(rest.len() - used - len)?;
            let start = 1 + used;
            (2, start..start + len)
        }
        _ => code3_layout(packet, frame_samples)?,
    };
    if frame_samples * frame_count > MAX_PACKET_SAMPLES {
        return Err(TocError::Invalid("more than 120 ms of audio in one packet"));
    }
    Ok(OpusPacketLayout {
        mode,
        stereo,
        frame_samples,
        frame_count,
        first_frame,
    })
}

/// Code 3: an arbitrary number of CBR or VBR frames with optional padding (§3.2.5).
fn code3_layout(packet: &[u8], frame_samples: usize) -> Result<(usize, Range<usize>), TocError> {
    let &header = packet.get(1).ok_or(TocError::Truncated)?;
    let vbr = header & 0x80 != 0;
    let padded = header & 0x40 != 0;
    let count = usize::from(header & 0x3f);
    if count == 0 {
        return Err(TocError::Invalid("code 3 packet with zero frames"));
    }
    if count * frame_samples > MAX_PACKET_SAMPLES {
        return Err(TocError::Invalid("more than 120 ms of audio in one packet"));
    }
    let mut pos = 2;
    let mut padding = 0usize;
    if padded {
        // Each 255 byte adds 254 bytes of padding and continues (§3.2.5).
        loop {
            let &b = packet.get(pos).ok_or(TocError::Truncated)?;
            pos += 1;
            if b == 255 {
                padding += 254;
            } else {
                padding += usize::from(b);
                break;
            }
        }
    }
    let available = packet
        .len()
        .checked_sub(pos + padding)
        .ok_or(TocError::Truncated)?;
    if vbr {
        // Lengths of all frames but the last follow the header.
        let mut lengths_end = pos;
        let mut first_len = 0;
        let mut total = 0usize;
        for i in 0..count - 1 {
            let (len, used) = frame_length(packet.get(lengths_end..).unwrap_or(&[]))?;
            if i == 0 {
                first_len = len;
            }
            lengths_end += used;
            total += len;
        }
        let header_bytes = lengths_end - pos;
        if header_bytes + total > available {
            return Err(TocError::Truncated);
        }
        let last_len = implicit_length(available - header_bytes - total)?;
        if count == 1 {
            first_len = last_len;
        }
        Ok((count, lengths_end..lengths_end + first_len))
    } else {
        if !available.is_multiple_of(count) {
            return Err(TocError::Invalid(
                "CBR code 3 payload not a multiple of the frame count",
            ));
        }
        let len = implicit_length(available / count)?;
        Ok((count, pos..pos + len))
    }
}

/// Checks a frame length implied by the packet size against [R2].
fn implicit_length(len: usize) -> Result<usize, TocError> {
    if len > MAX_FRAME_BYTES {
        return Err(TocError::Invalid("frame longer than 1275 bytes"));
    }
    Ok(len)
}

/// A frame length coded in one or two bytes (§3.2.1); returns (length, bytes used).
fn frame_length(bytes: &[u8]) -> Result<(usize, usize), TocError> {
    match bytes {
        [] => Err(TocError::Truncated),
        [b0, ..] if *b0 < 252 => Ok((usize::from(*b0), 1)),
        [_] => Err(TocError::Truncated),
        [b0, b1, ..] => Ok((usize::from(*b1) * 4 + usize::from(*b0), 2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn code0_durations_follow_the_config_table() {
        // config 1: SILK NB 20 ms; config 13: hybrid SWB 20 ms; config 16: CELT NB 2.5 ms.
        assert_eq!(parse_layout(&[1 << 3, 0]).unwrap().samples(), 960);
        assert_eq!(parse_layout(&[3 << 3, 0]).unwrap().samples(), 2880);
        assert_eq!(parse_layout(&[13 << 3, 0]).unwrap().mode, OpusMode::Hybrid);
        let celt = parse_layout(&[16 << 3, 0]).unwrap();
        assert_eq!((celt.mode, celt.samples()), (OpusMode::Celt, 120));
        assert_eq!(parse_layout(&[16 << 3, 0]).unwrap().samples_at(16_000), 40);
    }

    #[test]
    fn code1_needs_an_even_payload() {
        let l = parse_layout(&[(1 << 3) | 1, 7, 8, 9, 10]).unwrap();
        assert_eq!((l.frame_count, l.first_frame), (2, 1..3));
        assert!(parse_layout(&[(1 << 3) | 1, 7, 8, 9]).is_err());
    }

    #[test]
    fn code2_reads_the_first_length() {
        let l = parse_layout(&[(1 << 3) | 2, 2, 0xaa, 0xbb, 0xcc]).unwrap();
        assert_eq!(l.first_frame, 2..4);
        assert_eq!(
            parse_layout(&[(1 << 3) | 2, 9, 1]),
            Err(TocError::Truncated)
        );
        // Two-byte length: 252 + 4 * 1 = 256 bytes, longer than the packet.
        assert_eq!(
            parse_layout(&[(1 << 3) | 2, 252, 1, 0]),
            Err(TocError::Truncated)
        );
    }

    #[test]
    fn code3_cbr_vbr_and_padding() {
        // CBR, 3 frames of 2 bytes.
        let l = parse_layout(&[(1 << 3) | 3, 3, 1, 1, 2, 2, 3, 3]).unwrap();
        assert_eq!((l.frame_count, l.first_frame), (3, 2..4));
        // VBR, 2 frames, first of 1 byte, padding of 2 bytes.
        let l = parse_layout(&[(1 << 3) | 3, 0xc2, 2, 1, 0xee, 0xff, 0xff, 0, 0]).unwrap();
        assert_eq!((l.frame_count, l.first_frame), (2, 4..5));
        // 7 x 20 ms is more than 120 ms.
        assert!(parse_layout(&[(1 << 3) | 3, 7, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(parse_layout(&[(1 << 3) | 3, 0]).is_err());
        assert_eq!(parse_layout(&[]), Err(TocError::Empty));
    }

    #[test]
    fn implicit_frames_are_at_most_1275_bytes() {
        let mut pkt = vec![1 << 3];
        pkt.resize(1 + MAX_FRAME_BYTES, 0);
        assert!(parse_layout(&pkt).is_ok());
        pkt.push(0);
        assert!(parse_layout(&pkt).is_err());
        // Code 1: two frames of 1276 bytes.
        let mut pkt = vec![(1 << 3) | 1];
        pkt.resize(1 + 2 * 1276, 0);
        assert!(parse_layout(&pkt).is_err());
        // Code 2: a 1-byte first frame and a 1276-byte second one.
        let mut pkt = vec![(1 << 3) | 2, 1, 0];
        pkt.resize(3 + 1276, 0);
        assert!(parse_layout(&pkt).is_err());
    }

    #[test]
    fn lbrr_flag_position_depends_on_silk_frames() {
        // 20 ms mono SILK: VAD bit then LBRR bit (bit 6).
        let pkt = [1 << 3, 0b0100_0000];
        assert!(parse_layout(&pkt).unwrap().has_lbrr(&pkt));
        let pkt = [1 << 3, 0b1000_0000];
        assert!(!parse_layout(&pkt).unwrap().has_lbrr(&pkt));
        // 60 ms mono SILK: three VAD bits, LBRR is bit 4.
        let pkt = [3 << 3, 0b0001_0000];
        assert!(parse_layout(&pkt).unwrap().has_lbrr(&pkt));
        let pkt = [3 << 3, 0b0010_0000];
        assert!(!parse_layout(&pkt).unwrap().has_lbrr(&pkt));
        // 20 ms stereo SILK: the side channel's LBRR flag is bit 4.
        let pkt = [(1 << 3) | 0x04, 0b0001_0000];
        assert!(parse_layout(&pkt).unwrap().has_lbrr(&pkt));
        // CELT never carries LBRR.
        let pkt = [31 << 3, 0xff];
        assert!(!parse_layout(&pkt).unwrap().has_lbrr(&pkt));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(layout) = parse_layout(&bytes) {
                prop_assert!(layout.samples() <= MAX_PACKET_SAMPLES);
                prop_assert!(layout.first_frame.end <= bytes.len());
                let _ = layout.has_lbrr(&bytes);
            }
        }
    }
}
