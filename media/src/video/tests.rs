//! Frame buffer tests: assembly, ordering, NACK and PLI policy, limits, and seeded
//! network simulations with retransmission.

use super::*;
use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Packets of frame `index`: `count` packets from `seq`, keyframe or not. Payloads name
/// the frame and the packet, so output can be checked against what was sent.
fn frame(index: u32, seq: u16, count: u16, keyframe: bool) -> Vec<VideoPacket> {
    (0..count)
        .map(|i| VideoPacket {
            seq: seq.wrapping_add(i),
            timestamp: index.wrapping_mul(3000),
            marker: i + 1 == count,
            keyframe,
            starts_frame: keyframe && i == 0,
            payload: Bytes::from(vec![(index >> 8) as u8, index as u8, i as u8]),
        })
        .collect()
}

/// A stream: frame 0 a keyframe, then deltas, `sizes[i]` packets each.
fn stream(sizes: &[u16], seq: u16) -> Vec<Vec<VideoPacket>> {
    let mut next = seq;
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let f = frame(i as u32, next, n, i == 0);
            next = next.wrapping_add(n);
            f
        })
        .collect()
}

fn frames(buffer: &mut FrameBuffer) -> Vec<Frame> {
    std::iter::from_fn(|| buffer.poll_frame()).collect()
}

fn timestamps(frames: &[Frame]) -> Vec<u32> {
    frames.iter().map(|f| f.timestamp / 3000).collect()
}

#[test]
fn in_order_frames_come_out_whole_and_in_order() {
    let t0 = Instant::now();
    let mut b = FrameBuffer::new(FrameBufferConfig::default());
    let sent = stream(&[5, 1, 3, 2], 65_530);
    for (i, f) in sent.iter().enumerate() {
        for p in f {
            assert_eq!(
                b.insert(p.clone(), t0 + ms(33 * i as u64)),
                InsertOutcome::Buffered
            );
        }
    }
    let out = frames(&mut b);
    assert_eq!(timestamps(&out), [0, 1, 2, 3]);
    for (f, s) in out.iter().zip(&sent) {
        let payloads: Vec<Bytes> = s.iter().map(|p| p.payload.clone()).collect();
        assert_eq!(f.payloads, payloads);
    }
    assert!(out[0].keyframe && !out[1].keyframe);
    assert_eq!(
        out[1].first_seq,
        out[0].last_seq + 1,
        "sequence unwrapped across 65535"
    );
    let stats = b.stats(t0 + ms(100));
    assert_eq!(
        (
            stats.frames_received,
            stats.frames_decodable,
            stats.keyframes_decodable
        ),
        (4, 4, 1)
    );
    assert_eq!(stats.frames_per_second, 4);
    assert_eq!(b.buffered_packets(), 0);
    assert!(!b.poll_keyframe_request(t0 + ms(5000)));
}

#[test]
fn reordered_packets_are_put_back_in_order() {
    let t0 = Instant::now();
    let mut b = FrameBuffer::new(FrameBufferConfig::default());
    let sent = stream(&[3, 2, 2], 100);
    let all: Vec<VideoPacket> = sent.concat();
    // Deliver: 0 2 1 | 5 3 6 4  (frame 2 completes before frame 1).
    for i in [0, 2, 1, 5, 3, 6] {
        b.insert(all[i].clone(), t0);
    }
    assert_eq!(timestamps(&frames(&mut b)), [0]);
    b.insert(all[4].clone(), t0);
    assert_eq!(timestamps(&frames(&mut b)), [1, 2]);
    assert_eq!(b.insert(all[4].clone(), t0), InsertOutcome::Late);
}

#[test]
fn oversized_payloads_are_refused() {
    let t0 = Instant::now();
    let mut b = FrameBuffer::new(FrameBufferConfig::default());
    let mut p = frame(0, 10, 1, true).remove(0);
    p.payload = Bytes::from(vec![0; 4097]);
    assert_eq!(b.insert(p, t0), InsertOutcome::Oversized);
    assert_eq!(b.buffered_packets(), 0);
    assert_eq!(b.stats(t0).packets_received, 0);
}

#[test]
fn duplicates_are_counted_and_ignored() {
    let t0 = Instant::now();
    let mut b = FrameBuffer::new(FrameBufferConfig::default());
    let f = frame(0, 10, 3, true);
    b.insert(f[0].clone(), t0);
    assert_eq!(b.insert(f[0].clone(), t0), InsertOutcome::Duplicate);
    assert_eq!(b.stats(t0).packets_duplicated, 1);
}

