//! Router unit tests with simulated time.

use std::time::{Duration, Instant};

use super::*;
use crate::simulcast::LayerInfo;

fn ids() -> (RoomId, ParticipantId, ParticipantId, ParticipantId) {
    (
        RoomId::from("r"),
        ParticipantId::from("a"),
        ParticipantId::from("b"),
        ParticipantId::from("c"),
    )
}

fn drain(r: &mut Router) -> Vec<RouterEvent> {
    std::iter::from_fn(|| r.poll_event()).collect()
}

fn subscribed(events: &[RouterEvent]) -> Vec<(String, TrackId)> {
    events
        .iter()
        .filter_map(|e| match e {
            RouterEvent::Subscribed {
                subscriber, track, ..
            } => Some((subscriber.to_string(), *track)),
            _ => None,
        })
        .collect()
}

#[test]
fn two_participants_get_each_others_tracks() {
    let (room, a, b, _) = ids();
    let mut r = Router::new(RouterConfig::default());
    r.join(&room, &a).unwrap();
    let a_audio = r.publish(&a, TrackKind::Audio).unwrap();
    let a_video = r.publish(&a, TrackKind::Video).unwrap();
    // Nobody else yet: published, no subscriptions.
    let ev = drain(&mut r);
    assert_eq!(ev.len(), 2);
    assert!(subscribed(&ev).is_empty());

    // b joins and gets a's existing tracks.
    r.join(&room, &b).unwrap();
    let ev = drain(&mut r);
    assert_eq!(
        subscribed(&ev),
        vec![("b".into(), a_audio), ("b".into(), a_video)]
    );
    // b publishes: a gets it at once.
    let b_audio = r.publish(&b, TrackKind::Audio).unwrap();
    let ev = drain(&mut r);
    assert!(matches!(&ev[0], RouterEvent::TrackPublished { track, .. } if *track == b_audio));
    assert_eq!(subscribed(&ev), vec![("a".into(), b_audio)]);
    assert_eq!(r.subscribers(a_video), std::slice::from_ref(&b));
    assert_eq!(r.subscribers(b_audio), std::slice::from_ref(&a));
    assert_eq!(r.track(b_audio).unwrap().publisher, b);
}

#[test]
fn three_participants_each_receive_both_others() {
    let (room, a, b, c) = ids();
    let mut r = Router::new(RouterConfig::default());
    let mut tracks = Vec::new();
    for p in [&a, &b, &c] {
        r.join(&room, p).unwrap();
        tracks.push((p.clone(), r.publish(p, TrackKind::Audio).unwrap()));
        tracks.push((p.clone(), r.publish(p, TrackKind::Video).unwrap()));
    }
    for (publisher, track) in &tracks {
        let mut subs = r.subscribers(*track).to_vec();
        subs.sort();
        let mut expected: Vec<_> = [&a, &b, &c]
            .into_iter()
            .filter(|p| *p != publisher)
            .cloned()
            .collect();
        expected.sort();
        assert_eq!(subs, expected, "track {track}");
    }
    assert_eq!(r.census().subscriptions, 12);
}

#[test]
fn leave_frees_everything_and_unsubscribes_the_others() {
    let (room, a, b, c) = ids();
    let mut r = Router::new(RouterConfig::default());
    for p in [&a, &b, &c] {
        r.join(&room, p).unwrap();
        r.publish(p, TrackKind::Audio).unwrap();
        r.publish(p, TrackKind::Video).unwrap();
    }
    let a_tracks = r.published(&a).to_vec();
    drain(&mut r);
    r.leave(&a).unwrap();
    let ev = drain(&mut r);
    // b and c each lose both of a's tracks, then both tracks are unpublished.
    let unsub: Vec<_> = ev
        .iter()
        .filter(|e| matches!(e, RouterEvent::Unsubscribed { .. }))
        .collect();
    assert_eq!(unsub.len(), 4);
    let unpublished: Vec<TrackId> = ev
        .iter()
        .filter_map(|e| match e {
            RouterEvent::TrackUnpublished { track, .. } => Some(*track),
            _ => None,
        })
        .collect();
    assert_eq!(unpublished, a_tracks);
    assert_eq!(
        r.census(),
        Census {
            rooms: 1,
            participants: 2,
            tracks: 4,
            subscriptions: 4,
            mirrored: 0,
        }
    );
    assert!(r.members(&room).iter().all(|m| *m != a));
    for t in &a_tracks {
        assert!(r.track(*t).is_none());
        assert!(r.subscribers(*t).is_empty());
    }
    r.leave(&b).unwrap();
    r.leave(&c).unwrap();
    assert_eq!(r.census(), Census::default());
    assert_eq!(r.leave(&c), Err(RouterError::UnknownParticipant(c)));
}

