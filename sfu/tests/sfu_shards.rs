//! Shards: several driver threads, each with its own socket on the one media address
//! (SO_REUSEPORT). Rooms are spread over the shards; datagrams that the kernel hands to
//! a shard not holding their peer are passed to the one that does, so every call works
//! whichever socket its packets reach. Track ids, the room limit and the census are the
//! SFU's, not a shard's.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Call, eventually};
use huddle_sfu::{RouterConfig, RouterError, SfuConfig, SfuError, SfuEvent, TrackKind};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_on_several_shards_all_work_and_datagrams_find_their_shard() {
    let mut call = Call::start_with(sharded(3, 100)).await;
    assert_eq!(call.sfu.shards(), 3);
    let rooms = ["north", "south", "east", "west", "up", "down"];
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

    // The rooms live on more than one shard, each shard reporting its own.
    let reporting = eventually(WAIT, || {
        let shards: HashSet<usize> = call
            .events()
            .iter()
            .filter_map(|e| match e {
                SfuEvent::Stats {
                    shard,
                    participants,
                } if !participants.is_empty() => Some(*shard),
                _ => None,
            })
            .collect();
        shards.len() >= 2
    })
    .await;
    assert!(reporting, "all rooms on one shard");
    // Track ids are unique across shards.
    let tracks: Vec<_> = call
        .events()
        .iter()
        .filter_map(|e| match e {
            SfuEvent::TrackPublished { track, .. } => Some(*track),
            _ => None,
        })
        .collect();
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
        call.sfu.leave("north-a").await,
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