#[test]
fn a_lost_packet_is_nacked_and_its_retransmission_releases_the_frames() {
    let t0 = Instant::now();
    let mut b = FrameBuffer::new(FrameBufferConfig::default());
    let all: Vec<VideoPacket> = stream(&[2, 3, 1, 1], 0).concat();
    for (i, p) in all.iter().enumerate() {
        if i != 3 {
            b.insert(p.clone(), t0);
        }
    }
    assert_eq!(timestamps(&frames(&mut b)), [0]);
    let mut nacks = Vec::new();
    b.poll_nack(t0, &mut nacks);
    assert!(nacks.is_empty(), "reordering tolerance first");
    assert_eq!(b.poll_timeout(), Some(t0 + ms(5)));
    b.poll_nack(t0 + ms(5), &mut nacks);
    assert_eq!(nacks, [3]);
    b.insert(all[3].clone(), t0 + ms(60));
    assert_eq!(timestamps(&frames(&mut b)), [1, 2, 3]);
    let stats = b.stats(t0 + ms(60));
    assert_eq!(
        (stats.nack_count, stats.packets_recovered, stats.pli_count),
        (1, 1, 0)
    );
    nacks.clear();
    b.poll_nack(t0 + ms(500), &mut nacks);
    assert!(
        nacks.is_empty(),
        "a recovered packet is not asked for again"
    );
}

#[test]
fn an_unrepairable_gap_requests_a_keyframe_and_the_keyframe_resumes() {
    let t0 = Instant::now();
    let config = FrameBufferConfig {
        nack: NackConfig {
            max_retries: 2,
            ..NackConfig::default()
        },
        ..FrameBufferConfig::default()
    };
    let mut b = FrameBuffer::new(config);
    let mut all: Vec<VideoPacket> = stream(&[2, 2, 2], 0).concat();
    all.remove(2); // first packet of frame 1
    for p in &all {
        b.insert(p.clone(), t0);
    }
    assert_eq!(frames(&mut b).len(), 1);
    let mut nacks = Vec::new();
    for t in [5, 105, 205] {
        assert!(!b.poll_keyframe_request(t0 + ms(t)));
        b.poll_nack(t0 + ms(t), &mut nacks);
    }
    assert_eq!(nacks, [2, 2]);
    // The third deadline gave up: a keyframe is due at once, then throttled.
    assert!(b.poll_keyframe_request(t0 + ms(205)));
    assert!(!b.poll_keyframe_request(t0 + ms(300)));
    assert_eq!(b.poll_timeout(), Some(t0 + ms(705)));
    assert!(b.poll_keyframe_request(t0 + ms(705)));
    // The keyframe arrives: frames 1 and 2 are dropped, decoding resumes.
    for p in frame(3, 6, 3, true) {
        b.insert(p, t0 + ms(800));
    }
    let out = frames(&mut b);
    assert_eq!(timestamps(&out), [3]);
    assert!(out[0].keyframe);
    let stats = b.stats(t0 + ms(800));
    assert_eq!(stats.frames_dropped, 2);
    assert_eq!(stats.pli_count, 2);
    assert_eq!(stats.packets_unrecovered, 1);
    assert!(!b.poll_keyframe_request(t0 + ms(2000)));
}

#[test]
fn a_stream_joined_mid_way_waits_for_a_keyframe_and_asks_for_one() {
    let t0 = Instant::now();
    let mut b = FrameBuffer::new(FrameBufferConfig::default());
    for (i, p) in frame(5, 1000, 2, false).into_iter().enumerate() {
        b.insert(p, t0 + ms(i as u64));
    }
    assert!(b.poll_frame().is_none());
    assert!(!b.poll_keyframe_request(t0 + ms(100)));
    assert_eq!(b.poll_timeout(), Some(t0 + ms(500)));
    assert!(b.poll_keyframe_request(t0 + ms(500)));
    // A keyframe whose first packet says it opens a frame is decodable at once.
    for p in frame(6, 1002, 3, true) {
        b.insert(p, t0 + ms(600));
    }
    assert_eq!(timestamps(&frames(&mut b)), [6]);
    assert_eq!(b.stats(t0).frames_dropped, 1);
}

