//! Opus packet structure (RFC 6716 §3.1–§3.2): the TOC byte, frame count codes 0–3, frame
//! lengths and padding, validated against the rules R1–R7 of RFC 6716 §3.4, and the LBRR
//! (in-band FEC) flags at the start of the first frame (RFC 6716 §4.2.3).
//!
//! The one Opus packet parser of the crate: the RTP depacketizer validates payloads with
//! it, and the libopus decoder wrapper asks it for durations and FEC before decoding.
//! Pure safe code over untrusted bytes, without decoding and without allocating.

use super::OpusError;

/// Largest frame an Opus packet may carry (RFC 6716 §3.2.1, R2).
pub const MAX_FRAME_BYTES: usize = 1275;
/// Most frames one packet may carry: 120 ms of 2.5 ms frames (RFC 6716 §3.2.5).
pub const MAX_FRAMES: usize = 48;
/// Longest packet duration in 48 kHz samples: 120 ms (RFC 6716 §3.2.5, R5).
pub const MAX_PACKET_SAMPLES: u32 = 5_760;

/// Coding mode selected by the TOC configuration number (RFC 6716 §3.1, Table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpusMode {
    /// Linear-prediction layer only (configurations 0–11).
    Silk,
    /// SILK below 8 kHz plus CELT above (configurations 12–15).
    Hybrid,
    /// MDCT layer only (configurations 16–31).
    Celt,
}

/// Audio bandwidth selected by the TOC configuration number (RFC 6716 §3.1, Table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bandwidth {
    /// 4 kHz.
    Narrowband,
    /// 6 kHz.
    Mediumband,
    /// 8 kHz.
    Wideband,
    /// 12 kHz.
    SuperWideband,
    /// 20 kHz.
    Fullband,
}

/// The TOC byte decoded (RFC 6716 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Toc {
    /// Configuration number 0–31.
    pub config: u8,
    /// `s` bit: stereo.
    pub stereo: bool,
    /// Frame count code 0–3.
    pub code: u8,
}

impl Toc {
    /// Splits a TOC byte into its fields.
    pub fn from_byte(byte: u8) -> Self {
        Self {
            config: byte >> 3,
            stereo: byte & 0x04 != 0,
            code: byte & 0x03,
        }
    }

    /// Coding mode of this configuration.
    pub fn mode(self) -> OpusMode {
        match self.config {
            0..=11 => OpusMode::Silk,
            12..=15 => OpusMode::Hybrid,
            _ => OpusMode::Celt,
        }
    }

    /// Audio bandwidth of this configuration.
    pub fn bandwidth(self) -> Bandwidth {
        match self.config {
            0..=3 | 16..=19 => Bandwidth::Narrowband,
            4..=7 => Bandwidth::Mediumband,
            8..=11 | 20..=23 => Bandwidth::Wideband,
            12 | 13 | 24..=27 => Bandwidth::SuperWideband,
            _ => Bandwidth::Fullband,
        }
    }

    /// Samples per frame at 48 kHz: the RTP clock of Opus whatever the encoder's input
    /// rate (RFC 7587 §4.1).
    pub fn samples_per_frame(self) -> u32 {
        match self.mode() {
            // 10, 20, 40, 60 ms.
            OpusMode::Silk => [480, 960, 1920, 2880][usize::from(self.config & 3)],
            // 10, 20 ms.
            OpusMode::Hybrid => [480, 960][usize::from(self.config & 1)],
            // 2.5, 5, 10, 20 ms.
            OpusMode::Celt => [120, 240, 480, 960][usize::from(self.config & 3)],
        }
    }
}

/// A validated Opus packet: its TOC and the size of each frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusPacketInfo {
    /// The TOC byte decoded.
    pub toc: Toc,
    /// Number of frames, 1–48.
    pub frame_count: usize,
    /// Length in bytes of each frame; only the first `frame_count` entries are used.
    /// A zero-length frame is valid and asks the decoder to conceal (RFC 6716 §3.2.1).
    frame_lengths: [u16; MAX_FRAMES],
    /// Bytes of code 3 padding after the frames (the padding length bytes not counted).
    pub padding: usize,
    /// Offset of the first frame's data: after the TOC, count, padding and length bytes.
    frames_start: usize,
}

