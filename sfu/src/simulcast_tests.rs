//! Layer choice on simulated time and bitrates.

use super::*;

/// The upgrade hold; pauses at once (a cap that leaves no room).
const HOLD: Holds = Holds {
    upgrade: Duration::from_secs(2),
    pause: Duration::ZERO,
};

fn layers(rates: &[u64]) -> Vec<LayerInfo> {
    rates
        .iter()
        .map(|r| LayerInfo {
            bitrate_bps: *r,
            active: true,
        })
        .collect()
}

/// Typical q/h/f rates.
const QHF: [u64; 3] = [150_000, 500_000, 1_500_000];

/// Shorthand for a chosen layer.
fn at(layer: usize) -> Choice {
    Choice::Layer(layer)
}

/// A track whose subscriber wants the best layer.
fn high(layers: &[LayerInfo]) -> VideoDemand<'_> {
    VideoDemand {
        layers,
        max_quality: Quality::High,
    }
}

fn alloc_one(budget: u64, l: &[LayerInfo], q: Quality) -> Choice {
    let mut out = Vec::new();
    allocate(
        budget,
        &[VideoDemand {
            layers: l,
            max_quality: q,
        }],
        &mut out,
    );
    out[0]
}

#[test]
fn rids_are_ordered_low_to_high() {
    assert_eq!(order_rids(&["f", "h", "q"]), vec![2, 1, 0]);
    assert_eq!(order_rids(&["h", "m", "l"]), vec![2, 1, 0]);
    assert_eq!(order_rids(&["high", "low"]), vec![1, 0]);
    // Unknown names keep their SDP order.
    assert_eq!(order_rids(&["b", "a", "c"]), vec![0, 1, 2]);
    // "h" alone is ambiguous between schemes; the first scheme that knows all wins.
    assert_eq!(order_rids(&["h", "q"]), vec![1, 0]);
}

#[test]
fn quality_maps_to_layers() {
    assert_eq!(Quality::Low.max_index(3), 0);
    assert_eq!(Quality::Medium.max_index(3), 1);
    assert_eq!(Quality::High.max_index(3), 2);
    assert_eq!(Quality::Medium.max_index(1), 0);
    assert_eq!(Quality::parse("medium"), Some(Quality::Medium));
    assert_eq!(Quality::parse("ultra"), None);
}

#[test]
fn allocation_takes_the_best_layer_that_fits() {
    let l = layers(&QHF);
    assert_eq!(alloc_one(5_000_000, &l, Quality::High), at(2));
    assert_eq!(alloc_one(1_499_999, &l, Quality::High), at(1));
    assert_eq!(alloc_one(600_000, &l, Quality::High), at(1));
    assert_eq!(alloc_one(499_999, &l, Quality::High), at(0));
    // Below the lowest layer the video is paused.
    assert_eq!(alloc_one(10_000, &l, Quality::High), Choice::Paused(0));
    assert_eq!(alloc_one(149_999, &l, Quality::High), Choice::Paused(0));
    // The request caps it.
    assert_eq!(alloc_one(5_000_000, &l, Quality::Low), at(0));
    assert_eq!(alloc_one(5_000_000, &l, Quality::Medium), at(1));
}

#[test]
fn allocation_skips_stopped_layers() {
    let mut l = layers(&QHF);
    l[2].active = false;
    assert_eq!(alloc_one(5_000_000, &l, Quality::High), at(1));
    // With q stopped, h is the lowest running layer: it is chosen when it fits, and
    // the track is paused when it does not.
    l[0].active = false;
    assert_eq!(alloc_one(600_000, &l, Quality::High), at(1));
    assert_eq!(alloc_one(10_000, &l, Quality::High), Choice::Paused(1));
    l[1].active = false;
    assert_eq!(alloc_one(5_000_000, &l, Quality::High), Choice::Unknown);
}

#[test]
fn allocation_waits_until_every_active_layer_is_measured() {
    let mut l = layers(&QHF);
    l[2].bitrate_bps = 0;
    assert_eq!(alloc_one(5_000_000, &l, Quality::High), Choice::Unknown);
    // A stopped, never measured layer does not hold the others back.
    l[2].active = false;
    assert_eq!(alloc_one(5_000_000, &l, Quality::High), at(1));
}