#[test]
fn freezes_are_counted() {
    let t0 = Instant::now();
    let mut b = FrameBuffer::new(FrameBufferConfig::default());
    let sent = stream(&[1; 20], 0);
    let mut t = t0;
    for (i, f) in sent.iter().enumerate() {
        // Frame 15 arrives 600 ms late: a freeze (threshold max(100, 183) ms at 30 fps).
        t += if i == 15 { ms(600) } else { ms(33) };
        for p in f {
            b.insert(p.clone(), t);
        }
    }
    let stats = b.stats(t);
    assert_eq!(stats.freeze_count, 1);
    assert_eq!(stats.total_freezes_duration, ms(600));
}

#[test]
fn memory_is_bounded_behind_a_permanent_gap() {
    let t0 = Instant::now();
    let config = FrameBufferConfig {
        max_packets: 64,
        max_frames: 8,
        ..FrameBufferConfig::default()
    };
    let mut b = FrameBuffer::new(config);
    let mut all: Vec<VideoPacket> = stream(&[2; 200], 0).concat();
    all.remove(2);
    for (i, p) in all.iter().enumerate() {
        b.insert(p.clone(), t0 + ms(i as u64));
        assert!(b.buffered_packets() <= 64);
    }
    // Only frame 0 came out; the rest were dropped as the limits were hit, and a
    // keyframe was asked for.
    assert_eq!(frames(&mut b).len(), 1);
    let stats = b.stats(t0);
    assert!(stats.frames_dropped > 150, "{stats:?}");
    assert!(b.poll_keyframe_request(t0 + ms(400)));
}

#[test]
fn a_sequence_jump_restarts_at_a_keyframe() {
    let t0 = Instant::now();
    let mut b = FrameBuffer::new(FrameBufferConfig::default());
    for p in frame(0, 0, 2, true) {
        b.insert(p, t0);
    }
    for p in frame(1, 30_000, 2, false) {
        b.insert(p, t0);
    }
    for p in frame(2, 30_002, 2, true) {
        b.insert(p, t0);
    }
    assert_eq!(timestamps(&frames(&mut b)), [0, 2]);
}

/// One simulated call: a 30 fps sender that retransmits on NACK and sends a keyframe
/// on PLI, a network with delay, jitter and loss, and the buffer polled every ms.
struct Simulation {
    /// Frames output, with what was sent for each.
    output: Vec<Frame>,
    sent: HashMap<u32, Vec<Bytes>>,
    frames_sent: u32,
    stats: FrameBufferStats,
    max_buffered: usize,
}

fn simulate(seed: u64, loss: f64, jitter_ms: u64, seconds: u64) -> Simulation {
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = Instant::now();
    let mut b = FrameBuffer::new(FrameBufferConfig::default());
    b.set_rtt(ms(60));
    let mut in_flight: BinaryHeap<Reverse<(Duration, u64, u16)>> = BinaryHeap::new();
    let mut by_seq: HashMap<u16, VideoPacket> = HashMap::new();
    let mut sent = HashMap::new();
    let mut seq: u16 = rng.random();
    let mut keyframe_due: Option<Duration> = Some(Duration::ZERO);
    let (mut output, mut max_buffered, mut nacks, mut order) = (Vec::new(), 0, Vec::new(), 0u64);
    let mut frames_sent = 0;
    let transmit =
        |now: Duration, s: u16, rng: &mut StdRng, heap: &mut BinaryHeap<_>, order: &mut u64| {
            if !rng.random_bool(loss) {
                *order += 1;
                let delay = ms(30 + rng.random_range(0..=jitter_ms));
                heap.push(Reverse((now + delay, *order, s)));
            }
        };
    for step in 0..seconds * 1000 {
        let now = ms(step);
        if step % 33 == 0 {
            let index = frames_sent;
            frames_sent += 1;
            let keyframe = keyframe_due.is_some_and(|t| t <= now);
            if keyframe {
                keyframe_due = None;
            }
            let count = if keyframe { 8 } else { rng.random_range(1..5) };
            let packets = frame(index, seq, count, keyframe);
            seq = seq.wrapping_add(count);
            sent.insert(
                index.wrapping_mul(3000),
                packets.iter().map(|p| p.payload.clone()).collect(),
            );
            for p in packets {
                transmit(now, p.seq, &mut rng, &mut in_flight, &mut order);
                by_seq.insert(p.seq, p);
            }
        }
        while in_flight.peek().is_some_and(|Reverse((t, _, _))| *t <= now) {
            let Some(Reverse((_, _, s))) = in_flight.pop() else {
                break;
            };
            b.insert(by_seq[&s].clone(), t0 + now);
            max_buffered = max_buffered.max(b.buffered_packets());
        }
        output.extend(std::iter::from_fn(|| b.poll_frame()));
        nacks.clear();
        b.poll_nack(t0 + now, &mut nacks);
        for &s in &nacks {
            // The NACK takes one-way delay to reach the sender, which resends at once.
            transmit(now + ms(30), s, &mut rng, &mut in_flight, &mut order);
        }
        if b.poll_keyframe_request(t0 + now) && keyframe_due.is_none() {
            keyframe_due = Some(now + ms(30));
        }
    }
    Simulation {
        output,
        sent,
        frames_sent,
        stats: b.stats(t0 + ms(seconds * 1000)),
        max_buffered,
    }
}

