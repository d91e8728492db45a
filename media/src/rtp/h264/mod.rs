//! H.264 RTP payload format, packetization-mode 1 (RFC 6184 §6.3): Single NAL unit
//! packets, STAP-A aggregation and FU-A fragmentation, both ways, with parameter-set
//! (SPS/PPS) tracking and keyframe detection.

mod annexb;
mod depacketizer;
mod packetizer;

pub use annexb::{NalUnits, START_CODE, nal_units};
pub use depacketizer::{
    AccessUnit, DepacketizerConfig, DepacketizerStats, DropReason, H264Depacketizer, Output,
};
pub use packetizer::H264Packetizer;

/// RTP clock rate of video (RFC 6184 §8.2.1).
pub const CLOCK_RATE: u32 = 90_000;

/// NAL unit types used here (ITU-T H.264 Table 7-1, RFC 6184 Table 3).
pub mod nal_type {
    /// Coded slice of a non-IDR picture.
    pub const SLICE: u8 = 1;
    /// Coded slice of an IDR picture: a keyframe.
    pub const IDR: u8 = 5;
    /// Supplemental enhancement information.
    pub const SEI: u8 = 6;
    /// Sequence parameter set.
    pub const SPS: u8 = 7;
    /// Picture parameter set.
    pub const PPS: u8 = 8;
    /// Access unit delimiter.
    pub const AUD: u8 = 9;
    /// Single-time aggregation packet (RFC 6184 §5.7.1).
    pub const STAP_A: u8 = 24;
    /// Single-time aggregation packet with DON (interleaved mode only).
    pub const STAP_B: u8 = 25;
    /// Multi-time aggregation packet, 16-bit offset (interleaved mode only).
    pub const MTAP16: u8 = 26;
    /// Multi-time aggregation packet, 24-bit offset (interleaved mode only).
    pub const MTAP24: u8 = 27;
    /// Fragmentation unit A (RFC 6184 §5.8).
    pub const FU_A: u8 = 28;
    /// Fragmentation unit B (interleaved mode only).
    pub const FU_B: u8 = 29;
}

/// Type field of a NAL unit header byte (`F | NRI | Type`).
pub fn nal_unit_type(header: u8) -> u8 {
    header & 0x1f
}

/// Why an H.264 payload or access unit was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H264Error {
    /// An empty RTP payload.
    #[error("empty H.264 payload")]
    Empty,
    /// NAL unit type 0, 30 or 31 (RFC 6184 Table 3: reserved/undefined).
    #[error("reserved NAL unit type {0}")]
    ReservedNalType(u8),
    /// STAP-B, MTAP or FU-B: only allowed in interleaved mode (RFC 6184 §6.3).
    #[error("NAL unit type {0} is not allowed in packetization-mode 1")]
    NotInMode1(u8),
    /// A STAP-A whose size fields do not match its length (RFC 6184 §5.7.1).
    #[error("malformed STAP-A")]
    MalformedStapA,
    /// An aggregation unit or fragment carries a NAL type that cannot appear there.
    #[error("NAL unit type {0} inside an aggregation or fragment")]
    NestedNalType(u8),
    /// A FU-A shorter than its two header bytes plus one byte of data.
    #[error("FU-A too short")]
    FuTooShort,
    /// A FU-A with both start and end bits (RFC 6184 §5.8).
    #[error("FU-A with start and end bits set")]
    FuStartAndEnd,
    /// A FU-A start while a fragmented NAL unit is still open.
    #[error("FU-A start before the previous fragmented NAL unit ended")]
    FuRestarted,
    /// A FU-A continuation or end without a start.
    #[error("FU-A fragment without a start")]
    FuWithoutStart,
    /// A FU-A fragment whose NAL type differs from its start's.
    #[error("FU-A fragment type changed")]
    FuTypeChanged,
    /// Another packet, or the end of the access unit, interrupted a fragmented NAL unit.
    #[error("fragmented NAL unit not terminated")]
    FuUnterminated,
    /// The access unit grew beyond the configured limit.
    #[error("access unit exceeds {0} bytes")]
    TooLarge(usize),
    /// Packets must be pushed in sequence order; this one is older than the last.
    #[error("packet out of order")]
    OutOfOrder,
    /// An Annex-B buffer that does not begin with a start code, or has no NAL unit.
    #[error("no Annex-B start code")]
    NoStartCode,
    /// A maximum payload size too small to fragment into, or too large for the 16-bit
    /// STAP-A size fields.
    #[error("maximum payload size {0} out of range")]
    BadMaxPayload(usize),
}

/// What one RTP payload tells about the access unit it belongs to, without
/// depacketizing it: used by the video frame buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PayloadInfo {
    /// Carries (the start of) an IDR slice.
    pub idr: bool,
    /// Carries a sequence parameter set.
    pub sps: bool,
    /// Carries a picture parameter set.
    pub pps: bool,
    /// The first NAL unit in the payload is an SPS or access unit delimiter, which in
    /// practice only open an access unit (ITU-T H.264 §7.4.1.2.3).
    pub starts_access_unit: bool,
}

/// Inspects one RTP payload for keyframe and access-unit-start information.
pub fn inspect_payload(payload: &[u8]) -> Result<PayloadInfo, H264Error> {
    let (&header, body) = payload.split_first().ok_or(H264Error::Empty)?;
    let mut info = PayloadInfo::default();
    match nal_unit_type(header) {
        t @ 1..=23 => note(&mut info, t, true),
        nal_type::STAP_A => {
            let mut first = true;
            for nal in StapA::new(body) {
                let nal = nal?;
                note(&mut info, nal_unit_type(nal[0]), first);
                first = false;
            }
        }
        nal_type::FU_A => {
            let &fu_header = body.first().ok_or(H264Error::FuTooShort)?;
            if fu_header & 0x80 != 0 {
                note(&mut info, nal_unit_type(fu_header), true);
            }
        }
        t @ (nal_type::STAP_B | nal_type::MTAP16 | nal_type::MTAP24 | nal_type::FU_B) => {
            return Err(H264Error::NotInMode1(t));
        }
        t => return Err(H264Error::ReservedNalType(t)),
    }
    Ok(info)
}

/// Records one NAL unit type in `info`; `first` marks the payload's first NAL unit.
fn note(info: &mut PayloadInfo, t: u8, first: bool) {
    match t {
        nal_type::IDR => info.idr = true,
        nal_type::SPS => info.sps = true,
        nal_type::PPS => info.pps = true,
        _ => {}
    }
    if first && (t == nal_type::SPS || t == nal_type::AUD) {
        info.starts_access_unit = true;
    }
}

/// Iterates the NAL units of a STAP-A body (after its header byte), validating sizes
/// (RFC 6184 §5.7.1): each unit is a 16-bit size then that many bytes, size at least 1.
pub(crate) struct StapA<'a> {
    rest: &'a [u8],
}

impl<'a> StapA<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Self {
        Self { rest: body }
    }
}

impl<'a> Iterator for StapA<'a> {
    type Item = Result<&'a [u8], H264Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let result = match self.rest {
            [hi, lo, tail @ ..] => {
                let size = usize::from(u16::from_be_bytes([*hi, *lo]));
                match tail.get(..size) {
                    Some(nal) if size > 0 => {
                        self.rest = &tail[size..];
                        match nal_unit_type(nal[0]) {
                            1..=23 => Ok(nal),
                            t => Err(H264Error::NestedNalType(t)),
                        }
                    }
                    _ => Err(H264Error::MalformedStapA),
                }
            }
            _ => Err(H264Error::MalformedStapA),
        };
        if result.is_err() {
            self.rest = &[];
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests;