#[test]
fn allocation_shares_the_budget_between_tracks() {
    let (a, b) = (layers(&QHF), layers(&QHF));
    let tracks = [high(&a), high(&b)];
    let mut out = Vec::new();
    // Both medium fit (1 Mb/s), one high does not on top.
    allocate(1_200_000, &tracks, &mut out);
    assert_eq!(out, vec![at(1), at(1)]);
    // Raised in turn: the first gets high before the second does.
    allocate(2_000_000, &tracks, &mut out);
    assert_eq!(out, vec![at(2), at(1)]);
    allocate(3_000_000, &tracks, &mut out);
    assert_eq!(out, vec![at(2), at(2)]);
}

/// Drives a selector with frames at 25 fps where each layer has a keyframe every
/// `gop` frames, returning the layers forwarded.
fn run_frames(sel: &mut LayerSelector, frames: std::ops::Range<u64>, gop: u64) -> Vec<usize> {
    let mut forwarded = Vec::new();
    for n in frames {
        for layer in 0..3 {
            let key = n % gop == 0;
            if sel.on_frame(layer, key) != FrameAction::Drop {
                forwarded.push(layer);
            }
        }
    }
    forwarded
}

#[test]
fn first_layer_starts_at_its_keyframe() {
    let t0 = Instant::now();
    let mut sel = LayerSelector::new();
    assert_eq!(sel.update(at(1), at(1), true, HOLD, t0), Some(1));
    // Delta frames of every layer before the keyframe are dropped.
    assert!(run_frames(&mut sel, 1..10, 10).is_empty());
    let fwd = run_frames(&mut sel, 10..20, 10);
    assert_eq!(fwd, vec![1; 10]);
    assert_eq!(sel.current(), Some(1));
    assert_eq!(sel.pending(), None);
}

#[test]
fn downgrade_is_immediate_and_waits_for_the_lower_keyframe() {
    let t0 = Instant::now();
    let mut sel = LayerSelector::new();
    sel.update(at(2), at(2), true, HOLD, t0);
    run_frames(&mut sel, 0..5, 10);
    assert_eq!(sel.current(), Some(2));
    // Congestion: the budget only allows the lowest layer.
    let t1 = t0 + Duration::from_millis(200);
    assert_eq!(sel.update(at(0), at(0), true, HOLD, t1), Some(0));
    // Until layer 0's keyframe the high layer keeps flowing: no gap for the viewer.
    assert_eq!(run_frames(&mut sel, 5..10, 10), vec![2; 5]);
    assert_eq!(run_frames(&mut sel, 10..12, 10), vec![0, 0]);
    assert_eq!(sel.current(), Some(0));
}

#[test]
fn upgrade_waits_for_the_hold_time() {
    let t0 = Instant::now();
    let mut sel = LayerSelector::new();
    sel.update(at(0), at(0), true, HOLD, t0);
    run_frames(&mut sel, 0..1, 10);
    assert_eq!(sel.current(), Some(0));
    // Room for the top layer appears; it is granted once it has lasted 2 s.
    let mut t = t0;
    for _ in 0..10 {
        t += Duration::from_millis(200);
        assert_eq!(sel.update(at(2), at(2), true, HOLD, t), None, "{t:?}");
    }
    t += Duration::from_millis(200);
    assert_eq!(sel.update(at(2), at(2), true, HOLD, t), Some(2));
}

#[test]
fn a_dip_restarts_the_upgrade_hold() {
    let t0 = Instant::now();
    let mut sel = LayerSelector::new();
    sel.update(at(0), at(0), true, HOLD, t0);
    run_frames(&mut sel, 0..1, 10);
    let ms = |n| t0 + Duration::from_millis(n);
    assert_eq!(sel.update(at(2), at(2), true, HOLD, ms(100)), None);
    // `up` (budget minus headroom) dips to the current layer: the hold restarts.
    assert_eq!(sel.update(at(1), at(0), true, HOLD, ms(1500)), None);
    assert_eq!(sel.update(at(2), at(2), true, HOLD, ms(2200)), None);
    assert_eq!(sel.update(at(2), at(2), true, HOLD, ms(4100)), None);
    assert_eq!(sel.update(at(2), at(2), true, HOLD, ms(4200)), Some(2));
}