/// What every simulation must show: frames in order, each equal to what was sent, each
/// delta frame directly continuing the previous output frame.
fn check_invariants(sim: &Simulation) -> Result<(), TestCaseError> {
    for pair in sim.output.windows(2) {
        prop_assert!(pair[1].first_seq > pair[0].last_seq);
        if !pair[1].keyframe {
            prop_assert_eq!(pair[1].first_seq, pair[0].last_seq + 1);
        }
    }
    for f in &sim.output {
        prop_assert_eq!(Some(&f.payloads), sim.sent.get(&f.timestamp));
    }
    prop_assert!(sim.output.first().is_none_or(|f| f.keyframe));
    prop_assert!(sim.max_buffered <= 2048);
    Ok(())
}

#[test]
fn lossless_jittery_network_delivers_every_frame() {
    let sim = simulate(7, 0.0, 40, 5);
    check_invariants(&sim).unwrap();
    // Frames sent in the last 70 ms may still be in flight.
    assert!(sim.output.len() as u32 >= sim.frames_sent - 3);
    assert_eq!(sim.stats.pli_count, 0);
    assert_eq!(sim.stats.frames_dropped, 0);
    // Up to 40 ms of reordering: the wait before a first NACK adapts, so few packets
    // that were only late are requested (a fixed 5 ms wait requested over a quarter).
    assert!(
        sim.stats.nack_count * 10 < sim.stats.packets_received,
        "{:?}",
        sim.stats
    );
}

#[test]
fn nack_repairs_moderate_loss() {
    // No jitter, so every recovered packet is a retransmission, not a reordering.
    let sim = simulate(11, 0.05, 0, 10);
    check_invariants(&sim).unwrap();
    assert!(sim.stats.packets_recovered > 0);
    assert!(sim.stats.nack_count >= sim.stats.packets_recovered);
    // With retransmission nearly every frame survives 5% loss.
    assert!(
        sim.output.len() as f64 >= 0.9 * f64::from(sim.frames_sent),
        "{} of {}",
        sim.output.len(),
        sim.frames_sent
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn random_networks_keep_the_invariants(seed: u64, loss in 0.0f64..0.3, jitter in 0u64..120) {
        let sim = simulate(seed, loss, jitter, 4);
        check_invariants(&sim)?;
        prop_assert!(sim.stats.frames_decodable == sim.output.len() as u64);
    }

    /// Arbitrary packets in arbitrary order never panic and never break the limits.
    #[test]
    fn arbitrary_packets_never_panic(packets in proptest::collection::vec((any::<u16>(), 0u32..8, any::<bool>(), any::<bool>(), any::<bool>()), 0..400)) {
        let t0 = Instant::now();
        let config = FrameBufferConfig { max_packets: 64, max_frames: 4, ..FrameBufferConfig::default() };
        let mut b = FrameBuffer::new(config);
        let mut nacks = Vec::new();
        for (i, (seq, ts, marker, keyframe, starts)) in packets.into_iter().enumerate() {
            let now = t0 + ms(i as u64);
            let p = VideoPacket { seq: seq % 200, timestamp: ts, marker, keyframe, starts_frame: starts, payload: Bytes::new() };
            b.insert(p, now);
            b.poll_nack(now, &mut nacks);
            b.poll_keyframe_request(now);
            prop_assert!(b.buffered_packets() <= 64);
        }
        let out = frames(&mut b);
        prop_assert!(out.len() <= 4);
        for f in out {
            prop_assert!(f.last_seq >= f.first_seq);
            prop_assert_eq!(f.payloads.len() as u64, f.last_seq - f.first_seq + 1);
        }
    }
}
