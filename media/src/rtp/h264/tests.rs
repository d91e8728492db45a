//! Payload inspection tests and packetize → network → depacketize round trips.

use super::*;
use crate::rtp::PayloadPacket;
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng, rngs::StdRng};

#[test]
fn inspect_finds_keyframe_parts() {
    // STAP-A with SPS, PPS, IDR.
    let stap = [0x78, 0, 2, 0x67, 1, 0, 2, 0x68, 2, 0, 2, 0x65, 3];
    let info = inspect_payload(&stap).unwrap();
    assert_eq!(
        info,
        PayloadInfo {
            idr: true,
            sps: true,
            pps: true,
            starts_access_unit: true
        }
    );
    // FU-A start of an IDR, then a middle fragment that says nothing.
    assert!(inspect_payload(&[0x7c, 0x85, 1]).unwrap().idr);
    assert!(!inspect_payload(&[0x7c, 0x05, 1]).unwrap().idr);
    // Delta slice.
    assert_eq!(inspect_payload(&[0x41, 1]).unwrap(), PayloadInfo::default());
    assert!(inspect_payload(&[0x09, 0x10]).unwrap().starts_access_unit);
}

#[test]
fn inspect_rejects_bad_payloads() {
    assert_eq!(inspect_payload(&[]), Err(H264Error::Empty));
    assert_eq!(inspect_payload(&[0x00]), Err(H264Error::ReservedNalType(0)));
    assert_eq!(
        inspect_payload(&[0x1e]),
        Err(H264Error::ReservedNalType(30))
    );
    assert_eq!(
        inspect_payload(&[0x79, 0, 0]),
        Err(H264Error::NotInMode1(25))
    );
    assert_eq!(
        inspect_payload(&[0x7d, 0x85, 1]),
        Err(H264Error::NotInMode1(29))
    );
    assert_eq!(
        inspect_payload(&[0x78, 0, 5, 0x67]),
        Err(H264Error::MalformedStapA)
    );
    assert_eq!(
        inspect_payload(&[0x78, 0, 0]),
        Err(H264Error::MalformedStapA)
    );
    assert_eq!(
        inspect_payload(&[0x78, 0, 1, 0x7c]),
        Err(H264Error::NestedNalType(28))
    );
    assert_eq!(inspect_payload(&[0x7c]), Err(H264Error::FuTooShort));
}

/// A random access unit: NAL units whose bytes avoid zero, so no start code is emulated
/// (an encoder's emulation prevention guarantees the same).
fn access_unit(rng: &mut StdRng, keyframe: bool) -> Vec<u8> {
    let mut types: Vec<u8> = if keyframe { vec![7, 8, 5] } else { vec![1] };
    if rng.random_bool(0.3) {
        types.insert(0, 9);
    }
    if rng.random_bool(0.3) {
        types.push(if keyframe { 5 } else { 1 });
    }
    let mut au = Vec::new();
    for t in types {
        au.extend_from_slice(&START_CODE);
        au.push(0x60 | t);
        let len = match t {
            7..=9 => rng.random_range(1..20),
            _ if rng.random_bool(0.3) => rng.random_range(1..60),
            _ => rng.random_range(1..5000),
        };
        au.extend((0..len).map(|_| rng.random_range(1..=255u8)));
    }
    au
}

/// Packets of a stream of access units, with sequence numbers from `seq`.
fn send(
    rng: &mut StdRng,
    count: usize,
    mtu: usize,
    seq: u16,
) -> (Vec<Vec<u8>>, Vec<(u16, PayloadPacket)>) {
    let mut packetizer = H264Packetizer::new(mtu).unwrap();
    let mut units = Vec::new();
    let mut packets = Vec::new();
    let mut out = Vec::new();
    for i in 0..count {
        let au = access_unit(rng, i % 10 == 0);
        out.clear();
        packetizer
            .packetize(&au, (i as u32).wrapping_mul(3000), &mut out)
            .unwrap();
        for p in out.drain(..) {
            assert!(p.payload.len() <= mtu);
            packets.push((seq.wrapping_add(packets.len() as u16), p));
        }
        units.push(au);
    }
    (units, packets)
}

fn drain(d: &mut H264Depacketizer) -> Vec<Output> {
    std::iter::from_fn(|| d.poll_output()).collect()
}