#[test]
fn limits_are_enforced() {
    let (room, a, b, c) = ids();
    let config = RouterConfig {
        max_rooms: 1,
        max_participants_per_room: 2,
        max_tracks_per_participant: 2,
        ..RouterConfig::default()
    };
    let mut r = Router::new(config);
    r.join(&room, &a).unwrap();
    assert_eq!(
        r.join(&room, &a),
        Err(RouterError::AlreadyJoined(a.clone()))
    );
    r.join(&room, &b).unwrap();
    assert_eq!(r.join(&room, &c), Err(RouterError::RoomFull(room.clone())));
    assert_eq!(
        r.join(&RoomId::from("other"), &c),
        Err(RouterError::TooManyRooms)
    );
    r.publish(&a, TrackKind::Audio).unwrap();
    r.publish(&a, TrackKind::Video).unwrap();
    assert_eq!(
        r.publish(&a, TrackKind::Video),
        Err(RouterError::TooManyTracks(a.clone()))
    );
    // A refused call changed nothing.
    assert_eq!(r.census().tracks, 2);
    assert_eq!(r.census().participants, 2);
}

#[test]
fn publishers_per_room_are_limited_not_their_tracks_nor_listeners() {
    let (room, a, b, c) = ids();
    let mut r = Router::new(RouterConfig {
        max_publishers_per_room: 1,
        ..RouterConfig::default()
    });
    for p in [&a, &b, &c] {
        r.join(&room, p).unwrap();
    }
    // The first member to publish may publish more tracks; the next may not start.
    let audio = r.publish(&a, TrackKind::Audio).unwrap();
    r.publish(&a, TrackKind::Video).unwrap();
    assert_eq!(
        r.publish(&b, TrackKind::Audio),
        Err(RouterError::TooManyPublishers(room.clone()))
    );
    // Listeners still receive; another room has its own count.
    assert!(r.subscribers(audio).contains(&b));
    let (other, d) = (RoomId::from("other"), ParticipantId::from("d"));
    r.join(&other, &d).unwrap();
    r.publish(&d, TrackKind::Audio).unwrap();
    // Once the publisher leaves, the next member may publish.
    r.leave(&a).unwrap();
    r.publish(&b, TrackKind::Audio).unwrap();
    assert_eq!(
        r.publish(&c, TrackKind::Video),
        Err(RouterError::TooManyPublishers(room.clone()))
    );
    assert_eq!(r.census().tracks, 2);
}

#[test]
fn selective_subscription() {
    let (room, a, b, _) = ids();
    let mut r = Router::new(RouterConfig::default());
    r.join(&room, &a).unwrap();
    r.join(&room, &b).unwrap();
    r.set_auto_subscribe(&b, false).unwrap();
    let audio = r.publish(&a, TrackKind::Audio).unwrap();
    let video = r.publish(&a, TrackKind::Video).unwrap();
    assert!(r.subscribers(audio).is_empty());
    drain(&mut r);
    r.subscribe(&b, video).unwrap();
    r.subscribe(&b, video).unwrap(); // idempotent
    assert_eq!(subscribed(&drain(&mut r)), vec![("b".into(), video)]);
    assert_eq!(r.subscribers(video), std::slice::from_ref(&b));
    r.unsubscribe(&b, video).unwrap();
    assert_eq!(
        drain(&mut r),
        vec![RouterEvent::Unsubscribed {
            subscriber: b.clone(),
            track: video
        }]
    );
    assert!(matches!(
        r.subscribe(&a, audio),
        Err(RouterError::NotSubscribable { .. })
    ));
    // A participant of another room cannot take this room's tracks.
    let z = ParticipantId::from("z");
    r.join(&RoomId::from("other"), &z).unwrap();
    assert!(matches!(
        r.subscribe(&z, audio),
        Err(RouterError::NotSubscribable { .. })
    ));
    assert_eq!(
        r.subscribe(&b, TrackId(999)),
        Err(RouterError::UnknownTrack(TrackId(999)))
    );
}