#[test]
fn a_requested_quality_is_granted_without_hold_and_lowered_at_once() {
    let t0 = Instant::now();
    let mut sel = LayerSelector::new();
    sel.update(at(0), at(0), true, HOLD, t0);
    run_frames(&mut sel, 0..1, 10);
    // Asking for the same or a worse quality grants nothing early.
    for (n, (before, after)) in [(Quality::Low, Quality::Low), (Quality::High, Quality::Low)]
        .into_iter()
        .enumerate()
    {
        sel.quality_limit_changed(before, after);
        let now = t0 + Duration::from_micros(500 + 200 * n as u64);
        let switch = sel.update(at(2), at(2), true, HOLD, now);
        assert_eq!(
            (switch, sel.target()),
            (None, Some(0)),
            "{before:?} -> {after:?}"
        );
    }
    // A better one is granted without the hold.
    sel.quality_limit_changed(Quality::Low, Quality::High);
    assert_eq!(
        sel.update(at(2), at(2), true, HOLD, t0 + Duration::from_millis(1)),
        Some(2)
    );
    run_frames(&mut sel, 1..11, 10);
    assert_eq!(sel.current(), Some(2));
    // Asked for less: the allocation's lower target is taken at once.
    sel.quality_limit_changed(Quality::High, Quality::Low);
    assert_eq!(
        sel.update(at(0), at(0), true, HOLD, t0 + Duration::from_millis(2)),
        Some(0)
    );
}

#[test]
fn a_stopped_current_layer_is_left_at_once() {
    let t0 = Instant::now();
    let mut sel = LayerSelector::new();
    sel.update(at(2), at(2), true, HOLD, t0);
    run_frames(&mut sel, 0..1, 10);
    // The publisher stopped its top layer; the allocation falls back to layer 1.
    assert_eq!(sel.update(at(1), at(1), false, HOLD, t0), Some(1));
}

#[test]
fn rate_meter_measures_and_ages() {
    let t0 = Instant::now();
    let mut m = RateMeter::default();
    // 25 frames of 1000 bytes per second = 200 kb/s.
    for i in 0..=50u64 {
        m.add(1000, t0 + Duration::from_millis(i * 40));
    }
    let r = m.rate_bps();
    assert!((190_000..=210_000).contains(&r), "{r}");
    assert!(m.active(t0 + Duration::from_millis(2100)));
    assert!(!m.active(t0 + Duration::from_secs(4)));
}

#[test]
fn timestamps_stay_continuous_across_switches() {
    let t0 = Instant::now();
    let mut rw = TimestampRewriter::default();
    // Layer A at base 1_000, 25 fps at 90 kHz (3600 ticks per frame).
    let mut out = Vec::new();
    for i in 0..5u32 {
        let at = t0 + Duration::from_millis(u64::from(i) * 40);
        out.push(rw.rewrite(1_000 + i * 3600, at, 90_000, i == 0));
    }
    assert_eq!(out[0], 1_000, "the first layer keeps its timestamps");
    // Switch to layer B, whose base is near the wrap point, 40 ms later.
    let base_b = u32::MAX - 5_000;
    for i in 5..10u32 {
        let at = t0 + Duration::from_millis(u64::from(i) * 40);
        out.push(rw.rewrite(base_b.wrapping_add((i - 5) * 3600), at, 90_000, i == 5));
    }
    for w in out.windows(2) {
        assert_eq!(w[1].wrapping_sub(w[0]), 3600, "{out:?}");
    }
    // A switch with no time elapsed still moves forward.
    let last = *out.last().unwrap();
    let at = t0 + Duration::from_millis(360);
    assert_eq!(rw.rewrite(7, at, 90_000, true), last.wrapping_add(1));
}