impl OpusPacketInfo {
    /// Packet duration in 48 kHz samples.
    pub fn duration_samples(&self) -> u32 {
        self.toc.samples_per_frame() * self.frame_count as u32
    }

    /// The frame lengths in bytes.
    pub fn frame_lengths(&self) -> &[u16] {
        &self.frame_lengths[..self.frame_count]
    }

    /// The first frame's bytes inside `packet`, the packet this info was parsed from.
    pub fn first_frame<'a>(&self, packet: &'a [u8]) -> &'a [u8] {
        let end = self.frames_start + usize::from(self.frame_lengths[0]);
        packet.get(self.frames_start..end).unwrap_or(&[])
    }

    /// Whether the first frame of `packet` (the packet this info was parsed from) carries
    /// LBRR data: a low-bitrate copy of the audio before this packet, which the decoder
    /// can use in place of a lost packet (in-band FEC).
    pub fn has_lbrr(&self, packet: &[u8]) -> bool {
        if self.toc.mode() == OpusMode::Celt {
            return false;
        }
        // An empty first frame is a DTX/PLC frame: nothing to recover from (§3.2.1).
        let Some(&first) = self.first_frame(packet).first() else {
            return false;
        };
        // RFC 6716 §4.2.3: the SILK header starts with one VAD flag per 20 ms SILK frame and
        // then the LBRR flag, for the mid channel and then the side channel; they are coded
        // with probability 1/2, so they are the leading bits of the first byte.
        let silk_frames = (self.toc.samples_per_frame() / 960).max(1);
        let mid = (first >> (7 - silk_frames)) & 1 == 1;
        let side = self.toc.stereo && (first >> (6 - 2 * silk_frames)) & 1 == 1;
        mid || side
    }
}

/// Parses one frame length (RFC 6716 §3.2.1): one byte below 252, else two bytes.
/// Returns (length, bytes consumed).
fn frame_length(data: &[u8]) -> Result<(usize, usize), OpusError> {
    match data {
        [] => Err(OpusError::Truncated),
        [b0, ..] if *b0 < 252 => Ok((usize::from(*b0), 1)),
        [b0, b1, ..] => Ok((usize::from(*b1) * 4 + usize::from(*b0), 2)),
        [_] => Err(OpusError::Truncated),
    }
}

/// Validates an Opus packet (one RTP payload, RFC 7587 §4.2) and describes its frames.
pub fn parse_packet(packet: &[u8]) -> Result<OpusPacketInfo, OpusError> {
    // R1: at least the TOC byte.
    let (&toc_byte, rest) = packet.split_first().ok_or(OpusError::Empty)?;
    let toc = Toc::from_byte(toc_byte);
    let mut info = OpusPacketInfo {
        toc,
        frame_count: 0,
        frame_lengths: [0; MAX_FRAMES],
        padding: 0,
        frames_start: 1,
    };
    match toc.code {
        0 => {
            // One frame filling the packet (R2).
            set_frames(&mut info, &[rest.len()])?;
        }
        1 => {
            // Two frames of equal size: the remainder must be even (R3).
            if !rest.len().is_multiple_of(2) {
                return Err(OpusError::OddCbrLength);
            }
            let half = rest.len() / 2;
            set_frames(&mut info, &[half, half])?;
        }
        2 => {
            // Two frames, the first one's length coded explicitly (R4).
            let (first, used) = frame_length(rest)?;
            let remaining = rest.len() - used;
            if first > remaining {
                return Err(OpusError::FrameOverrun);
            }
            info.frames_start = 1 + used;
            set_frames(&mut info, &[first, remaining - first])?;
        }
        _ => parse_code3(&mut info, rest)?,
    }
    Ok(info)
}