#[test]
fn keyframe_requests_are_throttled_per_track() {
    let (room, a, _, _) = ids();
    let mut r = Router::new(RouterConfig::default());
    r.join(&room, &a).unwrap();
    let v1 = r.publish(&a, TrackKind::Video).unwrap();
    let v2 = r.publish(&a, TrackKind::Video).unwrap();
    let t0 = Instant::now();
    assert!(r.request_keyframe(v1, t0));
    // Other track: own budget.
    assert!(r.request_keyframe(v2, t0));
    assert!(!r.request_keyframe(v1, t0 + Duration::from_millis(100)));
    assert!(!r.request_keyframe(v1, t0 + Duration::from_millis(499)));
    assert!(r.request_keyframe(v1, t0 + Duration::from_millis(500)));
    assert_eq!(r.keyframe_requests_suppressed(v1), 2);
    assert!(!r.request_keyframe(TrackId(999), t0));
}

#[test]
fn audio_tracks_never_ask_for_keyframes() {
    let (room, a, _, _) = ids();
    let mut r = Router::new(RouterConfig::default());
    r.join(&room, &a).unwrap();
    let audio = r.publish(&a, TrackKind::Audio).unwrap();
    assert!(!r.request_keyframe(audio, Instant::now()));
}

#[test]
fn active_speaker_follows_the_loudest_and_clears_when_it_leaves() {
    let (room, a, b, _) = ids();
    let mut r = Router::new(RouterConfig::default());
    r.join(&room, &a).unwrap();
    r.join(&room, &b).unwrap();
    let ta = r.publish(&a, TrackKind::Audio).unwrap();
    let tb = r.publish(&b, TrackKind::Audio).unwrap();
    drain(&mut r);
    let mut now = Instant::now();
    let speak = |r: &mut Router, now: &mut Instant, la: u8, lb: u8| {
        let mut speakers = Vec::new();
        for _ in 0..50 {
            *now += Duration::from_millis(20);
            r.audio_level(ta, la, *now);
            r.audio_level(tb, lb, *now);
            if r.poll_timeout().is_some_and(|t| t <= *now) {
                r.handle_timeout(*now);
            }
            for e in std::iter::from_fn(|| r.poll_event()) {
                if let RouterEvent::ActiveSpeaker { participant, .. } = e {
                    speakers.push(participant);
                }
            }
        }
        speakers
    };
    assert_eq!(speak(&mut r, &mut now, 25, 70), vec![Some(a.clone())]);
    assert_eq!(speak(&mut r, &mut now, 80, 20), vec![Some(b.clone())]);
    assert_eq!(r.active_speaker(&room), Some(&b));
    r.leave(&b).unwrap();
    let ev = drain(&mut r);
    assert!(ev.contains(&RouterEvent::ActiveSpeaker {
        room: room.clone(),
        participant: None
    }));
    assert_eq!(r.active_speaker(&room), None);
}

#[test]
fn simulcast_layers_are_ranked_bounded_and_throttled_per_layer() {
    let (room, a, b, _) = ids();
    let mut r = Router::new(RouterConfig::default());
    r.join(&room, &a).unwrap();
    r.join(&room, &b).unwrap();
    let audio = r.publish(&a, TrackKind::Audio).unwrap();
    let video = r.publish(&a, TrackKind::Video).unwrap();
    // Declared high to low, with a repeat, an overlong rid and an empty one.
    let n = r.set_layers(video, &["f", "h", "f", "overlong-rid", "", "q"]);
    assert_eq!(n, 3);
    let rids: Vec<&str> = r.layers(video).iter().map(|l| &*l.rid).collect();
    assert_eq!(rids, ["q", "h", "f"]);
    assert_eq!(r.layer_of(video, "f"), Some(2));
    assert_eq!(r.layer_of(video, "x"), None);
    // Audio has no layers; one rid is no simulcast; more than MAX_LAYERS are cut.
    assert_eq!(r.set_layers(audio, &["q", "f"]), 0);
    let many: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let other = r.publish(&a, TrackKind::Video).unwrap();
    assert_eq!(r.set_layers(other, &many), MAX_LAYERS);
    assert_eq!(r.set_layers(other, &["only"]), 0);
    assert!(r.layers(other).is_empty());

    // Rates are measured per layer; a silent layer turns inactive.
    let t0 = Instant::now();
    for i in 0..=25u64 {
        let at = t0 + Duration::from_millis(i * 40);
        r.record_frame(video, Some(0), 500, at);
        r.record_frame(video, Some(2), 5000, at);
    }
    let mut infos = Vec::new();
    r.layer_infos(video, t0 + Duration::from_secs(1), &mut infos);
    assert!(
        infos[0].bitrate_bps > 90_000 && infos[0].bitrate_bps < 120_000,
        "{infos:?}"
    );
    assert!(infos[2].bitrate_bps > 900_000, "{infos:?}");
    assert!(infos[0].active && !infos[1].active && infos[2].active);

    // Keyframe requests are throttled per layer, not across layers.
    let t = t0 + Duration::from_secs(5);
    assert!(r.request_layer_keyframe(video, 2, t));
    assert!(!r.request_layer_keyframe(video, 2, t + Duration::from_millis(10)));
    assert!(r.request_layer_keyframe(video, 0, t + Duration::from_millis(10)));
    assert!(!r.request_layer_keyframe(video, 7, t));
    assert_eq!(r.keyframe_requests_suppressed(video), 1);
}

