//! RFC 2198 redundant audio data (RED): an RTP payload that carries the current audio
//! frame (the primary) after copies of earlier ones, so that a receiver rebuilds a lost
//! packet from the next one. WebRTC uses it for Opus (`red/48000/2`, fmtp `111/111`).
//!
//! Layout: one 4-byte header per redundant block (F = 1, block PT, 14-bit timestamp
//! offset back from the packet's timestamp, 10-bit length), a 1-byte header for the
//! primary (F = 0, its PT), then the blocks' data in the same order and the primary's
//! data to the end of the payload.
//!
//! ```
//! use huddle_media::rtp::red::{build, parse};
//!
//! let mut payload = Vec::new();
//! build(111, b"now", &[(960, b"before".as_slice())], &mut payload).unwrap();
//! let red = parse(&payload).unwrap();
//! assert_eq!((red.primary_pt, red.primary), (111, b"now".as_slice()));
//! assert_eq!(red.redundant[0].timestamp_offset, 960);
//! assert_eq!(red.redundant[0].data, b"before");
//! ```

/// Most redundant blocks read from, or written into, one payload: WebRTC senders use one
/// or two; more in a packet from a peer is refused rather than walked.
pub const MAX_REDUNDANT_BLOCKS: usize = 8;
/// Largest timestamp offset a block header holds (14 bits).
pub const MAX_TIMESTAMP_OFFSET: u32 = (1 << 14) - 1;
/// Largest redundant block a header describes (10 bits).
pub const MAX_BLOCK_LEN: usize = (1 << 10) - 1;

/// Why a RED payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedError {
    #[error("RED payload ends inside its headers or blocks")]
    Truncated,
    #[error("RED payload with more than {MAX_REDUNDANT_BLOCKS} redundant blocks")]
    TooManyBlocks,
    #[error("RED block of {0} bytes (at most {MAX_BLOCK_LEN})")]
    BlockTooLong(usize),
    #[error("RED timestamp offset {0} (at most {MAX_TIMESTAMP_OFFSET})")]
    OffsetTooLarge(u32),
    #[error("payload type {0} is not 7 bits")]
    PayloadType(u8),
}

/// A redundant copy of an earlier frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedBlock<'a> {
    /// Its payload type (the primary's, for WebRTC's Opus).
    pub pt: u8,
    /// How far its timestamp lies before the packet's.
    pub timestamp_offset: u16,
    pub data: &'a [u8],
}

/// A parsed RED payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedPayload<'a> {
    /// Redundant blocks, oldest first, as sent.
    pub redundant: Vec<RedBlock<'a>>,
    /// The primary's payload type and data (the packet's own timestamp).
    pub primary_pt: u8,
    pub primary: &'a [u8],
}

/// Parses a RED payload; every length is checked against what is there.
pub fn parse(payload: &[u8]) -> Result<RedPayload<'_>, RedError> {
    let mut headers = Vec::new();
    let mut at = 0;
    let primary_pt = loop {
        let first = *payload.get(at).ok_or(RedError::Truncated)?;
        if first & 0x80 == 0 {
            at += 1;
            break first & 0x7f;
        }
        if headers.len() == MAX_REDUNDANT_BLOCKS {
            return Err(RedError::TooManyBlocks);
        }
        let h = payload.get(at..at + 4).ok_or(RedError::Truncated)?;
        let offset = (u16::from(h[1]) << 6) | u16::from(h[2] >> 2);
        let len = (usize::from(h[2] & 0x03) << 8) | usize::from(h[3]);
        headers.push((first & 0x7f, offset, len));
        at += 4;
    };
    let mut redundant = Vec::with_capacity(headers.len());
    for (pt, timestamp_offset, len) in headers {
        let data = payload.get(at..at + len).ok_or(RedError::Truncated)?;
        redundant.push(RedBlock {
            pt,
            timestamp_offset,
            data,
        });
        at += len;
    }
    Ok(RedPayload {
        redundant,
        primary_pt,
        primary: &payload[at..],
    })
}

