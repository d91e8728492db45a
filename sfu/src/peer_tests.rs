//! Negotiation state of a peer against an in-memory str0m client: SFU offers, glare
//! (the client's offer wins and ours is offered again), stale answers, withdrawal.

use std::time::{Duration, Instant};

use str0m::Rtc;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind};

use super::*;
use crate::config::RouterConfig;

fn sfu_peer(now: Instant) -> Peer {
    let rtc = Rtc::builder().set_ice_lite(true).build(now);
    Peer::new(ParticipantId::from("p"), RoomId::from("r"), rtc, now)
}

/// The client's own offer adding one send-only m-line of `kind`.
fn client_offer(client: &mut Rtc, kind: MediaKind) -> (String, SdpPendingOffer) {
    let mut api = client.sdp_api();
    api.add_media(kind, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    (offer.to_sdp_string(), pending)
}

fn client_accepts_answer(client: &mut Rtc, pending: SdpPendingOffer, answer: &str) {
    let answer = SdpAnswer::from_sdp_string(answer).unwrap();
    client.sdp_api().accept_answer(pending, answer).unwrap();
}

fn client_answers(client: &mut Rtc, offer: &str) -> String {
    let offer = SdpOffer::from_sdp_string(offer).unwrap();
    client
        .sdp_api()
        .accept_offer(offer)
        .unwrap()
        .to_sdp_string()
}

/// Whether the peer wants to offer, asked both ways: the shortcut the driver uses after
/// every pump must agree with the full check at every step.
fn wants(peer: &mut Peer) -> bool {
    let full = peer.wants_negotiation();
    assert_eq!(peer.may_want_negotiation(), full, "shortcut disagrees");
    full
}

/// How many tracks the peer's stats count as received.
fn subscribed(peer: &mut Peer) -> usize {
    peer.stats(None, &Router::new(RouterConfig::default()))
        .tracks_subscribed
}

#[test]
fn sfu_offers_only_after_the_client_session_exists() {
    let now = Instant::now();
    let mut peer = sfu_peer(now);
    peer.add_out(TrackId(1), TrackKind::Audio, ParticipantId::from("x"));
    assert!(!wants(&mut peer));
    assert!(peer.negotiate(1, now).is_none());

    let mut client = Rtc::new(now);
    let (offer, pending) = client_offer(&mut client, MediaKind::Audio);
    let answer = peer.accept_offer(&offer).unwrap();
    client_accepts_answer(&mut client, pending, &answer);
    assert!(wants(&mut peer));
    let sdp = peer.negotiate(1, now).unwrap();
    assert!(sdp.contains("a=msid:x T1"), "{sdp}");
    assert!(!wants(&mut peer), "one offer at a time");
    let answer = client_answers(&mut client, &sdp);
    assert!(peer.accept_answer(1, &answer).unwrap().is_empty());
    assert_eq!(subscribed(&mut peer), 1);
}

#[test]
fn client_offer_wins_glare_and_the_sfu_offers_again() {
    let now = Instant::now();
    let mut peer = sfu_peer(now);
    let mut client = Rtc::new(now);
    let (offer, pending) = client_offer(&mut client, MediaKind::Audio);
    client_accepts_answer(&mut client, pending, &peer.accept_offer(&offer).unwrap());

    peer.add_out(TrackId(7), TrackKind::Video, ParticipantId::from("x"));
    let ours = peer.negotiate(1, now).unwrap();
    // Glare: the client offers too and ignores ours (it is the impolite side).
    let (theirs, pending) = client_offer(&mut client, MediaKind::Video);
    let answer = peer.accept_offer(&theirs).unwrap();
    client_accepts_answer(&mut client, pending, &answer);
    // Our change was rolled back and is wanted again.
    assert!(wants(&mut peer));
    let again = peer.negotiate(2, now).unwrap();
    assert!(again.contains("a=msid:x T7"));
    // An answer to the rolled-back offer is refused as stale.
    let mut other = Rtc::new(now);
    let stale = client_answers(&mut other, &ours);
    assert!(matches!(
        peer.accept_answer(1, &stale),
        Err(SfuError::StaleAnswer(1))
    ));
    let answer = client_answers(&mut client, &again);
    assert_eq!(peer.accept_answer(2, &answer).unwrap(), vec![TrackId(7)]);
    assert!(peer.track_out(peer_mid_of(&peer, TrackId(7))).is_some());

    // Unsubscribing stops the m-line in the next offer; answered, the track is gone.
    peer.remove_out(TrackId(7));
    let stop = peer.negotiate(3, now).unwrap();
    let answer = client_answers(&mut client, &stop);
    peer.accept_answer(3, &answer).unwrap();
    assert!(!wants(&mut peer));
    assert_eq!(subscribed(&mut peer), 0);
}

#[test]
fn unanswered_offer_is_withdrawn_and_reissued() {
    let now = Instant::now();
    let mut peer = sfu_peer(now);
    let mut client = Rtc::new(now);
    let (offer, pending) = client_offer(&mut client, MediaKind::Audio);
    client_accepts_answer(&mut client, pending, &peer.accept_offer(&offer).unwrap());
    peer.add_out(TrackId(3), TrackKind::Audio, ParticipantId::from("x"));
    peer.negotiate(1, now).unwrap();
    assert!(
        !peer.expire_offer(now - Duration::from_secs(1)),
        "not yet due"
    );
    assert!(peer.expire_offer(now));
    assert!(wants(&mut peer));
    let sdp = peer.negotiate(2, now).unwrap();
    let answer = client_answers(&mut client, &sdp);
    peer.accept_answer(2, &answer).unwrap();
    assert_eq!(subscribed(&mut peer), 1);
}

#[test]
fn hostile_sdp_is_refused() {
    let now = Instant::now();
    let mut peer = sfu_peer(now);
    assert!(matches!(
        peer.accept_offer("v=0\r\ngarbage"),
        Err(SfuError::BadSdp(_))
    ));
    let huge = "a".repeat(MAX_SDP + 1);
    assert!(matches!(peer.accept_offer(&huge), Err(SfuError::BadSdp(_))));
    assert!(matches!(
        peer.accept_answer(9, "v=0"),
        Err(SfuError::StaleAnswer(9))
    ));
}

/// The mid on which the peer sends `track`.
fn peer_mid_of(peer: &Peer, track: TrackId) -> Mid {
    peer.tracks_out
        .iter()
        .find_map(|t| match t.state {
            OutState::Open(m) if t.track == track => Some(m),
            _ => None,
        })
        .unwrap()
}

#[test]
fn a_remb_caps_until_it_is_not_repeated() {
    use super::bandwidth::REMB_TTL;
    let t0 = Instant::now();
    let mut peer = sfu_peer(t0);
    assert_eq!(peer.remb(t0), None);
    peer.on_remb(300_000, t0);
    assert_eq!(peer.remb(t0 + Duration::from_secs(1)), Some(300_000));
    // Repeated: the newest report counts, from when it came.
    peer.on_remb(200_000, t0 + Duration::from_secs(4));
    assert_eq!(
        peer.remb(t0 + Duration::from_secs(4) + REMB_TTL - Duration::from_millis(1)),
        Some(200_000)
    );
    // Not repeated for REMB_TTL: no cap any more.
    assert_eq!(peer.remb(t0 + Duration::from_secs(4) + REMB_TTL), None);
}

/// Moves datagrams between two in-memory sessions and lets simulated time pass in
/// 1 ms steps, `steps` times; returns the client's events.
fn exchange(sfu: &mut Rtc, client: &mut Rtc, now: &mut Instant, steps: usize) -> Vec<str0m::Event> {
    use str0m::{Input, Output};
    let mut client_events = Vec::new();
    for _ in 0..steps {
        for from_sfu in [true, false] {
            let (src, dst) = if from_sfu {
                (&mut *sfu, &mut *client)
            } else {
                (&mut *client, &mut *sfu)
            };
            loop {
                match src.poll_output().unwrap() {
                    Output::Transmit(t) => receive(dst, &t, *now),
                    Output::Event(e) if !from_sfu => client_events.push(e),
                    Output::Event(_) => {}
                    Output::Timeout(_) => break,
                }
            }
        }
        *now += Duration::from_millis(1);
        sfu.handle_input(Input::Timeout(*now)).unwrap();
        client.handle_input(Input::Timeout(*now)).unwrap();
    }
    client_events
}

/// Hands datagram `t` to session `dst` at `now`.
fn receive(dst: &mut Rtc, t: &str0m::net::Transmit, now: Instant) {
    use str0m::net::{Protocol, Receive};
    let receive = Receive {
        proto: Protocol::Udp,
        source: t.source,
        destination: t.destination,
        contents: (&*t.contents).try_into().unwrap(),
    };
    dst.handle_input(str0m::Input::Receive(now, receive))
        .unwrap();
}

/// The sizes of the frames among `events`, in order.
fn frame_sizes(events: &[str0m::Event]) -> Vec<usize> {
    events
        .iter()
        .filter_map(|e| match e {
            str0m::Event::MediaData(d) => Some(d.data.len()),
            _ => None,
        })
        .collect()
}

/// An SFU peer (its estimator on at `bwe`, if given) whose session with an in-memory
/// client is up, sending it one video track; and H.264 frames of that track.
struct VideoPair {
    peer: Peer,
    client: Rtc,
    track: TrackId,
    params: str0m::format::PayloadParams,
}

impl VideoPair {
    fn connect(now: &mut Instant, bwe: Option<str0m::bwe::Bitrate>) -> Self {
        Self::connect_track(now, bwe, TrackId(5))
    }

    /// The same, sending it `track`.
    fn connect_track(now: &mut Instant, bwe: Option<str0m::bwe::Bitrate>, track: TrackId) -> Self {
        use str0m::Candidate;
        use str0m::format::Codec;
        let addrs = (
            "10.0.0.1:7882".parse().unwrap(),
            "10.0.0.2:5000".parse().unwrap(),
        );
        let rtc = Rtc::builder()
            .set_ice_lite(true)
            .enable_bwe(bwe)
            .build(*now);
        let mut peer = Peer::new(ParticipantId::from("p"), RoomId::from("r"), rtc, *now);
        peer.rtc
            .add_local_candidate(Candidate::host(addrs.0, "udp").unwrap());
        let mut client = Rtc::new(*now);
        client.add_local_candidate(Candidate::host(addrs.1, "udp").unwrap());
        let (offer, pending) = client_offer(&mut client, MediaKind::Audio);
        client_accepts_answer(&mut client, pending, &peer.accept_offer(&offer).unwrap());
        peer.add_out(track, TrackKind::Video, ParticipantId::from("x"));
        let sdp = peer.negotiate(1, *now).unwrap();
        let answer = client_answers(&mut client, &sdp);
        peer.accept_answer(1, &answer).unwrap();
        let events = exchange(&mut peer.rtc, &mut client, now, 200);
        assert!(
            events.iter().any(|e| matches!(e, str0m::Event::Connected)),
            "ICE and DTLS came up"
        );
        peer.connected = true;
        let params = *peer
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == Codec::H264)
            .unwrap();
        Self {
            peer,
            client,
            track,
            params,
        }
    }

    /// A frame of `payload` (after an Annex-B start code and a NAL header, `key` for
    /// an IDR slice) with RTP time `rtp`, that arrived at `arrived`.
    fn frame(&self, key: bool, payload: &[u8], arrived: Instant, rtp: u64) -> MediaData {
        use str0m::format::CodecExtra;
        use str0m::media::{ExtensionValues, Frequency};
        use str0m::rtp::SeqNo;
        let mut data = vec![0, 0, 0, 1, if key { 0x65 } else { 0x41 }];
        data.extend_from_slice(payload);
        MediaData {
            mid: Mid::from("0"),
            pt: self.params.pt(),
            rid: None,
            params: self.params,
            time: MediaTime::new(rtp, Frequency::NINETY_KHZ),
            network_time: arrived,
            seq_range: SeqNo::from(1)..=SeqNo::from(1),
            contiguous: true,
            data: data.into(),
            ext_vals: ExtensionValues::default(),
            codec_extra: CodecExtra::H264(str0m::format::H264CodecExtra { is_keyframe: key }),
            last_sender_info: None,
            audio_start_of_talk_spurt: false,
        }
    }
}