#[test]
fn a_track_is_paused_at_once_and_resumed_after_the_hold_at_a_keyframe() {
    let t0 = Instant::now();
    let ms = |m: u64| t0 + Duration::from_millis(m);
    let mut sel = LayerSelector::new();
    sel.update(at(0), at(0), true, HOLD, t0);
    assert_eq!(sel.on_frame(0, true), FrameAction::Switch);
    // The budget falls below the lowest layer: paused at once, nothing forwarded.
    assert_eq!(
        sel.update(Choice::Paused(0), Choice::Paused(0), true, HOLD, ms(100)),
        None
    );
    assert!(sel.paused());
    assert_eq!(sel.current(), None);
    assert_eq!(sel.on_frame(0, true), FrameAction::Drop);
    assert_eq!(sel.on_frame(0, false), FrameAction::Drop);
    // The lowest layer fits again, but only without headroom: still paused.
    assert_eq!(
        sel.update(at(0), Choice::Paused(0), true, HOLD, ms(200)),
        None
    );
    // It fits with headroom, but not yet for the hold.
    assert_eq!(sel.update(at(0), at(0), true, HOLD, ms(300)), None);
    assert_eq!(sel.update(at(1), at(0), true, HOLD, ms(2000)), None);
    // A dip restarts the hold.
    assert_eq!(
        sel.update(at(0), Choice::Paused(0), true, HOLD, ms(2100)),
        None
    );
    assert_eq!(sel.update(at(0), at(0), true, HOLD, ms(2200)), None);
    assert_eq!(sel.update(at(0), at(0), true, HOLD, ms(4199)), None);
    // Held: resume on the lowest layer's next keyframe.
    assert_eq!(sel.update(at(0), at(0), true, HOLD, ms(4200)), Some(0));
    assert_eq!(sel.on_frame(0, false), FrameAction::Drop);
    assert_eq!(sel.on_frame(0, true), FrameAction::Switch);
    assert!(!sel.paused());
    assert_eq!(sel.on_frame(0, false), FrameAction::Forward);
}

#[test]
fn the_budget_pauses_the_last_tracks_first() {
    let (a, b) = (layers(&QHF), layers(&QHF));
    let tracks = [high(&a), high(&b)];
    let mut out = Vec::new();
    allocate(200_000, &tracks, &mut out);
    assert_eq!(out, vec![at(0), Choice::Paused(0)]);
    allocate(100_000, &tracks, &mut out);
    assert_eq!(out, vec![Choice::Paused(0), Choice::Paused(0)]);
    allocate(300_000, &tracks, &mut out);
    assert_eq!(out, vec![at(0), at(0)]);
}

#[test]
fn an_estimate_dip_keeps_the_lowest_layer_and_only_a_lasting_one_pauses() {
    let holds = Holds {
        upgrade: Duration::from_secs(2),
        pause: Duration::from_secs(3),
    };
    let t0 = Instant::now();
    let ms = |m: u64| t0 + Duration::from_millis(m);
    let mut sel = LayerSelector::new();
    sel.update(at(2), at(2), true, holds, t0);
    assert_eq!(sel.on_frame(2, true), FrameAction::Switch);
    // The estimate leaves no room even for q: down to q at once, not paused.
    let short = Choice::Paused(0);
    assert_eq!(sel.update(short, short, true, holds, ms(100)), Some(0));
    assert!(!sel.paused());
    assert_eq!(sel.on_frame(2, false), FrameAction::Forward);
    assert_eq!(sel.on_frame(0, true), FrameAction::Switch);
    assert_eq!(sel.update(short, short, true, holds, ms(2000)), None);
    assert_eq!(sel.on_frame(0, false), FrameAction::Forward);
    // It recovers before the pause hold: never paused, and the hold starts anew.
    assert_eq!(sel.update(at(0), at(0), true, holds, ms(3000)), None);
    assert_eq!(sel.update(short, short, true, holds, ms(3200)), None);
    assert_eq!(sel.update(short, short, true, holds, ms(6100)), None);
    assert!(!sel.paused());
    assert_eq!(sel.on_frame(0, false), FrameAction::Forward);
    // Short for the whole hold: paused.
    assert_eq!(sel.update(short, short, true, holds, ms(6200)), None);
    assert!(sel.paused());
    assert_eq!(sel.on_frame(0, true), FrameAction::Drop);
    // A new subscriber whose first estimate is short starts on the lowest layer.
    let mut fresh = LayerSelector::new();
    assert_eq!(fresh.update(short, short, true, holds, t0), Some(0));
    assert_eq!(fresh.on_frame(0, true), FrameAction::Switch);
    assert!(!fresh.paused());
}