#[test]
fn an_unlayered_track_is_one_layer_to_the_allocation() {
    let (room, a, _, _) = ids();
    let mut r = Router::new(RouterConfig::default());
    r.join(&room, &a).unwrap();
    let video = r.publish(&a, TrackKind::Video).unwrap();
    let mut infos = Vec::new();
    let t0 = Instant::now();
    r.layer_infos(video, t0, &mut infos);
    assert_eq!(
        infos,
        [LayerInfo {
            bitrate_bps: 0,
            active: false
        }]
    );
    for i in 0..=25u64 {
        r.record_frame(video, None, 1000, t0 + Duration::from_millis(i * 40));
    }
    r.layer_infos(video, t0 + Duration::from_secs(1), &mut infos);
    assert_eq!(infos.len(), 1);
    assert!(
        infos[0].active && infos[0].bitrate_bps > 190_000,
        "{infos:?}"
    );
    // Its layer 0 is the track: one throttle for both ways of asking.
    assert!(r.request_layer_keyframe(video, 0, t0));
    assert!(!r.request_keyframe(video, t0 + Duration::from_millis(10)));
    assert!(!r.request_layer_keyframe(video, 1, t0 + Duration::from_secs(1)));
    let audio = r.publish(&a, TrackKind::Audio).unwrap();
    assert!(!r.request_layer_keyframe(audio, 0, t0));
    r.layer_infos(TrackId(999), t0, &mut infos);
    assert!(infos.is_empty());
}

