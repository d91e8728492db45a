//! The jitter buffer with real Opus (libopus): in-band FEC recovers lost frames better than
//! concealment, and DTX pauses are played as comfort noise, not counted as loss.

mod common;

use std::time::{Duration, Instant};

use common::{adaptive, encode_opus};
use huddle_media::audio::decoder::{AudioDecoder, DecodeError};
use huddle_media::audio::jitter::{FixedDelayBuffer, Playout};
use huddle_media::audio::netsim::{Loss, TraceConfig, TracePacket, simulate};
use huddle_media::codec::opus::{
    MAX_PACKET_BYTES, OpusChannels, OpusDecoder, OpusEncoder, OpusEncoderConfig,
};
use huddle_media::quality::signal::speech_like;
use huddle_media::quality::snr::snr_db;

const FRAME: usize = 960;

/// Opus with its FEC hidden, so the buffer can only conceal.
struct WithoutFec(OpusDecoder);

impl AudioDecoder for WithoutFec {
    fn sample_rate(&self) -> u32 {
        self.0.sample_rate()
    }
    fn channels(&self) -> usize {
        self.0.channels()
    }
    fn packet_samples(&self, p: &[u8]) -> Result<usize, DecodeError> {
        self.0.packet_samples(p)
    }
    fn has_fec(&self, _: &[u8]) -> bool {
        false
    }
    fn decode(&mut self, p: &[u8], out: &mut [i16]) -> Result<usize, DecodeError> {
        self.0.decode(p, out)
    }
    fn decode_fec(&mut self, p: &[u8], n: usize, out: &mut [i16]) -> Result<usize, DecodeError> {
        self.0.decode_fec(p, n, out)
    }
    fn conceal(&mut self, n: usize, out: &mut [i16]) -> Result<usize, DecodeError> {
        self.0.conceal(n, out)
    }
}

fn play(
    p: &mut impl Playout,
    trace: &[TracePacket],
    packets: &[Vec<u8>],
    seconds: u64,
) -> Vec<i16> {
    let mut out = Vec::new();
    simulate(
        p,
        trace,
        |i| packets[i].clone(),
        Instant::now(),
        Duration::from_secs(seconds),
        10,
        |f, _| out.extend_from_slice(f),
    );
    out
}

/// Plays `trace` through a 60 ms fixed-delay buffer over `decoder`; returns the output
/// and the number of frames recovered from FEC.
fn through_fixed<D: AudioDecoder>(
    decoder: D,
    trace: &[TracePacket],
    packets: &[Vec<u8>],
    seconds: u64,
) -> (Vec<i16>, u64) {
    let mut b = FixedDelayBuffer::new(decoder, 60, 10).unwrap();
    let out = play(&mut b, trace, packets, seconds);
    (out, b.stats().fec_recovered_packets)
}

fn opus() -> OpusDecoder {
    OpusDecoder::new(OpusChannels::Mono).unwrap()
}

#[test]
fn opus_fec_recovers_lost_frames_better_than_concealment() {
    let seconds = 20;
    let signal = speech_like(seconds as f64, 48_000, 12_000, 4);
    let packets = encode_opus(
        &signal,
        OpusEncoderConfig {
            expected_loss_percent: 15,
            ..Default::default()
        },
    );
    let cfg = TraceConfig {
        rate: 48_000,
        packets: packets.len(),
        loss: Loss::Random(0.1),
        seed: 8,
        ..Default::default()
    };
    let lossy = cfg.generate();
    let clean: Vec<TracePacket> = lossy
        .iter()
        .map(|p| TracePacket {
            arrival: Some(p.sent + Duration::from_millis(30)),
            ..*p
        })
        .collect();
    // A fixed schedule keeps the three outputs aligned sample for sample.
    let (reference, _) = through_fixed(opus(), &clean, &packets, seconds);
    let (with_fec, recovered) = through_fixed(opus(), &lossy, &packets, seconds);
    let (with_plc, none) = through_fixed(WithoutFec(opus()), &lossy, &packets, seconds);
    let lost = lossy.iter().filter(|p| p.arrival.is_none()).count() as u64;
    assert_eq!(none, 0);
    // libopus codes LBRR only for active speech frames, so pauses have none to recover.
    assert!(
        recovered * 3 >= lost,
        "recovered {recovered} of {lost} lost"
    );
    let snr_fec = snr_db(&reference, &with_fec).unwrap();
    let snr_plc = snr_db(&reference, &with_plc).unwrap();
    println!("Opus 10% loss: SNR with FEC {snr_fec:.1} dB, concealment only {snr_plc:.1} dB");
    assert!(
        snr_fec > snr_plc + 1.0,
        "FEC {snr_fec:.1} dB vs PLC {snr_plc:.1} dB"
    );

    // The adaptive buffer uses FEC on the same trace too.
    let mut jb = adaptive(opus());
    play(&mut jb, &lossy, &packets, seconds);
    let s = jb.stats();
    assert!(s.fec_recovered_packets * 3 >= lost, "{s:?}");
    assert!(
        s.packets_lost + s.fec_recovered_packets >= lost - 2,
        "{s:?}"
    );
}

#[test]
fn opus_dtx_pauses_are_comfort_noise_not_loss() {
    // Speech, two seconds of silence, speech. With DTX the encoder marks silent frames;
    // like a real sender, only one in 20 (every 400 ms) is transmitted.
    let talk = speech_like(2.0, 48_000, 12_000, 2);
    let mut signal = talk.clone();
    signal.extend(std::iter::repeat_n(0i16, 96_000));
    signal.extend_from_slice(&talk);
    let config = OpusEncoderConfig {
        dtx: true,
        ..Default::default()
    };
    let mut enc = OpusEncoder::new(config).unwrap();
    let mut buf = [0u8; MAX_PACKET_BYTES];
    let (mut sent, mut trace, mut run) = (Vec::new(), Vec::new(), 0usize);
    for (frame, pcm) in signal.chunks_exact(FRAME).enumerate() {
        let e = enc.encode(pcm, &mut buf).unwrap();
        run = if e.dtx { run + 1 } else { 0 };
        if e.dtx && run % 20 != 1 {
            continue;
        }
        let at = Duration::from_millis(20 * frame as u64);
        trace.push(TracePacket {
            index: sent.len(),
            seq: sent.len() as u16,
            rtp_ts: (frame * FRAME) as u32,
            sent: at,
            arrival: Some(at + Duration::from_millis(30)),
        });
        sent.push(buf[..e.len].to_vec());
    }
    assert!(
        sent.len() < signal.len() / FRAME - 50,
        "DTX left out silent frames"
    );
    let mut jb = adaptive(opus());
    let out = play(&mut jb, &trace, &sent, 5);
    let s = jb.stats();
    assert_eq!((s.packets_lost, s.late_packets), (0, 0), "{s:?}");
    assert!(s.comfort_noise_samples >= 48 * 1000, "{s:?}");
    // Concealment stays at most a few frames (e.g. waiting for the first packet after
    // the pause), far from the 2 s the pause lasted.
    assert!(s.concealed_samples <= 48 * 100, "{s:?}");
    assert!(
        out.iter().any(|&x| x.unsigned_abs() > 3000),
        "speech was played"
    );
}
