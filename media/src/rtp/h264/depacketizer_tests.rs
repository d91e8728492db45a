//! Depacketizer tests: FU-A sequences, STAP-A, parameter sets, boundaries and limits.

use super::*;

const SPS: [u8; 4] = [0x67, 0x42, 0x00, 0x1f];
const PPS: [u8; 3] = [0x68, 0xce, 0x3c];

fn annexb(units: &[&[u8]]) -> Vec<u8> {
    units
        .iter()
        .flat_map(|u| START_CODE.iter().chain(u.iter()).copied())
        .collect()
}

fn outputs(d: &mut H264Depacketizer) -> Vec<Output> {
    std::iter::from_fn(|| d.poll_output()).collect()
}

fn only_unit(d: &mut H264Depacketizer) -> AccessUnit {
    match outputs(d).as_slice() {
        [Output::AccessUnit(au)] => au.clone(),
        other => panic!("expected one access unit, got {other:?}"),
    }
}

#[test]
fn fu_a_is_reassembled_with_its_header_rebuilt() {
    let mut d = H264Depacketizer::default();
    d.push(
        10,
        90,
        false,
        &[0x78, 0, 4, 0x67, 0x42, 0, 0x1f, 0, 3, 0x68, 0xce, 0x3c],
    )
    .unwrap();
    d.push(11, 90, false, &[0x7c, 0x85, 1, 2]).unwrap();
    d.push(12, 90, false, &[0x7c, 0x05, 3]).unwrap();
    d.push(13, 90, true, &[0x7c, 0x45, 4]).unwrap();
    let au = only_unit(&mut d);
    assert_eq!(
        &au.data[..],
        &annexb(&[&SPS, &PPS, &[0x65, 1, 2, 3, 4]])[..]
    );
    assert!(au.keyframe && au.has_parameter_sets && !au.parameter_sets_prepended);
    assert_eq!(d.stats().keyframes, 1);
}

#[test]
fn bad_fu_sequences_are_rejected_and_the_unit_dropped() {
    let cases: [(&[&[u8]], H264Error); 5] = [
        (
            &[&[0x09, 0x10], &[0x7c, 0x05, 1]],
            H264Error::FuWithoutStart,
        ),
        (
            &[&[0x09, 0x10], &[0x7c, 0x85, 1], &[0x7c, 0x85, 1]],
            H264Error::FuRestarted,
        ),
        (&[&[0x09, 0x10], &[0x7c, 0xc5, 1]], H264Error::FuStartAndEnd),
        (
            &[&[0x09, 0x10], &[0x7c, 0x85, 1], &[0x7c, 0x41, 1]],
            H264Error::FuTypeChanged,
        ),
        (
            &[&[0x09, 0x10], &[0x7c, 0x85, 1], &[0x41, 1]],
            H264Error::FuUnterminated,
        ),
    ];
    for (packets, error) in cases {
        let mut d = H264Depacketizer::default();
        let mut last = Ok(());
        for (i, p) in packets.iter().enumerate() {
            last = d.push(i as u16, 0, false, p);
        }
        assert_eq!(last, Err(error.clone()));
        // The next access unit flushes the broken one as dropped.
        d.push(packets.len() as u16, 3000, true, &[0x09, 0x10])
            .unwrap();
        let out = outputs(&mut d);
        assert_eq!(
            out[0],
            Output::Dropped {
                timestamp: 0,
                reason: DropReason::Malformed(error)
            }
        );
        assert!(matches!(out[1], Output::AccessUnit(_)));
    }
}

#[test]
fn a_marker_inside_an_open_fu_drops_the_unit() {
    let mut d = H264Depacketizer::default();
    d.push(0, 0, false, &[0x09, 0x10]).unwrap();
    d.push(1, 0, true, &[0x7c, 0x85, 1]).unwrap();
    assert_eq!(
        outputs(&mut d),
        [Output::Dropped {
            timestamp: 0,
            reason: DropReason::Malformed(H264Error::FuUnterminated)
        }]
    );
}

#[test]
fn a_sequence_gap_drops_the_unit_and_reports_it() {
    let mut d = H264Depacketizer::default();
    d.push(0, 0, false, &[0x09, 0x10]).unwrap();
    d.push(1, 0, false, &[0x7c, 0x85, 1]).unwrap();
    // Sequence 2 (the FU end) is lost; 3 starts the next unit with an AUD.
    d.push(3, 3000, true, &[0x09, 0x10]).unwrap();
    let out = outputs(&mut d);
    assert_eq!(
        out[0],
        Output::Dropped {
            timestamp: 0,
            reason: DropReason::MissingPackets
        }
    );
    assert!(matches!(&out[1], Output::AccessUnit(au) if au.timestamp == 3000));
    assert_eq!(d.stats().dropped_missing, 1);
}

#[test]
fn a_gap_before_a_unit_that_does_not_provably_start_drops_it_too() {
    let mut d = H264Depacketizer::default();
    d.push(0, 0, true, &[0x09, 0x10]).unwrap();
    // Sequence 1 lost: it may have been the first slice of the unit at 3000.
    d.push(2, 3000, true, &[0x41, 1]).unwrap();
    assert_eq!(
        outputs(&mut d)[1],
        Output::Dropped {
            timestamp: 3000,
            reason: DropReason::MissingPackets
        }
    );
}

