//! Opus packet structure (RFC 6716 §3.1–§3.2): the TOC byte, frame count codes 0–3, frame
//! lengths and padding, validated against the rules R1–R7 of RFC 6716 §3.4.

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
        let expect = [
            (0, 480),
            (1, 960),
            (2, 1920),
            (3, 2880),
            (12, 480),
            (13, 960),
            (16, 120),
            (17, 240),
            (18, 480),
            (31, 960),
        ];
        for (config, samples) in expect {
            let info = parse_packet(&[toc(config, false, 0), 1, 2, 3]).unwrap();
            assert_eq!(info.duration_samples(), samples, "config {config}");
        }
    }

    #[test]
    fn code0_is_one_frame_and_toc_only_is_an_empty_frame() {
        let info = parse_packet(&[toc(1, false, 0)]).unwrap();
        assert_eq!(info.frame_lengths(), &[0]);
        let info = parse_packet(&[toc(1, true, 0), 9, 9]).unwrap();
        assert!(info.toc.stereo);
        assert_eq!(info.frame_lengths(), &[2]);
    }

    #[test]
    fn code1_needs_an_even_remainder() {
        assert_eq!(
            parse_packet(&[toc(1, false, 1), 1, 2])
                .unwrap()
                .frame_lengths(),
            &[1, 1]
        );
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
        assert_eq!(
            parse_packet(&[toc(1, false, 2), 5, 1, 2]),
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
        let info = parse_packet(&[toc(16, false, 3), 3, 1, 1, 2, 2, 3, 3]).unwrap();
        assert_eq!(info.frame_lengths(), &[2, 2, 2]);
        assert_eq!(info.duration_samples(), 360);
        // VBR, 2 frames: 1 byte then the rest (3 bytes).
        let info = parse_packet(&[toc(16, false, 3), 0x80 | 2, 1, 7, 8, 8, 8]).unwrap();
        assert_eq!(info.frame_lengths(), &[1, 3]);
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
        // 3 x 60 ms = 180 ms.
        assert_eq!(
            parse_packet(&[toc(3, false, 3), 3, 0, 0, 0]),
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
        let p = vec![toc(1, false, 0); 1277];
        assert_eq!(parse_packet(&p), Err(OpusError::FrameTooLarge(1276)));
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
        }
    }
}
