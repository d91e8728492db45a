//! Synthetic media frames: an Opus-like audio frame and H.264-like video frames, each
//! carrying a marker (sender, frame number, send time) so that receivers measure loss and
//! one-way latency. All peers run in one process and share one clock, so the send time is
//! comparable with the receive time.
//!
//! The marker is ASCII hex: video frames are Annex B byte streams that the SFU
//! depacketizes and packetizes again, and binary fields could contain a start code
//! (`00 00 01`) that would split the NAL unit (RFC 6184 §5.4, ITU-T H.264 Annex B).

use std::fmt::Write as _;

/// Start of every marker.
const MAGIC: &[u8; 2] = b"hb";
/// `hb` + sender (8 hex) + frame number (8 hex) + send time in µs (16 hex).
pub const MARKER_LEN: usize = 2 + 8 + 8 + 16;

/// What a receiver reads back from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Index of the publishing peer in the run.
    pub sender: u32,
    /// Frame number in the sender's track, from 1, without gaps at the sender.
    pub frame: u32,
    /// Send time in µs since the run's epoch.
    pub sent_us: u64,
}

impl Marker {
    fn append_to(&self, out: &mut Vec<u8>) {
        let mut s = String::with_capacity(MARKER_LEN);
        let _ = write!(
            s,
            "hb{:08x}{:08x}{:016x}",
            self.sender, self.frame, self.sent_us
        );
        out.extend_from_slice(s.as_bytes());
    }

    /// Finds the marker at `offset` in a received frame; `None` for anything else (the
    /// frame comes from the network: no panics on short or foreign data).
    pub fn parse_at(data: &[u8], offset: usize) -> Option<Self> {
        let m = data.get(offset..offset + MARKER_LEN)?;
        if &m[..2] != MAGIC {
            return None;
        }
        let hex = |b: &[u8]| -> Option<u64> {
            u64::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok()
        };
        Some(Self {
            sender: u32::try_from(hex(&m[2..10])?).ok()?,
            frame: u32::try_from(hex(&m[10..18])?).ok()?,
            sent_us: hex(&m[18..34])?,
        })
    }
}

/// Finds the marker near the start of a received frame. Depacketizers may present the
/// frame with or without its start code, so the first bytes are searched.
pub fn find(data: &[u8]) -> Option<Marker> {
    let head = &data[..data.len().min(16)];
    head.windows(2)
        .enumerate()
        .filter(|(_, w)| w == MAGIC)
        .find_map(|(i, _)| Marker::parse_at(data, i))
}

/// Offset of the marker in an audio frame (after the Opus TOC byte).
pub const AUDIO_MARKER_AT: usize = 1;
/// Offset of the marker in a video frame (after the 4-byte start code and the NAL header).
pub const VIDEO_MARKER_AT: usize = 5;

/// One 20 ms Opus-like frame of `size` bytes (at least the marker's): TOC byte for SILK
/// wideband 20 ms mono, one frame (RFC 6716 §3.1), then the marker, then filler.
pub fn audio_frame(marker: Marker, size: usize, out: &mut Vec<u8>) {
    out.clear();
    out.push(0x58);
    marker.append_to(out);
    out.resize(size.max(AUDIO_MARKER_AT + MARKER_LEN), 0x55);
}

/// One H.264-like access unit of `size` bytes: an Annex B start code, an IDR slice
/// (type 5) or non-IDR slice (type 1) NAL header (RFC 6184 §1.3), the marker, filler.
/// The filler byte 0x42 never forms a start code.
pub fn video_frame(marker: Marker, keyframe: bool, size: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0, 0, 0, 1, if keyframe { 0x65 } else { 0x41 }]);
    marker.append_to(out);
    out.resize(size.max(VIDEO_MARKER_AT + MARKER_LEN), 0x42);
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Marker = Marker {
        sender: 0xdead_beef,
        frame: 7,
        sent_us: 123_456_789_012,
    };

    #[test]
    fn audio_marker_round_trips() {
        let mut f = Vec::new();
        audio_frame(M, 100, &mut f);
        assert_eq!(f.len(), 100);
        assert_eq!(f[0], 0x58);
        assert_eq!(Marker::parse_at(&f, AUDIO_MARKER_AT), Some(M));
    }

    #[test]
    fn video_frame_has_no_start_code_after_the_first() {
        let mut f = Vec::new();
        video_frame(
            Marker {
                sender: 0x0000_0001,
                frame: 0x0001_0000,
                sent_us: 1,
            },
            true,
            5000,
            &mut f,
        );
        assert_eq!(f.len(), 5000);
        assert_eq!(f[4], 0x65);
        let start_codes = f[4..].windows(3).filter(|w| w == &[0, 0, 1]).count();
        assert_eq!(start_codes, 0);
        assert_eq!(
            Marker::parse_at(&f, VIDEO_MARKER_AT).unwrap().frame,
            0x10000
        );
        // Without the start code, as a depacketizer may hand it over.
        assert_eq!(find(&f[4..]).unwrap().frame, 0x10000);
        assert_eq!(find(&f).unwrap().sender, 1);
    }

    #[test]
    fn foreign_or_short_data_is_not_a_marker() {
        assert_eq!(Marker::parse_at(b"", 0), None);
        assert_eq!(Marker::parse_at(b"hb1234", 0), None);
        let mut f = Vec::new();
        audio_frame(M, 100, &mut f);
        f[AUDIO_MARKER_AT + 4] = b'z';
        assert_eq!(Marker::parse_at(&f, AUDIO_MARKER_AT), None);
        f[AUDIO_MARKER_AT] = b'x';
        assert_eq!(Marker::parse_at(&f, AUDIO_MARKER_AT), None);
    }
}
