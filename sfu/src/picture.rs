//! The picture size a keyframe carries, read from its bitstream headers: the VP8 frame
//! header (RFC 6386 §9.1) or the H.264 sequence parameter set (ITU-T H.264 §7.3.2.1.1).
//! The SFU learns each simulcast layer's real resolution from it (the `scaleResolution-
//! DownBy` a publisher asked for is not what its encoder may send) and can tell which
//! picture it switched a subscriber to.
//!
//! Frames come from peers: every read is bounds-checked and a malformed header gives
//! `None`, never a panic.

use str0m::format::Codec;

/// Width and height in pixels.
pub type Size = (u16, u16);

/// The size of a keyframe of `codec` as str0m hands it over (a VP8 frame, an H.264
/// Annex B access unit); `None` for other codecs, delta frames or headers that do not
/// parse.
pub fn keyframe_size(codec: Codec, frame: &[u8]) -> Option<Size> {
    match codec {
        Codec::Vp8 => vp8_keyframe_size(frame),
        Codec::H264 => h264_sps_size(frame),
        _ => None,
    }
}

/// A VP8 keyframe's size: a 3-byte frame tag whose low bit is 0 for keyframes, the
/// start code 9d 01 2a, then width and height as 14-bit little-endian values (the top
/// two bits are the upscaling mode).
pub fn vp8_keyframe_size(frame: &[u8]) -> Option<Size> {
    let header = frame.get(..10)?;
    if header[0] & 1 != 0 || header[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([header[6], header[7]]) & 0x3fff;
    let height = u16::from_le_bytes([header[8], header[9]]) & 0x3fff;
    (width > 0 && height > 0).then_some((width, height))
}

/// The size in the first sequence parameter set (NAL type 7) of an Annex B access unit.
pub fn h264_sps_size(access_unit: &[u8]) -> Option<Size> {
    let sps = annex_b_nals(access_unit).find(|n| n.first().is_some_and(|b| b & 0x1f == 7))?;
    // The RBSP without its emulation prevention bytes (00 00 03 -> 00 00); an SPS is
    // small, a bounded copy is cheap.
    let mut rbsp = Vec::with_capacity(sps.len().min(MAX_SPS));
    let mut zeros = 0;
    for &b in sps.get(1..)?.iter().take(MAX_SPS) {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    parse_sps(&mut Bits::new(&rbsp))
}

/// Longest SPS read: real ones are tens of bytes; scaling lists add at most ~400.
const MAX_SPS: usize = 1024;

/// The NAL units of an Annex B stream (after 00 00 01 or 00 00 00 01 start codes).
fn annex_b_nals(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = stream;
    std::iter::from_fn(move || {
        let start = find_start_code(rest)?;
        rest = &rest[start..];
        let end = find_start_code(rest).map_or(rest.len(), |next| {
            // Back over the start code found (three bytes, or four with a leading 0).
            let mut e = next - 3;
            while e > 0 && rest[e - 1] == 0 {
                e -= 1;
            }
            e
        });
        let nal = &rest[..end];
        rest = &rest[end..];
        Some(nal)
    })
}

/// Index just past the first 00 00 01 in `data`.
fn find_start_code(data: &[u8]) -> Option<usize> {
    data.windows(3).position(|w| w == [0, 0, 1]).map(|i| i + 3)
}

/// The fields of seq_parameter_set_data() up to the size (H.264 §7.3.2.1.1).
fn parse_sps(r: &mut Bits<'_>) -> Option<Size> {
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.bits(1)?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bits(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.bits(1)? == 1 {
            // seq_scaling_matrix_present_flag: skip the lists (§7.3.2.1.1.1).
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bits(1)? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256).rem_euclid(256);
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bits(1)?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        2 => {}
        _ => return None,
    }
    r.ue()?; // max_num_ref_frames
    r.bits(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.bits(1)?;
    if frame_mbs_only == 0 {
        r.bits(1)?; // mb_adaptive_frame_field_flag
    }
    r.bits(1)?; // direct_8x8_inference_flag
    let (mut left, mut right, mut top, mut bottom) = (0u64, 0u64, 0u64, 0u64);
    if r.bits(1)? == 1 {
        left = r.ue()?.into();
        right = r.ue()?.into();
        top = r.ue()?.into();
        bottom = r.ue()?.into();
    }
    // Crop units (§7.4.2.1.1, Table 6-1): 4:2:0 halves both, 4:2:2 the width only.
    let (sub_w, sub_h) = match chroma_format_idc {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let (crop_x, crop_y) = if chroma_format_idc == 0 {
        (1, 2 - u64::from(frame_mbs_only))
    } else {
        (sub_w, sub_h * (2 - u64::from(frame_mbs_only)))
    };
    let width = (width_mbs * 16).checked_sub(crop_x * (left + right))?;
    let height = ((2 - u64::from(frame_mbs_only)) * height_units * 16)
        .checked_sub(crop_y * (top + bottom))?;
    let width = u16::try_from(width).ok().filter(|w| *w > 0)?;
    let height = u16::try_from(height).ok().filter(|h| *h > 0)?;
    Some((width, height))
}

/// A big-endian bit reader with Exp-Golomb codes (H.264 §9.1).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// The next `n` (at most 32) bits.
    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            v = (v << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Some(v)
    }

    /// ue(v): an unsigned Exp-Golomb code, up to 31 leading zeros.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bits(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        Some(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    /// se(v): a signed Exp-Golomb code.
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

#[cfg(test)]
#[path = "picture_tests.rs"]
mod tests;