/// Code 3: a frame count byte, optional padding, then CBR or VBR frames (RFC 6716 §3.2.5).
fn parse_code3(info: &mut OpusPacketInfo, rest: &[u8]) -> Result<(), OpusError> {
    let (&count_byte, mut data) = rest.split_first().ok_or(OpusError::Truncated)?;
    let vbr = count_byte & 0x80 != 0;
    let padded = count_byte & 0x40 != 0;
    let count = usize::from(count_byte & 0x3f);
    // R5: at least one frame, at most 120 ms.
    if count == 0 {
        return Err(OpusError::ZeroFrames);
    }
    if info.toc.samples_per_frame() * count as u32 > MAX_PACKET_SAMPLES {
        return Err(OpusError::TooLong);
    }
    // Trailing padding bytes: each length byte of 255 adds 254 and another length byte
    // follows; the length bytes themselves are not counted.
    let mut padding = 0usize;
    if padded {
        loop {
            let (&b, tail) = data.split_first().ok_or(OpusError::Truncated)?;
            data = tail;
            if b == 255 {
                padding += 254;
            } else {
                padding += usize::from(b);
                break;
            }
        }
    }
    let mut lengths = [0usize; MAX_FRAMES];
    let mut consumed_lengths = 0usize;
    if vbr {
        // R7: M-1 explicit lengths, the last frame takes what remains.
        for slot in lengths.iter_mut().take(count - 1) {
            let (len, used) = frame_length(&data[consumed_lengths..])?;
            *slot = len;
            consumed_lengths += used;
        }
    }
    let body = data
        .len()
        .checked_sub(consumed_lengths + padding)
        .ok_or(OpusError::FrameOverrun)?;
    if vbr {
        let explicit: usize = lengths[..count - 1].iter().sum();
        lengths[count - 1] = body.checked_sub(explicit).ok_or(OpusError::FrameOverrun)?;
    } else {
        // R6: equal frames exactly filling the body.
        if !body.is_multiple_of(count) {
            return Err(OpusError::OddCbrLength);
        }
        lengths[..count].fill(body / count);
    }
    info.padding = padding;
    info.frames_start = 1 + rest.len() - data.len() + consumed_lengths;
    set_frames(info, &lengths[..count])
}