#[test]
fn a_size_limit_keeps_the_layers_that_fit() {
    let sizes = [Some((320, 180)), Some((640, 360)), Some((1280, 720))];
    assert_eq!(highest_layer_within(&sizes, (1920, 1080)), 2);
    assert_eq!(
        highest_layer_within(&sizes, (1280, 720)),
        2,
        "an exact fit fits"
    );
    assert_eq!(highest_layer_within(&sizes, (700, 400)), 1);
    assert_eq!(
        highest_layer_within(&sizes, (640, 300)),
        0,
        "either dimension counts"
    );
    assert_eq!(
        highest_layer_within(&sizes, (100, 100)),
        0,
        "the lowest at least"
    );
    // Unknown sizes fit until a lower layer is known to be too large.
    let partly = [Some((320, 180)), None, Some((1280, 720))];
    assert_eq!(highest_layer_within(&partly, (700, 400)), 1);
    assert_eq!(highest_layer_within(&[None, None, None], (10, 10)), 2);
    assert_eq!(highest_layer_within(&[], (10, 10)), 0);
}

#[test]
fn an_unlayered_track_flows_from_the_start_and_pauses_only_when_it_does_not_fit() {
    let holds = Holds {
        upgrade: Duration::from_secs(2),
        pause: Duration::from_secs(3),
    };
    let t0 = Instant::now();
    let ms = |m: u64| t0 + Duration::from_millis(m);
    let mut sel = LayerSelector::single();
    assert!(sel.is_single() && !LayerSelector::new().is_single());
    // Already flowing: delta frames go on, no keyframe is awaited, before and after
    // allocations that cannot tell yet (rate not measured) or that fit it.
    assert_eq!(sel.on_frame(0, false), FrameAction::Forward);
    assert_eq!(
        sel.update(Choice::Unknown, Choice::Unknown, true, holds, ms(0)),
        None
    );
    assert_eq!(sel.update(at(0), at(0), true, holds, ms(200)), None);
    assert_eq!(sel.on_frame(0, false), FrameAction::Forward);
    // A short dip of the estimate leaves it flowing; a lasting one pauses it.
    assert_eq!(
        sel.update(Choice::Paused(0), Choice::Paused(0), true, holds, ms(400)),
        None
    );
    assert_eq!(sel.on_frame(0, false), FrameAction::Forward);
    assert_eq!(sel.update(at(0), at(0), true, holds, ms(600)), None);
    assert_eq!(
        sel.update(Choice::Paused(0), Choice::Paused(0), true, holds, ms(800)),
        None
    );
    assert_eq!(
        sel.update(Choice::Paused(0), Choice::Paused(0), true, holds, ms(3799)),
        None
    );
    assert!(!sel.paused());
    sel.update(Choice::Paused(0), Choice::Paused(0), true, holds, ms(3800));
    assert!(sel.paused());
    assert_eq!(sel.on_frame(0, true), FrameAction::Drop);
    // Room again, with headroom, for the upgrade hold: resumed at the next keyframe.
    assert_eq!(sel.update(at(0), at(0), true, holds, ms(4000)), None);
    assert_eq!(sel.update(at(0), at(0), true, holds, ms(6000)), Some(0));
    assert_eq!(sel.on_frame(0, false), FrameAction::Drop);
    assert_eq!(sel.on_frame(0, true), FrameAction::Switch);
    assert!(!sel.paused());
    assert_eq!(sel.on_frame(0, false), FrameAction::Forward);
    // The publisher stopping (camera off) does not pause it.
    assert_eq!(
        sel.update(Choice::Unknown, Choice::Unknown, false, holds, ms(7000)),
        None
    );
    assert_eq!(sel.on_frame(0, false), FrameAction::Forward);
}