#[test]
fn last_n_forwards_video_of_the_most_recent_speakers_only() {
    let mut r = Router::new(RouterConfig {
        last_n: Some(2),
        ..RouterConfig::default()
    });
    let room = RoomId::from("r");
    let names = ["a", "b", "c", "d"];
    let ids: Vec<ParticipantId> = names.iter().map(|n| ParticipantId::from(*n)).collect();
    let mut audio = Vec::new();
    let mut video = Vec::new();
    for p in &ids {
        r.join(&room, p).unwrap();
        audio.push(r.publish(p, TrackKind::Audio).unwrap());
        video.push(r.publish(p, TrackKind::Video).unwrap());
    }
    // Whose video `who` gets, by name.
    let sees = |r: &Router, who: usize| -> Vec<&str> {
        (0..ids.len())
            .filter(|i| *i != who && r.video_forwarded(&ids[who], video[*i]))
            .map(|i| names[i])
            .collect()
    };
    // Nobody spoke yet: the earliest joiners, never oneself.
    assert_eq!(sees(&r, 3), ["a", "b"]);
    assert_eq!(sees(&r, 0), ["b", "c"]);
    // Audio is never held back.
    assert!(r.video_forwarded(&ids[3], audio[2]));

    let mut now = Instant::now();
    let mut speak = |r: &mut Router, who: usize| {
        for _ in 0..50 {
            now += Duration::from_millis(20);
            for (i, t) in audio.iter().enumerate() {
                r.audio_level(*t, if i == who { 20 } else { 90 }, now);
            }
            if r.poll_timeout().is_some_and(|t| t <= now) {
                r.handle_timeout(now);
            }
        }
        assert_eq!(r.active_speaker(&room), Some(&ids[who]));
    };
    speak(&mut r, 3);
    assert_eq!(sees(&r, 0), ["b", "d"]);
    assert_eq!(sees(&r, 3), ["a", "b"]);
    speak(&mut r, 2);
    assert_eq!(sees(&r, 0), ["c", "d"]);
    assert_eq!(sees(&r, 1), ["c", "d"]);
    assert_eq!(sees(&r, 2), ["a", "d"]);
    // A recent speaker who leaves makes room for the next.
    r.leave(&ids[3]).unwrap();
    assert_eq!(sees(&r, 0), ["b", "c"]);

    // Pinning: a (quiet) member's video always comes, in the first slot; the rest go to
    // the recent speakers, as before. Only for the one who pins.
    let e = ParticipantId::from("e");
    r.join(&room, &e).unwrap();
    let e_video = r.publish(&e, TrackKind::Video).unwrap();
    assert!(!r.video_forwarded(&ids[0], e_video));
    r.set_pinned(&ids[0], &[e.clone(), ids[0].clone(), e.clone()])
        .unwrap();
    assert!(r.video_forwarded(&ids[0], e_video));
    assert_eq!(sees(&r, 0), ["c"]);
    assert!(!r.video_forwarded(&ids[1], e_video));
    // Two pinned fill both slots; the speakers wait.
    r.set_pinned(&ids[0], &[e.clone(), ids[1].clone()]).unwrap();
    assert_eq!(sees(&r, 0), ["b"]);
    assert!(r.video_forwarded(&ids[0], e_video));
    // Refused, the list unchanged: someone of no room, or too many.
    let stranger = ParticipantId::from("x");
    assert_eq!(
        r.set_pinned(&ids[0], std::slice::from_ref(&stranger)),
        Err(RouterError::NotInRoom(stranger))
    );
    let other = RoomId::from("other");
    let f = ParticipantId::from("f");
    r.join(&other, &f).unwrap();
    assert_eq!(
        r.set_pinned(&ids[0], std::slice::from_ref(&f)),
        Err(RouterError::NotInRoom(f))
    );
    let many: Vec<ParticipantId> = (0..=MAX_PINNED)
        .map(|i| ParticipantId::from(format!("m{i}").as_str()))
        .collect();
    for m in &many {
        r.join(&room, m).unwrap();
    }
    assert_eq!(
        r.set_pinned(&ids[0], &many),
        Err(RouterError::TooManyPinned(ids[0].clone()))
    );
    assert!(r.video_forwarded(&ids[0], e_video));
    // A pinned member who leaves is unpinned; an empty list unpins.
    r.leave(&e).unwrap();
    assert_eq!(sees(&r, 0), ["b", "c"]);
    r.set_pinned(&ids[0], &[]).unwrap();
    assert_eq!(sees(&r, 0), ["b", "c"]);
    let nobody = ParticipantId::from("nobody");
    assert_eq!(
        r.set_pinned(&nobody, &[]),
        Err(RouterError::UnknownParticipant(nobody))
    );
}

#[test]
fn a_member_of_another_shard_is_mirrored_with_its_shard_s_track_ids() {
    let (room, a, b, _) = ids();
    let mut r = Router::new(RouterConfig {
        max_participants_per_room: 1,
        ..RouterConfig::default()
    });
    r.join(&room, &a).unwrap();
    // The room is full by this router's own limit; a mirror is not held to it (its
    // shard counted it against the SFU's).
    assert!(matches!(r.join(&room, &b), Err(RouterError::RoomFull(_))));
    r.join_unchecked(&room, &b).unwrap();
    drain(&mut r);
    // b's track under the id its shard gave it: a is subscribed as to any track.
    r.publish_mirror(&b, TrackKind::Audio, TrackId(42)).unwrap();
    assert_eq!(subscribed(&drain(&mut r)), [("a".to_string(), TrackId(42))]);
    // Told twice (an answer and a publish crossing): one track.
    r.publish_mirror(&b, TrackKind::Audio, TrackId(42)).unwrap();
    assert!(drain(&mut r).is_empty());
    let a_audio = r.publish(&a, TrackKind::Audio).unwrap();
    // Counted for this shard: a, its track and subscription; b as a mirror.
    let local = |p: &ParticipantId| *p == a;
    assert_eq!(
        r.census_of(local, |_| true),
        Census {
            rooms: 1,
            participants: 1,
            tracks: 1,
            subscriptions: 1,
            mirrored: 1,
        }
    );
    assert_eq!(r.census_of(local, |_| false).rooms, 0);
    // The mirror leaving takes its track from a.
    r.leave(&b).unwrap();
    assert!(r.track(TrackId(42)).is_none());
    assert_eq!(r.subscribers(a_audio), &[] as &[ParticipantId]);
    assert_eq!(r.census_of(local, |_| true).mirrored, 0);
}