#[test]
fn frames_go_out_in_the_order_they_are_forwarded_whatever_their_arrival_times() {
    let mut now = Instant::now();
    let mut pair = VideoPair::connect(&mut now, None);
    let track = pair.track;
    // Two frames forwarded one after the other, the second with an earlier arrival
    // time (its first packet came first: a large keyframe of another layer, or a frame
    // held back until a lost packet before it was repaired).
    let first = pair.frame(true, b"AAA", now - Duration::from_millis(10), 90_000);
    let second = pair.frame(false, b"BBB", now - Duration::from_millis(30), 93_000);
    assert_eq!(
        pair.peer.forward(track, None, &first, true).unwrap(),
        Forwarded::Yes
    );
    assert_eq!(
        pair.peer.forward(track, None, &second, true).unwrap(),
        Forwarded::Yes
    );
    let events = exchange(&mut pair.peer.rtc, &mut pair.client, &mut now, 50);
    let order: Vec<u8> = events
        .iter()
        .filter_map(|e| match e {
            str0m::Event::MediaData(d) => d.data.last().copied(),
            _ => None,
        })
        .collect();
    assert_eq!(order, b"AB", "frames as the client received them");
}

#[test]
fn a_single_stream_camera_is_not_paced() {
    // The estimator starts at 100 kbit/s: str0m's pacer would spread a 30 kB keyframe
    // over more than 2 s. A single stream goes out as it comes (the SFU cannot thin
    // it; it is paused when it does not fit), so the whole keyframe is there at once.
    let mut now = Instant::now();
    let mut pair = VideoPair::connect(&mut now, Some(str0m::bwe::Bitrate::kbps(100)));
    let key = pair.frame(true, &[7; 30_000], now, 90_000);
    assert_eq!(
        pair.peer.forward(pair.track, None, &key, true).unwrap(),
        Forwarded::Yes
    );
    // str0m releases one packet per timeout pass; this exchange makes one pass per
    // simulated millisecond (the driver makes the next at once), so the 25 packets take
    // about 25 ms here. Paced, it takes more than 2 s.
    let events = exchange(&mut pair.peer.rtc, &mut pair.client, &mut now, 100);
    assert_eq!(frame_sizes(&events), [30_005], "the keyframe within 100 ms");
}