#[test]
fn a_timestamp_change_without_marker_closes_a_contiguous_unit() {
    let mut d = H264Depacketizer::default();
    d.push(0, 0, false, &[0x09, 0x10]).unwrap();
    d.push(1, 0, false, &[0x41, 1]).unwrap();
    d.push(2, 3000, false, &[0x09, 0x10]).unwrap();
    assert_eq!(
        &only_unit(&mut d).data[..],
        &annexb(&[&[0x09, 0x10], &[0x41, 1]])[..]
    );
}

#[test]
fn out_of_order_packets_are_refused() {
    let mut d = H264Depacketizer::default();
    d.push(5, 0, false, &[0x09, 0x10]).unwrap();
    assert_eq!(d.push(4, 0, false, &[0x41, 1]), Err(H264Error::OutOfOrder));
    assert_eq!(d.push(5, 0, false, &[0x41, 1]), Err(H264Error::OutOfOrder));
    assert_eq!(d.stats().out_of_order, 2);
}

#[test]
fn cached_parameter_sets_are_prepended_to_a_bare_idr() {
    let mut d = H264Depacketizer::default();
    d.push(
        0,
        0,
        true,
        &[
            0x78, 0, 4, 0x67, 0x42, 0, 0x1f, 0, 3, 0x68, 0xce, 0x3c, 0, 2, 0x65, 9,
        ],
    )
    .unwrap();
    only_unit(&mut d);
    // A later IDR without SPS/PPS (AUD first so it provably starts the unit).
    d.push(1, 3000, true, &[0x78, 0, 2, 0x09, 0x10, 0, 2, 0x65, 7])
        .unwrap();
    let au = only_unit(&mut d);
    assert!(au.parameter_sets_prepended && au.has_parameter_sets);
    assert_eq!(
        &au.data[..],
        &annexb(&[&SPS, &PPS, &[0x09, 0x10], &[0x65, 7]])[..]
    );
    // With prepending off, the IDR comes through as it is.
    let mut d = H264Depacketizer::new(DepacketizerConfig {
        prepend_parameter_sets: false,
        ..Default::default()
    });
    d.push(
        0,
        0,
        true,
        &[0x78, 0, 4, 0x67, 0x42, 0, 0x1f, 0, 3, 0x68, 0xce, 0x3c],
    )
    .unwrap();
    d.push(1, 3000, true, &[0x65, 7]).unwrap();
    let out = outputs(&mut d);
    assert!(matches!(&out[1], Output::AccessUnit(au) if !au.has_parameter_sets && au.keyframe));
}

#[test]
fn fragmented_parameter_sets_are_cached() {
    let mut d = H264Depacketizer::default();
    d.push(0, 0, false, &[0x7c, 0x87, 0x42, 0x00]).unwrap();
    d.push(1, 0, false, &[0x7c, 0x47, 0x1f]).unwrap();
    d.push(2, 0, true, &[0x68, 0xce, 0x3c]).unwrap();
    only_unit(&mut d);
    let au = d.depacketize_frame(3000, [&[0x65u8, 1][..]]).unwrap();
    assert_eq!(&au.data[..], &annexb(&[&SPS, &PPS, &[0x65, 1]])[..]);
}

#[test]
fn access_units_over_the_limit_are_dropped() {
    let mut d = H264Depacketizer::new(DepacketizerConfig {
        max_access_unit_bytes: 100,
        ..Default::default()
    });
    d.push(0, 0, false, &[0x09, 0x10]).unwrap();
    let big = [0x41; 120];
    assert_eq!(d.push(1, 0, true, &big), Err(H264Error::TooLarge(100)));
    assert_eq!(
        outputs(&mut d),
        [Output::Dropped {
            timestamp: 0,
            reason: DropReason::Malformed(H264Error::TooLarge(100))
        }]
    );
}

#[test]
fn depacketize_frame_checks_the_whole_unit() {
    let mut d = H264Depacketizer::default();
    assert_eq!(
        d.depacketize_frame(0, [&[0x7c, 0x85, 1][..]]),
        Err(H264Error::FuUnterminated)
    );
    assert_eq!(d.depacketize_frame(0, []), Err(H264Error::Empty));
    assert_eq!(
        d.depacketize_frame(0, [&[0x7a, 1][..]]),
        Err(H264Error::NotInMode1(26))
    );
    let au = d
        .depacketize_frame(0, [&[0x7c, 0x81, 1][..], &[0x7c, 0x41, 2]])
        .unwrap();
    assert_eq!(&au.data[..], &annexb(&[&[0x61, 1, 2]])[..]);
    assert!(!au.keyframe);
}

#[test]
fn unpolled_outputs_are_bounded() {
    let mut d = H264Depacketizer::default();
    for i in 0..40u16 {
        d.push(i, u32::from(i) * 3000, true, &[0x09, 0x10]).unwrap();
    }
    let out = outputs(&mut d);
    assert_eq!(out.len(), MAX_QUEUED_OUTPUTS);
    // The newest are kept.
    assert!(matches!(out.last(), Some(Output::AccessUnit(au)) if au.timestamp == 39 * 3000));
    assert_eq!(d.stats().access_units, 40);
}
