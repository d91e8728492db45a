//! Shards: several driver threads, each with its own socket on the one media address
//! (SO_REUSEPORT). Rooms are spread over the shards; datagrams that the kernel hands to
//! a shard not holding their peer are passed to the one that does, so every call works
//! whichever socket its packets reach. Track ids, the room limit and the census are the
//! SFU's, not a shard's.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Call, VideoCodec, eventually};
use huddle_sfu::router::Census;
use huddle_sfu::{
    RouterConfig, RouterError, SfuConfig, SfuError, SfuEvent, SfuHandle, TrackId, TrackKind,
};

const WAIT: Duration = Duration::from_secs(15);

fn sharded(shards: usize, max_rooms: usize) -> SfuConfig {
    SfuConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        shards,
        stats_interval: Duration::from_millis(200),
        router: RouterConfig {
            max_rooms,
            ..RouterConfig::default()
        },
        ..SfuConfig::default()
    }
}

/// Track ids of every `TrackPublished` event so far.
fn published(call: &Call) -> Vec<TrackId> {
    call.events()
        .iter()
        .filter_map(|e| match e {
            SfuEvent::TrackPublished { track, .. } => Some(*track),
            _ => None,
        })
        .collect()
}

/// Polls the census (and session count) until `done` accepts it; fails after `WAIT`.
async fn census_until(sfu: &SfuHandle, done: impl Fn(&Census, usize) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (c, sessions) = sfu.census().await.unwrap();
        if done(&c, sessions) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "census {c:?}, {sessions} sessions"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_on_several_shards_all_work_and_datagrams_find_their_shard() {
    let mut call = Call::start_with(sharded(3, 100)).await;
    assert_eq!(call.sfu.shards(), 3);
    // Names that all hash to one shard of three (std's `DefaultHasher` today): placed
    // by their names alone, the six rooms would share one shard.
    let rooms = ["south", "west", "green", "blue", "amber", "olive"];
    for room in rooms {
        call.join_with(room, &format!("{room}-a"), None).await;
        call.join_with(room, &format!("{room}-b"), None).await;
    }
    let all_hear = eventually(WAIT, || {
        rooms.iter().all(|room| {
            let (a, b) = (format!("{room}-a"), format!("{room}-b"));
            call.client(&a).frames_from(&b, TrackKind::Audio) >= 10
                && call.client(&b).frames_from(&a, TrackKind::Audio) >= 10
        })
    })
    .await;
    assert!(all_hear, "some room's participants do not hear each other");
    // Nobody hears another room.
    for room in rooms {
        for other in rooms.iter().filter(|r| **r != room) {
            let a = format!("{room}-a");
            assert_eq!(
                call.client(&a)
                    .frames_from(&format!("{other}-a"), TrackKind::Audio),
                0
            );
        }
    }
    let m = call.sfu.metrics().clone();
    // 12 clients' sources spread over 3 sockets: most land on a shard that does not
    // hold their peer (all on the right one has odds of 3^-12).
    assert!(m.datagrams_handed_off.get() > 0, "nothing was handed off");
    assert_eq!(m.handoff_dropped.get(), 0);
    assert_eq!(m.unrouted_dropped.get(), 0, "a datagram found no peer");

    // New rooms go to the shard with the fewest sessions: two rooms (four sessions)
    // on each, each shard reporting its own.
    let mut latest = HashMap::new();
    let balanced = eventually(WAIT, || {
        for e in call.events().iter() {
            if let SfuEvent::Stats {
                shard,
                participants,
            } = e
            {
                latest.insert(*shard, participants.len());
            }
        }
        latest == HashMap::from([(0, 4), (1, 4), (2, 4)])
    })
    .await;
    assert!(balanced, "sessions per shard: {latest:?}");
    // Track ids are unique across shards.
    let tracks = published(&call);
    assert_eq!(tracks.len(), 12);
    assert_eq!(
        tracks.iter().collect::<HashSet<_>>().len(),
        12,
        "{tracks:?}"
    );
    let (census, sessions) = call.sfu.census().await.unwrap();
    assert_eq!((census.rooms, census.participants, sessions), (6, 12, 12));
    assert_eq!(call.sfu.stats().await.unwrap().len(), 12);
    assert!(eventually(WAIT, || m.participants.get() == 12 && m.rooms.get() == 6).await);

    // Leaving frees everything on every shard; a second leave knows nobody.
    for room in rooms {
        for who in ["a", "b"] {
            call.sfu.leave(format!("{room}-{who}")).await.unwrap();
        }
    }
    let (census, sessions) = call.sfu.census().await.unwrap();
    assert_eq!(
        (census.rooms, census.participants, census.tracks),
        (0, 0, 0)
    );
    assert_eq!(sessions, 0);
    assert_eq!(
        (m.participants.get(), m.rooms.get(), m.tracks.get()),
        (0, 0, 0)
    );
    assert!(matches!(
        call.sfu.leave("south-a").await,
        Err(SfuError::Router(RouterError::UnknownParticipant(_)))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_limit_counts_every_shard() {
    let call = Call::start_with(sharded(4, 2)).await;
    let sfu = &call.sfu;
    sfu.join("one", "p1").await.unwrap();
    sfu.join("two", "p2").await.unwrap();
    // Joining an open room is fine; a third room is refused whichever shard it hashes to.
    sfu.join("one", "p3").await.unwrap();
    for room in ["three", "four", "five", "six"] {
        assert!(
            matches!(
                sfu.join(room, "p4").await,
                Err(SfuError::Router(RouterError::TooManyRooms))
            ),
            "{room} admitted"
        );
    }
    // A participant is in one room at a time, also when the other room is on
    // another shard.
    assert!(matches!(
        sfu.join("two", "p1").await,
        Err(SfuError::Router(RouterError::AlreadyJoined(_)))
    ));
    // Closing a room frees a place.
    sfu.leave("p2").await.unwrap();
    sfu.join("three", "p4").await.unwrap();
    let (census, _) = sfu.census().await.unwrap();
    assert_eq!((census.rooms, census.participants), (2, 3));
}

/// With `spread_rooms_above = 1` on two shards the room's members alternate between
/// the shards: every frame crosses once to the other shard, which holds two of its
/// three subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spread_over_shards_works_like_one_room() {
    let mut config = sharded(2, 100);
    config.spread_rooms_above = 1;
    let mut call = Call::start_with(config).await;
    let names = ["a", "b", "c", "d"];
    for n in names {
        call.join("big", n, VideoCodec::H264).await;
    }
    let everyone_gets_everyone = |call: &Call, min: u64| {
        names.iter().all(|to| {
            names.iter().filter(|from| *from != to).all(|from| {
                call.client(to).frames_from(from, TrackKind::Audio) >= min
                    && call.client(to).frames_from(from, TrackKind::Video) >= min
            })
        })
    };
    assert!(
        eventually(WAIT, || everyone_gets_everyone(&call, 10)).await,
        "someone misses someone's audio or video"
    );
    // The members are on both shards, two each.
    let per_shard = eventually(WAIT, || {
        let mut latest: [Option<usize>; 2] = [None, None];
        for e in call.events().iter().rev() {
            if let SfuEvent::Stats {
                shard,
                participants,
            } = e
            {
                latest[*shard].get_or_insert(participants.len());
            }
        }
        latest == [Some(2), Some(2)]
    })
    .await;
    assert!(per_shard, "the room was not spread over both shards");
    // Each track is reported once, by its publisher's shard; ids are unique.
    let tracks = published(&call);
    assert_eq!(tracks.len(), 8, "{tracks:?}");
    assert_eq!(tracks.iter().collect::<HashSet<_>>().len(), 8);
    let m = call.sfu.metrics().clone();
    assert!(
        eventually(WAIT, || m.participants.get() == 4
            && m.rooms.get() == 1
            && m.tracks.get() == 8)
        .await
    );
    assert_eq!(m.handoff_dropped.get(), 0);
    assert!(m.frames_handed_off.get() > 0);
    // Counted once: each member and track by its own shard, the room by one shard, and
    // each shard holds the other's two members as mirrors.
    let (c, sessions) = call.sfu.census().await.unwrap();
    assert_eq!(
        (
            c.rooms,
            c.participants,
            c.tracks,
            c.subscriptions,
            c.mirrored,
            sessions
        ),
        (1, 4, 8, 24, 4, 4)
    );

    // A keyframe request from every subscriber reaches every publisher, half of them
    // through the other shard (after the throttle's 500 ms since the requests the SFU
    // made when the tracks opened).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before: Vec<u64> = names
        .iter()
        .map(|n| call.client(n).keyframe_requests())
        .collect();
    for n in names {
        call.client(n).plis_to_send.store(3, Ordering::Relaxed);
    }
    let asked = eventually(WAIT, || {
        names
            .iter()
            .zip(&before)
            .all(|(n, b)| call.client(n).keyframe_requests() > *b)
    })
    .await;
    let after: Vec<u64> = names
        .iter()
        .map(|n| call.client(n).keyframe_requests())
        .collect();
    assert!(
        asked,
        "a publisher was not asked for a keyframe: {before:?} -> {after:?}, received {} sent {} throttled {}",
        m.keyframe_requests_received.get(),
        m.keyframe_requests_sent.get(),
        m.keyframe_requests_throttled.get()
    );

    // The active speaker is reported once per change, by one shard.
    for n in names {
        let level = if n == "c" { 20 } else { 90 };
        call.client(n).level.store(level, Ordering::Relaxed);
    }
    let speakers = || -> Vec<Option<String>> {
        call.events()
            .iter()
            .filter_map(|e| match e {
                SfuEvent::ActiveSpeaker { participant, .. } => {
                    Some(participant.as_ref().map(|p| p.to_string()))
                }
                _ => None,
            })
            .collect()
    };
    assert!(
        eventually(WAIT, || speakers().last() == Some(&Some("c".to_string()))).await,
        "{:?}",
        speakers()
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let said = speakers();
    assert!(
        said.windows(2).all(|w| w[0] != w[1]),
        "a speaker change reported twice: {said:?}"
    );

    // The server mutes b's microphone: nobody, on either shard, hears b, everyone still
    // sees b; unmuted, everyone hears b again.
    let others = ["a", "c", "d"];
    let heard = |call: &Call| -> Vec<u64> {
        others
            .iter()
            .map(|n| call.client(n).frames_from("b", TrackKind::Audio))
            .collect()
    };
    let tracks = call.sfu.mute("b", Some(TrackKind::Audio), true).await;
    assert_eq!(tracks.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (muted_at, seen_at) = (
        heard(&call),
        call.client("a").frames_from("b", TrackKind::Video),
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(heard(&call), muted_at, "b's muted audio still arrives");
    assert!(call.client("a").frames_from("b", TrackKind::Video) >= seen_at + 10);
    call.sfu.mute("b", None, false).await.unwrap();
    assert!(
        eventually(WAIT, || heard(&call)
            .iter()
            .zip(&muted_at)
            .all(|(now, then)| *now >= then + 10))
        .await,
        "b's audio did not come back everywhere"
    );

    // One leaves (whichever shard it was on): the others stop getting it.
    call.sfu.leave("b").await.unwrap();
    call.client("b").stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stay = [("a", "c"), ("c", "d"), ("d", "a")];
    let counts: Vec<(u64, u64)> = stay
        .iter()
        .map(|(n, other)| {
            let c = call.client(n);
            (
                c.frames_from("b", TrackKind::Audio),
                c.frames_from(other, TrackKind::Audio),
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for ((n, other), (from_b, from_other)) in stay.iter().zip(&counts) {
        let c = call.client(n);
        assert_eq!(
            c.frames_from("b", TrackKind::Audio),
            *from_b,
            "{n} still gets b"
        );
        assert!(
            c.frames_from(other, TrackKind::Audio) >= from_other + 25,
            "{n} no longer gets {other}"
        );
    }
    let unpublished = call
        .events()
        .iter()
        .filter(|e| matches!(e, SfuEvent::TrackUnpublished { .. }))
        .count();
    assert_eq!(unpublished, 2, "b's two tracks, reported once each");

    // Everyone leaving frees the room on both shards, mirrors included.
    for n in ["a", "c", "d"] {
        call.sfu.leave(n).await.unwrap();
    }
    census_until(&call.sfu, |c, sessions| {
        *c == Census::default() && sessions == 0
    })
    .await;
    assert!(
        eventually(WAIT, || m.participants.get() == 0
            && m.rooms.get() == 0
            && m.tracks.get() == 0)
        .await
    );
}

/// Members joining a spread room at once, on three shards, all learn of each other:
/// every shard ends up holding the other shards' members as mirrors, and they all go
/// when everyone leaves at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_and_leaves_of_a_spread_room_stay_consistent() {
    let mut config = sharded(3, 100);
    config.spread_rooms_above = 1;
    let call = Call::start_with(config).await;
    let names: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
    let joins = names.iter().map(|n| {
        let sfu = call.sfu.clone();
        let n = n.clone();
        tokio::spawn(async move { sfu.join("crowd", n).await })
    });
    for j in joins.collect::<Vec<_>>() {
        j.await.unwrap().unwrap();
    }
    let census = |want: (usize, usize, usize, usize)| {
        census_until(&call.sfu, move |c, sessions| {
            (c.rooms, c.participants, c.mirrored, sessions) == want
        })
    };
    // One room, twelve members, each held as a mirror by the two shards it is not on
    // (the room spreads over all three: one member at home, then the emptiest shard).
    census((1, 12, 24, 12)).await;
    let leaves = names.iter().take(6).map(|n| {
        let sfu = call.sfu.clone();
        let n = n.clone();
        tokio::spawn(async move { sfu.leave(n).await })
    });
    for l in leaves.collect::<Vec<_>>() {
        l.await.unwrap().unwrap();
    }
    // Six members left, on one to three shards: each held by the other shards that
    // still hold the room.
    census_until(&call.sfu, |c, sessions| {
        (c.rooms, c.participants, sessions) == (1, 6, 6) && [0, 6, 12].contains(&c.mirrored)
    })
    .await;
    for n in names.iter().skip(6) {
        call.sfu.leave(n.as_str()).await.unwrap();
    }
    census((0, 0, 0, 0)).await;
}

/// `max_publishers_per_room` holds for a room spread over shards. When its publisher
/// leaves, every shard holding a waiting member tries it at once (each router sees
/// the others' publishers only once mirrored), and still one is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_limit_holds_across_shards_when_every_shard_retries_at_once() {
    let mut config = sharded(3, 100);
    config.spread_rooms_above = 1;
    config.router.max_publishers_per_room = 1;
    let mut call = Call::start_with(config).await;
    // Two members on each shard, all with a microphone.
    let names: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    for n in &names {
        call.join_with("stage", n, None).await;
    }
    let publishers = |call: &Call| -> Vec<String> {
        call.events()
            .iter()
            .filter_map(|e| match e {
                SfuEvent::TrackPublished { participant, .. } => Some(participant.to_string()),
                _ => None,
            })
            .collect()
    };
    let refused = |call: &Call| {
        call.events()
            .iter()
            .filter(|e| matches!(e, SfuEvent::TrackRefused { .. }))
            .count()
    };
    assert!(
        eventually(WAIT, || refused(&call) == 5).await,
        "refused {}",
        refused(&call)
    );
    let first = publishers(&call);
    assert_eq!(first.len(), 1, "admitted: {first:?}");
    let first = first[0].clone();
    let heard = |call: &Call, publisher: &str| {
        names
            .iter()
            .filter(|n| n.as_str() != publisher)
            .all(|n| call.client(n).frames_from(publisher, TrackKind::Audio) > 10)
    };
    assert!(eventually(WAIT, || heard(&call, &first)).await);

    // After the `n`th admission, no other within the time the other shards' retries
    // would take to admit one, were they to; one track in a room of five. The admitted.
    let admitted_alone = |n: usize| {
        let call = &call;
        async move {
            assert!(eventually(WAIT, || publishers(call).len() >= n).await);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = publishers(call);
            assert_eq!(now.len(), n, "admitted: {now:?}");
            let (census, _) = call.sfu.census().await.unwrap();
            assert_eq!((census.participants, census.tracks), (5, 1));
            now[n - 1].clone()
        }
    };

    // The publisher leaves: one of the five waiting is admitted, and it is heard.
    call.sfu.leave(first.as_str()).await.unwrap();
    let second = admitted_alone(2).await;
    assert!(
        eventually(WAIT, || call
            .client(
                names
                    .iter()
                    .find(|n| **n != first && **n != second)
                    .unwrap()
            )
            .frames_from(&second, TrackKind::Audio)
            > 10)
        .await
    );

    // It stops sending (unpublishes its one track, staying in the room): the slot is
    // free again, and again one waiting member takes it.
    call.client(&second).stop_audio();
    admitted_alone(3).await;
}