#[test]
fn a_subscribers_video_starts_at_a_keyframe() {
    // Delta frames before the subscriber's first keyframe could not be decoded: each
    // is refused with a request for a keyframe (which the driver sends, throttled),
    // until one comes; from then on every frame goes out.
    let mut now = Instant::now();
    let mut pair = VideoPair::connect(&mut now, None);
    let track = pair.track;
    let mut results = Vec::new();
    for (i, key) in [false, false, true, false, false].into_iter().enumerate() {
        let rtp = 90_000 + 3_000 * i as u64;
        let frame = pair.frame(key, &[i as u8; 50], now, rtp);
        results.push(pair.peer.forward(track, None, &frame, true).unwrap());
    }
    use Forwarded::{NeedsKeyframe, Yes};
    assert_eq!(results, [NeedsKeyframe, NeedsKeyframe, Yes, Yes, Yes]);
    let events = exchange(&mut pair.peer.rtc, &mut pair.client, &mut now, 50);
    let got: Vec<u8> = events
        .iter()
        .filter_map(|e| match e {
            str0m::Event::MediaData(d) => d.data.last().copied(),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        [2, 3, 4],
        "the client got the keyframe and what followed"
    );
}

/// Drains the peer once, as the driver does, with a clock that advances 2 µs per
/// reading from `now`; the datagrams it gave.
fn drain_once(peer: &mut Peer, now: Instant) -> Vec<str0m::net::Transmit> {
    let mut tick = now;
    let mut drain = Drain::new(now, move || {
        tick += Duration::from_micros(2);
        tick
    });
    let mut out = Vec::new();
    loop {
        match peer.poll(&mut drain).unwrap() {
            str0m::Output::Transmit(t) => out.push(t),
            str0m::Output::Event(_) => {}
            str0m::Output::Timeout(_) => return out,
        }
    }
}

/// Hands the client every datagram; its events.
fn deliver(
    client: &mut Rtc,
    datagrams: &[str0m::net::Transmit],
    now: Instant,
) -> Vec<str0m::Event> {
    use str0m::Output;
    for t in datagrams {
        receive(client, t, now);
    }
    let mut events = Vec::new();
    loop {
        match client.poll_output().unwrap() {
            Output::Event(e) => events.push(e),
            Output::Transmit(_) => {}
            Output::Timeout(_) => return events,
        }
    }
}

#[test]
fn a_forwarded_frame_leaves_in_one_drain() {
    // With and without the estimator (and its leaky-bucket pacer, which releases one
    // packet per timeout): a frame of several packets must go out in the drain that
    // follows its forwarding, not one packet per turn of the event loop.
    for bwe in [None, Some(str0m::bwe::Bitrate::mbps(2))] {
        let mut now = Instant::now();
        let mut pair = VideoPair::connect(&mut now, bwe);
        // Let the session settle: nothing due, nothing queued.
        exchange(&mut pair.peer.rtc, &mut pair.client, &mut now, 20);
        let frame = pair.frame(true, &[9; 6_000], now, 90_000);
        assert_eq!(
            pair.peer.forward(pair.track, None, &frame, true).unwrap(),
            Forwarded::Yes
        );
        let sent = drain_once(&mut pair.peer, now);
        let rtp = sent
            .iter()
            .filter(|t| t.contents.len() > 1000 && t.contents[0] >> 6 == 2)
            .count();
        assert!(
            rtp >= 5,
            "bwe {bwe:?}: {rtp} of the frame's packets in one drain"
        );
        assert!(
            pair.peer.next_timeout > now,
            "bwe {bwe:?}: the drain left a due timeout behind"
        );
        let got = frame_sizes(&deliver(&mut pair.client, &sent, now));
        assert_eq!(got, [6_005], "bwe {bwe:?}: the client has the whole frame");
    }
}

#[test]
fn a_single_stream_camera_is_paused_by_the_estimate_only_once_it_has_fallen() {
    use crate::config::BandwidthConfig;
    let mut now = Instant::now();
    // The camera sends 6,000-byte frames at 30 fps (about 1.45 Mbit/s).
    let mut router = Router::new(RouterConfig::default());
    let (room, publisher) = (RoomId::from("r"), ParticipantId::from("x"));
    router.join(&room, &publisher).unwrap();
    let track = router.publish(&publisher, TrackKind::Video).unwrap();
    let mut pair = VideoPair::connect_track(&mut now, Some(str0m::bwe::Bitrate::mbps(1)), track);
    let config = BandwidthConfig::default();
    let mut pauses = Vec::new();
    // Runs the allocation every 100 ms for `secs` with the camera sending; the pause
    // changes it reported.
    let mut run = |pair: &mut VideoPair, now: &mut Instant, secs: u64| {
        let mut keyframes = Vec::new();
        pauses.clear();
        for _ in 0..secs * 10 {
            for _ in 0..3 {
                router.record_frame(track, None, 6_000, *now);
                *now += Duration::from_micros(33_333);
            }
            *now += Duration::from_micros(1);
            pair.peer
                .allocate(&router, &config, *now, &mut keyframes, &mut pauses);
        }
        pauses.clone()
    };
    assert_eq!(run(&mut pair, &mut now, 2), [], "before any estimate");
    // Estimates below the camera's rate, climbing as str0m's do after the start:
    // longer than the pause hold, and the camera is not paused.
    for bps in [600_000, 700_000, 800_000, 900_000, 1_000_000] {
        pair.peer.on_estimate(bps);
        assert_eq!(run(&mut pair, &mut now, 1), [], "estimate {bps} climbing");
    }
    // The estimate falls: the link is full. After the pause hold, paused.
    pair.peer.on_estimate(700_000);
    let paused = run(&mut pair, &mut now, 5);
    assert_eq!(paused, [(track, true)], "once the estimate fell");
}

/// The SFU sends a subscriber's audio as RED only when it offered RED and the client
/// accepted it: the allocation then counts that audio twice. (str0m narrows its codecs
/// to what the client's first offer had, so the SFU's own offers carry RED only then.)
#[test]
fn audio_goes_out_as_red_only_when_the_client_accepted_it() {
    for (sfu_red, client_red) in [(true, true), (true, false), (false, true)] {
        let now = Instant::now();
        let rtc = Rtc::builder()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, sfu_red)
            .build(now);
        let mut peer = Peer::new(ParticipantId::from("p"), RoomId::from("r"), rtc, now);
        let mut client = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, client_red)
            .build(now);
        let (offer, pending) = client_offer(&mut client, MediaKind::Audio);
        client_accepts_answer(&mut client, pending, &peer.accept_offer(&offer).unwrap());
        peer.add_out(TrackId(3), TrackKind::Audio, ParticipantId::from("x"));
        let sdp = peer.negotiate(1, now).unwrap();
        let both = sfu_red && client_red;
        assert_eq!(sdp.contains("red/48000"), both, "{sdp}");
        let answer = client_answers(&mut client, &sdp);
        peer.accept_answer(1, &answer).unwrap();
        let mid = peer_mid_of(&peer, TrackId(3));
        assert_eq!(
            peer.sends_red(mid),
            both,
            "SFU offers RED: {sfu_red}, client takes it: {client_red}"
        );
    }
}