/// Writes a RED payload into `out` (cleared first): `redundant` as (timestamp offset,
/// data) pairs, oldest first, each of the primary's payload type.
pub fn build(
    pt: u8,
    primary: &[u8],
    redundant: &[(u32, &[u8])],
    out: &mut Vec<u8>,
) -> Result<(), RedError> {
    if pt > 0x7f {
        return Err(RedError::PayloadType(pt));
    }
    if redundant.len() > MAX_REDUNDANT_BLOCKS {
        return Err(RedError::TooManyBlocks);
    }
    for &(offset, data) in redundant {
        if offset > MAX_TIMESTAMP_OFFSET {
            return Err(RedError::OffsetTooLarge(offset));
        }
        if data.len() > MAX_BLOCK_LEN {
            return Err(RedError::BlockTooLong(data.len()));
        }
    }
    out.clear();
    for &(offset, data) in redundant {
        let len = data.len();
        out.extend_from_slice(&[
            0x80 | pt,
            (offset >> 6) as u8,
            (((offset & 0x3f) << 2) as u8) | (len >> 8) as u8,
            (len & 0xff) as u8,
        ]);
    }
    out.push(pt);
    for &(_, data) in redundant {
        out.extend_from_slice(data);
    }
    out.extend_from_slice(primary);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_payload_as_chrome_sends_it() {
        // One redundant block of 3 bytes 960 ticks (20 ms) back, PT 111, primary "xy".
        let wire = [0xef, 0x0f, 0x00, 0x03, 0x6f, 1, 2, 3, b'x', b'y'];
        let red = parse(&wire).unwrap();
        assert_eq!(
            red.redundant,
            vec![RedBlock {
                pt: 111,
                timestamp_offset: 960,
                data: &[1, 2, 3]
            }]
        );
        assert_eq!((red.primary_pt, red.primary), (111, b"xy".as_slice()));
        let mut out = Vec::new();
        build(111, b"xy", &[(960, &[1, 2, 3])], &mut out).unwrap();
        assert_eq!(out, wire);
    }

    #[test]
    fn a_primary_alone_and_an_empty_primary() {
        assert_eq!(
            parse(&[111, 9, 9]).unwrap(),
            RedPayload {
                redundant: vec![],
                primary_pt: 111,
                primary: &[9, 9],
            }
        );
        let red = parse(&[0xef, 0, 0, 1, 111, 7]).unwrap();
        assert_eq!(red.redundant[0].data, &[7]);
        assert!(red.primary.is_empty());
    }

    #[test]
    fn bad_payloads_are_refused() {
        assert_eq!(parse(&[]), Err(RedError::Truncated));
        // A block header cut short, and blocks longer than the payload.
        assert_eq!(parse(&[0xef, 0x0f]), Err(RedError::Truncated));
        assert_eq!(parse(&[0xef, 0, 0, 9, 111, 1, 2]), Err(RedError::Truncated));
        // No primary header after the blocks.
        assert_eq!(parse(&[0xef, 0, 0, 0]), Err(RedError::Truncated));
        let many: Vec<u8> = std::iter::repeat_n([0xef, 0, 0, 0], MAX_REDUNDANT_BLOCKS + 1)
            .flatten()
            .chain([111])
            .collect();
        assert_eq!(parse(&many), Err(RedError::TooManyBlocks));
        let mut out = Vec::new();
        let long = vec![0; MAX_BLOCK_LEN + 1];
        assert_eq!(
            build(111, b"", &[(960, &long)], &mut out),
            Err(RedError::BlockTooLong(MAX_BLOCK_LEN + 1))
        );
        assert_eq!(
            build(111, b"", &[(1 << 14, b"x")], &mut out),
            Err(RedError::OffsetTooLarge(1 << 14))
        );
        assert_eq!(
            build(200, b"", &[], &mut out),
            Err(RedError::PayloadType(200))
        );
    }

    proptest! {
        #[test]
        fn build_then_parse_gives_the_blocks_back(
            pt in 0u8..128,
            primary in proptest::collection::vec(any::<u8>(), 0..300),
            blocks in proptest::collection::vec(
                (0u32..=MAX_TIMESTAMP_OFFSET, proptest::collection::vec(any::<u8>(), 0..200)),
                0..=MAX_REDUNDANT_BLOCKS,
            ),
        ) {
            let refs: Vec<(u32, &[u8])> = blocks.iter().map(|(o, d)| (*o, d.as_slice())).collect();
            let mut out = Vec::new();
            build(pt, &primary, &refs, &mut out).unwrap();
            let red = parse(&out).unwrap();
            prop_assert_eq!(red.primary_pt, pt);
            prop_assert_eq!(red.primary, primary.as_slice());
            prop_assert_eq!(red.redundant.len(), blocks.len());
            for (b, (o, d)) in red.redundant.iter().zip(&blocks) {
                prop_assert_eq!((b.pt, u32::from(b.timestamp_offset), b.data), (pt, *o, d.as_slice()));
            }
        }

        #[test]
        fn any_bytes_parse_or_are_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(red) = parse(&bytes) {
                let total: usize = red.redundant.iter().map(|b| b.data.len()).sum::<usize>()
                    + red.primary.len();
                prop_assert!(total <= bytes.len());
            }
        }
    }
}
