//! Jitter-buffer cost per packet (insert plus the pulls of its duration), with the trivial
//! L16 codec so decoding adds next to nothing, and the adaptive vs fixed-delay comparison
//! table printed before the measurements.
//!
//! `cargo bench -p huddle-media --bench jitter -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use huddle_media::audio::jitter::{FixedDelayBuffer, JitterBuffer, JitterConfig, Playout};
use huddle_media::audio::l16::{L16Decoder, encode_l16};
use huddle_media::audio::netsim::{
    Jitter, TraceConfig, comparison_profiles, play_l16, speech_like,
};

const RATE: u32 = 16_000;
const PACKET: usize = 320;

/// Feeds one 20 ms packet per iteration along a repeating trace (at its arrival time) and
/// pulls the two 10 ms frames that its duration covers on the playout clock.
fn per_packet(c: &mut Criterion, name: &str, mut p: impl Playout, jitter: Jitter) {
    let cfg = TraceConfig {
        packets: 5000,
        jitter,
        seed: 3,
        ..TraceConfig::default()
    };
    let trace = cfg.generate();
    let signal = speech_like(RATE, PACKET * 50);
    let payloads: Vec<Vec<u8>> = signal
        .chunks(PACKET)
        .map(|c| {
            let mut v = Vec::new();
            encode_l16(c, &mut v);
            v
        })
        .collect();
    // Arrivals in time order; the trace repeats with sequence numbers and time running on.
    let mut order: Vec<usize> = (0..trace.len()).collect();
    order.sort_by_key(|&i| trace[i].arrival);
    let t0 = Instant::now();
    let (mut k, mut lap, mut tick) = (0usize, 0u64, 0u64);
    let lap_len = Duration::from_millis(20 * trace.len() as u64);
    let mut group = c.benchmark_group("jitter");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter(|| {
            let pkt = &trace[order[k]];
            let n = (lap * trace.len() as u64 + pkt.index as u64) as usize;
            let shift = lap_len * lap as u32;
            let arrival = t0 + shift + pkt.arrival.unwrap_or_default();
            let _ = p.insert(
                n as u16,
                (n * PACKET) as u32,
                &payloads[n % payloads.len()],
                arrival,
            );
            // The playout clock runs at one packet duration per packet.
            let play = t0 + Duration::from_millis(20 * tick);
            tick += 1;
            black_box(p.pull(play));
            black_box(p.pull(play + Duration::from_millis(10)));
            k += 1;
            if k == order.len() {
                k = 0;
                lap += 1;
            }
        })
    });
    group.finish();
    // The measured path must be the normal one: decoding, not concealing.
    let s = p.stats();
    println!(
        "  {name}: {} packets, {:.2}% concealed, {} accelerate / {} expand operations",
        s.packets_received,
        s.concealed_percent(),
        s.accelerate_operations,
        s.preemptive_expand_operations
    );
}

fn cell(p: &mut impl Playout, cfg: &TraceConfig, signal: &[i16]) -> String {
    let s = play_l16(p, cfg, signal, 0).last();
    format!(" {:.1} / {:.2} |", s.mean_delay_ms(), s.concealed_percent())
}

fn comparison_table() {
    println!("\nadaptive vs fixed-delay buffer, 60 s per trace, 1% random loss, L16 20 ms packets");
    println!("mean buffering delay (ms) / concealed samples (%)");
    println!("| profile | adaptive | fixed 40 ms | fixed 80 ms |");
    println!("|---|---|---|---|");
    for (name, cfg) in comparison_profiles(3000, 1) {
        let signal = speech_like(RATE, cfg.packets * PACKET);
        let mut adaptive =
            JitterBuffer::new(L16Decoder::new(RATE, 1), JitterConfig::default()).unwrap();
        let mut row = format!("| {name} |{}", cell(&mut adaptive, &cfg, &signal));
        for delay in [40, 80] {
            let mut fixed = FixedDelayBuffer::new(L16Decoder::new(RATE, 1), delay, 10).unwrap();
            row += &cell(&mut fixed, &cfg, &signal);
        }
        println!("{row}");
    }
    println!();
}

fn main() {
    comparison_table();
    let mut c = Criterion::default().configure_from_args();
    let adaptive = || JitterBuffer::new(L16Decoder::new(RATE, 1), JitterConfig::default()).unwrap();
    per_packet(&mut c, "adaptive_steady", adaptive(), Jitter::None);
    per_packet(
        &mut c,
        "adaptive_jitter30",
        adaptive(),
        Jitter::Uniform { max_ms: 30.0 },
    );
    let fixed = FixedDelayBuffer::new(L16Decoder::new(RATE, 1), 60, 10).unwrap();
    per_packet(
        &mut c,
        "fixed60_jitter30",
        fixed,
        Jitter::Uniform { max_ms: 30.0 },
    );
    c.final_summary();
}
