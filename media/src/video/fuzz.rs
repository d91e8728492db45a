//! Fuzz target body for the frame buffer, shared by `media/fuzz` and the unit tests.

use super::{FrameBuffer, FrameBufferConfig, VideoPacket};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// Drives a small frame buffer with packets and clock steps decoded from `data` (5 bytes
/// each: sequence number, timestamp index, flags, milliseconds to advance) and checks its
/// guarantees: bounded memory, frames in sequence order and whole, no deadline left in
/// the past after polling.
pub fn frame_buffer(data: &[u8]) {
    let t0 = Instant::now();
    let config = FrameBufferConfig {
        max_packets: 64,
        max_frames: 8,
        ..FrameBufferConfig::default()
    };
    let mut buffer = FrameBuffer::new(config);
    let mut now = t0;
    let mut nacks = Vec::new();
    let mut last_seq: Option<u64> = None;
    for chunk in data.chunks_exact(5) {
        let &[s0, s1, ts, flags, step] = chunk else {
            continue;
        };
        now += Duration::from_millis(u64::from(step));
        let packet = VideoPacket {
            seq: u16::from_be_bytes([s0, s1]),
            timestamp: u32::from(ts),
            marker: flags & 1 != 0,
            keyframe: flags & 2 != 0,
            starts_frame: flags & 4 != 0,
            payload: Bytes::copy_from_slice(chunk),
        };
        buffer.insert(packet, now);
        nacks.clear();
        buffer.poll_nack(now, &mut nacks);
        buffer.poll_keyframe_request(now);
        // Having polled everything at `now`, the next deadline lies in the future.
        assert!(buffer.poll_timeout().is_none_or(|deadline| deadline > now));
        assert!(buffer.buffered_packets() <= 64);
        assert_eq!(buffer.buffered_packets(), buffer.occupied_slots());
        while let Some(frame) = buffer.poll_frame() {
            assert!(frame.last_seq >= frame.first_seq);
            assert_eq!(
                frame.payloads.len() as u64,
                frame.last_seq - frame.first_seq + 1
            );
            assert!(
                last_seq.is_none_or(|l| frame.first_seq > l),
                "frames out of order"
            );
            last_seq = Some(frame.last_seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn frame_buffer_target(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            frame_buffer(&data);
        }

        /// Sequence numbers near each other, so frames actually assemble.
        #[test]
        fn frame_buffer_target_dense(records in proptest::collection::vec((0u16..40, 0u8..6, 0u8..8, 0u8..50), 0..300)) {
            let mut data = Vec::new();
            for (seq, ts, flags, step) in records {
                data.extend(seq.to_be_bytes());
                data.extend([ts, flags, step]);
            }
            frame_buffer(&data);
        }
    }
}