fn set_frames(info: &mut OpusPacketInfo, lengths: &[usize]) -> Result<(), OpusError> {
    for (slot, &len) in info.frame_lengths.iter_mut().zip(lengths) {
        if len > MAX_FRAME_BYTES {
            return Err(OpusError::FrameTooLarge(len));
        }
        *slot = len as u16;
    }
    info.frame_count = lengths.len();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn toc(config: u8, stereo: bool, code: u8) -> u8 {
        config << 3 | u8::from(stereo) << 2 | code
    }

    #[test]
    fn durations_follow_the_configuration_table() {
        // SILK 10/20/40/60 ms, hybrid 10/20 ms, CELT 2.5/5/10/20 ms.
        use OpusMode::{Celt, Hybrid, Silk};
        let expect = [
            (0, Silk, 480),
            (1, Silk, 960),
            (2, Silk, 1920),
            (3, Silk, 2880),
            (12, Hybrid, 480),
            (13, Hybrid, 960),
            (16, Celt, 120),
            (17, Celt, 240),
            (18, Celt, 480),
            (31, Celt, 960),
        ];
        for (config, mode, samples) in expect {
            let info = parse_packet(&[toc(config, false, 0), 1, 2, 3]).unwrap();
            assert_eq!(info.toc.mode(), mode, "config {config}");
            assert_eq!(info.duration_samples(), samples, "config {config}");
        }
    }

    #[test]
    fn code0_is_one_frame_and_toc_only_is_an_empty_frame() {
        let info = parse_packet(&[toc(1, false, 0)]).unwrap();
        assert_eq!(info.frame_lengths(), &[0]);
        assert_eq!(info.first_frame(&[toc(1, false, 0)]), &[] as &[u8]);
        let p = [toc(1, true, 0), 9, 8];
        let info = parse_packet(&p).unwrap();
        assert!(info.toc.stereo);
        assert_eq!(info.frame_lengths(), &[2]);
        assert_eq!(info.first_frame(&p), &[9, 8]);
    }

    #[test]
    fn code1_needs_an_even_remainder() {
        let p = [toc(1, false, 1), 7, 8, 9, 10];
        let info = parse_packet(&p).unwrap();
        assert_eq!(info.frame_lengths(), &[2, 2]);
        assert_eq!(info.first_frame(&p), &[7, 8]);
        assert_eq!(
            parse_packet(&[toc(1, false, 1), 1, 2, 3]),
            Err(OpusError::OddCbrLength)
        );
    }

    #[test]
    fn code2_two_byte_length_and_overrun() {
        // 252 + 4*1 = 256 bytes of first frame, then 10 bytes of second.
        let mut p = vec![toc(1, false, 2), 252, 1];
        p.extend(std::iter::repeat_n(0, 266));
        assert_eq!(parse_packet(&p).unwrap().frame_lengths(), &[256, 10]);
        assert_eq!(parse_packet(&p).unwrap().first_frame(&p).len(), 256);
        let p = [toc(1, false, 2), 2, 0xaa, 0xbb, 0xcc];
        assert_eq!(parse_packet(&p).unwrap().first_frame(&p), &[0xaa, 0xbb]);
        assert_eq!(
            parse_packet(&[toc(1, false, 2), 5, 1, 2]),
            Err(OpusError::FrameOverrun)
        );
        // Two-byte length: 252 + 4 * 1 = 256 bytes, longer than the packet.
        assert_eq!(
            parse_packet(&[toc(1, false, 2), 252, 1, 0]),
            Err(OpusError::FrameOverrun)
        );
        assert_eq!(
            parse_packet(&[toc(1, false, 2), 253]),
            Err(OpusError::Truncated)
        );
    }

    #[test]
    fn code3_cbr_vbr_and_padding() {
        // CBR, 3 frames of 2 bytes.
        let p = [toc(16, false, 3), 3, 1, 1, 2, 2, 3, 3];
        let info = parse_packet(&p).unwrap();
        assert_eq!(info.frame_lengths(), &[2, 2, 2]);
        assert_eq!(info.duration_samples(), 360);
        assert_eq!(info.first_frame(&p), &[1, 1]);
        // VBR, 2 frames: 1 byte then the rest (3 bytes).
        let p = [toc(16, false, 3), 0x80 | 2, 1, 7, 8, 8, 8];
        let info = parse_packet(&p).unwrap();
        assert_eq!(info.frame_lengths(), &[1, 3]);
        assert_eq!(info.first_frame(&p), &[7]);
        // VBR with padding, 2 frames: padding length 2, first frame of 1 byte, then 2 bytes.
        let p = [toc(1, false, 3), 0xc2, 2, 1, 0xee, 0xff, 0xff, 0, 0];
        let info = parse_packet(&p).unwrap();
        assert_eq!((info.frame_lengths(), info.padding), (&[1, 2][..], 2));
        assert_eq!(info.first_frame(&p), &[0xee]);
        // CBR with padding: length bytes 255 (254) and 1: 255 bytes trail the frame.
        let mut p = vec![toc(16, false, 3), 0x40 | 1, 255, 1, 42, 42];
        p.extend(std::iter::repeat_n(0, 255));
        let info = parse_packet(&p).unwrap();
        assert_eq!(info.frame_lengths(), &[2]);
        assert_eq!(info.padding, 255);
        // Padding longer than the packet.
        assert_eq!(
            parse_packet(&[toc(16, false, 3), 0x40 | 1, 10, 1]),
            Err(OpusError::FrameOverrun)
        );
    }

    #[test]
    fn code3_rejects_zero_frames_and_over_120_ms() {
        assert_eq!(
            parse_packet(&[toc(16, false, 3), 0]),
            Err(OpusError::ZeroFrames)
        );
        // 3 x 60 ms = 180 ms, 7 x 20 ms = 140 ms.
        assert_eq!(
            parse_packet(&[toc(3, false, 3), 3, 0, 0, 0]),
            Err(OpusError::TooLong)
        );
        assert_eq!(
            parse_packet(&[toc(1, false, 3), 7, 0, 0, 0, 0, 0, 0, 0]),
            Err(OpusError::TooLong)
        );
        // 48 x 2.5 ms = 120 ms is the limit.
        assert!(parse_packet(&[toc(16, false, 3), 48]).is_ok());
        assert_eq!(parse_packet(&[]), Err(OpusError::Empty));
        assert_eq!(
            parse_packet(&[toc(16, false, 3)]),
            Err(OpusError::Truncated)
        );
    }

    #[test]
    fn frames_over_1275_bytes_are_rejected() {
        // Code 0: the frame is what follows the TOC byte.
        let mut p = vec![toc(1, false, 0); 1 + MAX_FRAME_BYTES];
        assert!(parse_packet(&p).is_ok());
        p.push(0);
        assert_eq!(parse_packet(&p), Err(OpusError::FrameTooLarge(1276)));
        // Code 1: two frames of 1276 bytes.
        let mut p = vec![toc(1, false, 1)];
        p.resize(1 + 2 * 1276, 0);
        assert_eq!(parse_packet(&p), Err(OpusError::FrameTooLarge(1276)));
        // Code 2: a 1-byte first frame and a 1276-byte second one.
        let mut p = vec![toc(1, false, 2), 1, 0];
        p.resize(3 + 1276, 0);
        assert_eq!(parse_packet(&p), Err(OpusError::FrameTooLarge(1276)));
    }

    #[test]
    fn lbrr_flag_position_depends_on_silk_frames() {
        let lbrr = |p: &[u8]| parse_packet(p).unwrap().has_lbrr(p);
        // 20 ms mono SILK: VAD bit then LBRR bit (bit 6).
        assert!(lbrr(&[toc(1, false, 0), 0b0100_0000]));
        assert!(!lbrr(&[toc(1, false, 0), 0b1000_0000]));
        // 60 ms mono SILK: three VAD bits, LBRR is bit 4.
        assert!(lbrr(&[toc(3, false, 0), 0b0001_0000]));
        assert!(!lbrr(&[toc(3, false, 0), 0b0010_0000]));
        // 20 ms stereo SILK: the side channel's LBRR flag is bit 4.
        assert!(lbrr(&[toc(1, true, 0), 0b0001_0000]));
        // The flags are read from the first frame, after code 3 header bytes.
        assert!(lbrr(&[toc(1, false, 3), 0x80 | 2, 1, 0b0100_0000, 0]));
        assert!(!lbrr(&[toc(1, false, 3), 0x80 | 2, 1, 0, 0b0100_0000]));
        // An empty first frame and CELT never carry LBRR.
        assert!(!lbrr(&[toc(1, false, 0)]));
        assert!(!lbrr(&[toc(31, false, 0), 0xff]));
    }

    /// Builds a code 3 VBR packet from frames and padding, the way an encoder would.
    fn build_code3(config: u8, frames: &[Vec<u8>], padding: usize) -> Vec<u8> {
        let mut p = vec![toc(config, false, 3), 0x80 | frames.len() as u8];
        if padding > 0 {
            p[1] |= 0x40;
            let mut left = padding;
            while left >= 255 {
                p.push(255);
                left -= 254;
            }
            p.push(left as u8);
        }
        for f in &frames[..frames.len() - 1] {
            if f.len() < 252 {
                p.push(f.len() as u8);
            } else {
                let b0 = 252 + (f.len() - 252) % 4;
                p.push(b0 as u8);
                p.push(((f.len() - b0) / 4) as u8);
            }
        }
        for f in frames {
            p.extend_from_slice(f);
        }
        p.extend(std::iter::repeat_n(0, padding));
        p
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            if let Ok(info) = parse_packet(&data) {
                let frames: usize = info.frame_lengths().iter().map(|&l| usize::from(l)).sum();
                prop_assert!(frames + info.padding < data.len());
                prop_assert!(info.duration_samples() <= MAX_PACKET_SAMPLES);
                prop_assert_eq!(info.first_frame(&data).len(), usize::from(info.frame_lengths()[0]));
                let _ = info.has_lbrr(&data);
            }
        }

        #[test]
        fn code3_vbr_round_trip(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..6),
            padding in prop_oneof![Just(0usize), 1..600usize],
        ) {
            let p = build_code3(16, &frames, padding);
            let info = parse_packet(&p).unwrap();
            let lengths: Vec<u16> = frames.iter().map(|f| f.len() as u16).collect();
            prop_assert_eq!(info.frame_lengths(), &lengths[..]);
            prop_assert_eq!(info.padding, padding);
            prop_assert_eq!(info.first_frame(&p), &frames[0][..]);
        }
    }
}