#[test]
fn a_muted_track_is_dropped_and_unmuted_video_resumes_per_layer_at_keyframes() {
    let (room, a, _, _) = ids();
    let mut r = Router::new(RouterConfig::default());
    r.join(&room, &a).unwrap();
    let audio = r.publish(&a, TrackKind::Audio).unwrap();
    let video = r.publish(&a, TrackKind::Video).unwrap();
    assert_eq!(r.set_layers(video, &["q", "h", "f"]), 3);
    use MuteGate::{Drop, NeedsKeyframe, Pass};
    assert_eq!(r.mute_gate(audio, None, false), Pass);
    // Muting is reported once; while muted every frame is dropped, keyframes too.
    assert!(r.set_muted(audio, true) && r.set_muted(video, true));
    assert!(!r.set_muted(audio, true), "already muted");
    assert!(r.is_muted(audio) && r.is_muted(video));
    assert_eq!(r.mute_gate(audio, None, false), Drop);
    assert_eq!(r.mute_gate(video, Some(1), true), Drop);
    // Unmuted audio flows at once; each video layer waits for its own keyframe.
    assert!(r.set_muted(audio, false) && r.set_muted(video, false));
    assert_eq!(r.mute_gate(audio, None, false), Pass);
    assert_eq!(r.mute_gate(video, Some(0), false), NeedsKeyframe);
    assert_eq!(r.mute_gate(video, Some(2), true), Pass);
    assert_eq!(r.mute_gate(video, Some(2), false), Pass);
    assert_eq!(r.mute_gate(video, Some(0), false), NeedsKeyframe);
    assert_eq!(r.mute_gate(video, Some(1), false), NeedsKeyframe);
    assert_eq!(r.mute_gate(video, Some(0), true), Pass);
    assert_eq!(r.mute_gate(video, Some(1), true), Pass);
    assert_eq!(r.mute_gate(video, Some(0), false), Pass);
    // Unknown tracks are not the gate's business.
    assert_eq!(r.mute_gate(TrackId(999), None, false), Pass);
    assert!(!r.set_muted(TrackId(999), true));
}

#[test]
fn a_muted_participants_later_tracks_of_that_kind_start_muted() {
    let (room, a, b, _) = ids();
    let mut r = Router::new(RouterConfig::default());
    r.join(&room, &a).unwrap();
    r.join(&room, &b).unwrap();
    let audio = r.publish(&a, TrackKind::Audio).unwrap();
    // Muting a kind changes the tracks of that kind now, and reports them.
    assert_eq!(
        r.mute_participant(&a, Some(TrackKind::Audio), true)
            .unwrap(),
        vec![(audio, TrackKind::Audio)]
    );
    assert!(r.is_participant_muted(&a, TrackKind::Audio));
    assert!(!r.is_participant_muted(&a, TrackKind::Video));
    assert!(!r.is_participant_muted(&b, TrackKind::Audio));
    // A microphone published again (a new track) is muted too; a camera is not.
    let audio2 = r.publish(&a, TrackKind::Audio).unwrap();
    let video = r.publish(&a, TrackKind::Video).unwrap();
    assert!(r.is_muted(audio2));
    assert_eq!(r.mute_gate(audio2, None, false), MuteGate::Drop);
    assert!(!r.is_muted(video));
    // Others are not affected.
    let b_audio = r.publish(&b, TrackKind::Audio).unwrap();
    assert!(!r.is_muted(b_audio));
    // Muting both kinds reports only what changed; unmuting lifts it for later tracks.
    assert_eq!(
        r.mute_participant(&a, None, true).unwrap(),
        vec![(video, TrackKind::Video)]
    );
    let changed = r.mute_participant(&a, None, false).unwrap();
    assert_eq!(changed.len(), 3, "{changed:?}");
    let audio3 = r.publish(&a, TrackKind::Audio).unwrap();
    assert!(!r.is_muted(audio3));
    assert!(!r.is_participant_muted(&a, TrackKind::Audio));
    // Strangers are refused; a new join starts unmuted.
    assert!(
        r.mute_participant(&ParticipantId::from("nobody"), None, true)
            .is_err()
    );
    r.mute_participant(&a, None, true).unwrap();
    r.leave(&a).unwrap();
    r.join(&room, &a).unwrap();
    assert!(!r.is_participant_muted(&a, TrackKind::Audio));
}
