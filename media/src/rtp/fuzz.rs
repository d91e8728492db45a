//! Fuzz target bodies for the RTP parsers, shared by the cargo-fuzz targets in
//! `media/fuzz` and by the unit tests, which run them over random inputs in CI.
//! Each one panics only when a parser breaks one of its own guarantees.

use super::audio_level::{SILENCE, read_extension_block};
use super::h264::{
    H264Depacketizer, H264Error, H264Packetizer, Output, inspect_payload, nal_units,
};
use super::opus::{MAX_PACKET_SAMPLES, OpusDepacketizer, parse_packet};
use super::red;

/// Splits fuzz input into records: a length byte, a flags byte, then that many bytes.
fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&len, rest) = data.split_first()?;
        let (&flags, rest) = rest.split_first()?;
        let len = usize::from(len).min(rest.len());
        let (record, rest) = rest.split_at(len);
        data = rest;
        Some((flags, record))
    })
}

/// Opus: every payload either fails to parse or describes frames that fit in it.
pub fn opus_depacketizer(data: &[u8]) {
    let mut depacketizer = OpusDepacketizer::new();
    let mut seq = 0u16;
    let mut timestamp = 0u32;
    for (flags, payload) in records(data) {
        seq = seq.wrapping_add(u16::from(flags & 0x3));
        timestamp = timestamp.wrapping_add(u32::from(flags >> 2) * 120);
        let parsed = parse_packet(payload);
        match depacketizer.push(seq, timestamp, payload) {
            Ok(got) => {
                let info = parsed.expect("depacketizer accepted what the parser rejects");
                let frames: usize = info.frame_lengths().iter().map(|&l| usize::from(l)).sum();
                assert!(1 + frames + info.padding <= payload.len());
                assert!(got.duration_samples() <= MAX_PACKET_SAMPLES && got.duration_samples() > 0);
            }
            Err(e) => assert_eq!(parsed.err(), Some(e)),
        }
    }
}

/// H.264: whatever comes out is a well-formed Annex-B stream, and a packetizer
/// round trip of each output unit reproduces it.
pub fn h264_depacketizer(data: &[u8]) {
    let mut depacketizer = H264Depacketizer::default();
    let mut packetizer = H264Packetizer::new(200).expect("valid size");
    let mut seq = 0u16;
    let mut timestamp = 0u32;
    let mut packets = Vec::new();
    for (flags, payload) in records(data) {
        seq = seq.wrapping_add(u16::from(flags & 0x3));
        timestamp = timestamp.wrapping_add(u32::from(flags >> 3 & 0x3) * 3000);
        let _ = inspect_payload(payload);
        let _ = depacketizer.push(seq, timestamp, flags & 0x4 != 0, payload);
        while let Some(output) = depacketizer.poll_output() {
            let Output::AccessUnit(au) = output else {
                continue;
            };
            let units: Vec<&[u8]> = nal_units(&au.data)
                .expect("output starts with a start code")
                .collect();
            assert!(!units.is_empty());
            packets.clear();
            match packetizer.packetize(&au.data, au.timestamp, &mut packets) {
                Ok(()) => {
                    // Our own packets come back as the same NAL units.
                    let again = H264Depacketizer::default()
                        .depacketize_frame(au.timestamp, packets.iter().map(|p| &p.payload[..]))
                        .expect("own packets depacketize");
                    let again_units: Vec<&[u8]> =
                        nal_units(&again.data).expect("start code").collect();
                    assert_eq!(units, again_units);
                }
                // Only a peer's NAL unit with an emulated start code inside can split
                // into a unit of a type that cannot be sent.
                Err(e) => assert!(matches!(e, H264Error::ReservedNalType(_)), "{e}"),
            }
        }
    }
    let _ = depacketizer.depacketize_frame(0, records(data).map(|(_, p)| p));
}

/// Audio level: any block either fails or yields a level in range.
pub fn audio_level(data: &[u8]) {
    let Some((&[p0, p1, id], block)) = data.split_first_chunk::<3>() else {
        return;
    };
    let profile = u16::from_be_bytes([p0, p1]);
    if let Ok(Some(level)) = read_extension_block(profile, block, id) {
        assert!(level.level() <= SILENCE);
    }
}

/// RED (RFC 2198): a payload either fails or splits into blocks that lie inside it,
/// at most `MAX_REDUNDANT_BLOCKS` of them, and building them again gives the same bytes.
pub fn red(data: &[u8]) {
    let Ok(parsed) = red::parse(data) else {
        return;
    };
    assert!(parsed.redundant.len() <= red::MAX_REDUNDANT_BLOCKS);
    // The headers carry each block's PT; `build` writes the primary's for all of them,
    // so only payloads that use one PT throughout round-trip byte for byte.
    if parsed.redundant.iter().all(|b| b.pt == parsed.primary_pt) {
        let blocks: Vec<(u32, &[u8])> = parsed
            .redundant
            .iter()
            .map(|b| (u32::from(b.timestamp_offset), b.data))
            .collect();
        let mut out = Vec::new();
        red::build(parsed.primary_pt, parsed.primary, &blocks, &mut out)
            .expect("parsed blocks are within the header's bounds");
        assert_eq!(out, data, "RED round trip");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Found by the fuzzer: a peer's NAL unit with an emulated start code inside comes
    /// out as two units, one of a reserved type, which the packetizer must refuse.
    #[test]
    fn emulated_start_code_in_a_peer_nal_unit() {
        let mut payload = vec![0x41];
        payload.extend([0xd5; 20]);
        payload.extend([0, 0, 0, 0, 1, 0, 0, 0x0a, 0x88]);
        let mut data = vec![1, 0, 0xd5, payload.len() as u8, 0xd5];
        data.extend(&payload);
        h264_depacketizer(&data);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn opus_target(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            opus_depacketizer(&data);
        }

        #[test]
        fn h264_target(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            h264_depacketizer(&data);
        }

        /// Mostly valid H.264 headers, so that the deeper paths are reached.
        #[test]
        fn h264_target_structured(records in proptest::collection::vec((0u8..32, any::<u8>(), prop_oneof![Just(0x7cu8), Just(0x78), Just(0x65), Just(0x41), Just(0x67)], any::<u8>(), proptest::collection::vec(any::<u8>(), 0..30)), 0..40)) {
            let mut data = Vec::new();
            for (len, flags, header, second, rest) in records {
                let mut payload = vec![header, second];
                payload.extend(rest);
                payload.truncate(usize::from(len).max(1));
                data.push(payload.len() as u8);
                data.push(flags);
                data.extend(payload);
            }
            h264_depacketizer(&data);
        }

        #[test]
        fn audio_level_target(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            audio_level(&data);
        }

        #[test]
        fn red_target(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            red(&data);
        }
    }
}