fn no_prepend() -> H264Depacketizer {
    H264Depacketizer::new(DepacketizerConfig {
        prepend_parameter_sets: false,
        ..Default::default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Lossless in-order delivery gives back every access unit byte for byte.
    #[test]
    fn lossless_round_trip(seed: u64, mtu in 100usize..1500, seq: u16) {
        let mut rng = StdRng::seed_from_u64(seed);
        let (units, packets) = send(&mut rng, 30, mtu, seq);
        let mut d = no_prepend();
        let mut outputs = Vec::new();
        for (seq, p) in &packets {
            d.push(*seq, p.timestamp, p.marker, &p.payload).unwrap();
            outputs.extend(drain(&mut d));
        }
        let got: Vec<Vec<u8>> = outputs
            .into_iter()
            .map(|o| match o {
                Output::AccessUnit(au) => au.data.to_vec(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        prop_assert_eq!(got, units);
    }

    /// Loss, duplication and local reordering: every access unit that comes out equals
    /// the one sent at its timestamp; every unit whose packets all arrived in order
    /// after an intact predecessor comes out; the rest that were touched are reported.
    #[test]
    fn lossy_round_trip_never_outputs_garbage(seed: u64, mtu in 100usize..1500, loss in 0.0f64..0.2, reorder: bool) {
        let mut rng = StdRng::seed_from_u64(seed);
        let start: u16 = rng.random();
        let (units, packets) = send(&mut rng, 40, mtu, start);
        let mut delivered: Vec<usize> = Vec::new();
        for i in 0..packets.len() {
            if rng.random_bool(loss) { continue; }
            delivered.push(i);
            if rng.random_bool(0.05) { delivered.push(i); }
        }
        if reorder {
            for chunk in delivered.chunks_mut(3) {
                chunk.shuffle(&mut rng);
            }
        }
        let mut d = no_prepend();
        let mut accepted = vec![false; packets.len()];
        let mut last: Option<usize> = None;
        let mut outputs = Vec::new();
        for &i in &delivered {
            let (seq, p) = &packets[i];
            let r = d.push(*seq, p.timestamp, p.marker, &p.payload);
            outputs.extend(drain(&mut d));
            if last.is_some_and(|l| i <= l) {
                prop_assert_eq!(r, Err(H264Error::OutOfOrder));
            } else {
                prop_assert_eq!(r, Ok(()));
                accepted[i] = true;
                last = Some(i);
            }
        }
        let index_of = |ts: u32| (ts / 3000) as usize;
        let mut complete = vec![false; units.len()];
        let mut reported = vec![false; units.len()];
        for o in &outputs {
            match o {
                Output::AccessUnit(au) => {
                    let i = index_of(au.timestamp);
                    prop_assert_eq!(&au.data[..], &units[i][..]);
                    complete[i] = true;
                }
                Output::Dropped { timestamp, reason } => {
                    prop_assert_eq!(reason, &DropReason::MissingPackets);
                    reported[index_of(*timestamp)] = true;
                }
            }
        }
        // Expected: a unit is output iff all its packets and the packet before it
        // were accepted (the first packet of the stream has no predecessor to check).
        let mut first = 0;
        for (u, done) in complete.iter().enumerate() {
            let last_packet = (first..packets.len()).find(|&k| packets[k].1.marker).unwrap();
            let all = (first..=last_packet).all(|k| accepted[k]);
            let predecessor = first == 0 || accepted[first - 1];
            if all && predecessor {
                prop_assert!(*done, "unit {} should be complete", u);
            }
            let touched = (first..=last_packet).any(|k| accepted[k]);
            // Not the last unit: its loss is only known once a later packet arrives.
            let later = (last_packet + 1..packets.len()).any(|k| accepted[k]);
            if touched && !*done && later {
                prop_assert!(reported[u], "unit {} was damaged but not reported", u);
            }
            first = last_packet + 1;
        }
    }

    #[test]
    fn arbitrary_payloads_never_panic(payloads in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..300), any::<bool>(), 0u32..3), 1..30)) {
        let mut d = H264Depacketizer::default();
        for (seq, (payload, marker, ts)) in payloads.iter().enumerate() {
            let _ = d.push(seq as u16, *ts, *marker, payload);
            let _ = inspect_payload(payload);
        }
        for o in drain(&mut d) {
            if let Output::AccessUnit(au) = o {
                // Whatever comes out is a well-formed Annex-B stream.
                prop_assert!(nal_units(&au.data).is_ok());
            }
        }
        let _ = d.depacketize_frame(0, payloads.iter().map(|(p, _, _)| &p[..]));
    }
}
