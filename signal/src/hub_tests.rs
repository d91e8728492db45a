//! Deterministic tests of the hub: simulated time, real outbound queues.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::auth::{Claims, ISSUER, default_grants};
use crate::config::{CallsConfig, RoomsConfig, SignalConfig};
use crate::hub::{Attached, Hub, HubConfig};
use crate::protocol::{ClientMessage, Decoded, RequestId, decode};

struct Client {
    rx: mpsc::Receiver<axum::extract::ws::Utf8Bytes>,
    at: Attached,
}

impl Client {
    fn drain(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(f) = self.rx.try_recv() {
            out.push(serde_json::from_str(&f).unwrap());
        }
        out
    }
    fn types(&mut self) -> Vec<String> {
        self.drain()
            .iter()
            .map(|v| v["type"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn claims(identity: &str, room: Option<&str>) -> Claims {
    Claims {
        sub: identity.into(),
        name: None,
        room: room.map(Into::into),
        grants: default_grants(),
        iss: ISSUER.into(),
        iat: 0,
        nbf: None,
        exp: u64::MAX,
    }
}

fn hub(t0: Instant) -> Hub {
    let cfg = HubConfig {
        signal: SignalConfig {
            resume_grace: Duration::from_secs(10),
            resume_buffer: 8,
            outbound_queue: 64,
            ..Default::default()
        },
        rooms: RoomsConfig {
            max_participants: 3,
            idle_timeout: Duration::from_secs(60),
            ..Default::default()
        },
        calls: CallsConfig {
            ring_timeout: Duration::from_secs(30),
        },
        ice: Default::default(),
    };
    Hub::new(cfg, Arc::default(), t0)
}

fn connect(
    h: &mut Hub,
    identity: &str,
    room: Option<&str>,
    resume: Option<&str>,
    cap: usize,
    now: Instant,
) -> Client {
    let (tx, rx) = mpsc::channel(cap);
    let at = h.connect(&claims(identity, room), resume, tx, now);
    Client { rx, at }
}

fn send(h: &mut Hub, c: &Client, json: Value, now: Instant) {
    match decode(&json.to_string()) {
        Decoded::Request(id, msg) => h.handle(c.at.key, id, msg, now),
        Decoded::Invalid(_, e) => panic!("test sent invalid message: {e:?}"),
    }
}

#[test]
fn join_leave_and_presence() {
    let t0 = Instant::now();
    let mut h = hub(t0);
    let mut a = connect(&mut h, "alice", Some("r"), None, 64, t0);
    let mut b = connect(&mut h, "bob", Some("r"), None, 64, t0);
    assert_eq!(a.types(), ["welcome"]);
    assert_eq!(b.types(), ["welcome"]);

    send(&mut h, &a, json!({"type":"join","id":1}), t0);
    let msgs = a.drain();
    assert_eq!(msgs[0]["type"], "joined");
    assert_eq!(msgs[0]["id"], 1);
    assert_eq!(msgs[0]["room"], "r");

    send(
        &mut h,
        &b,
        json!({"type":"join","id":"j","metadata":{"role":"host"}}),
        t0,
    );
    let joined = b.drain();
    let names: Vec<&str> = joined[0]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identity"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    let ev = a.drain();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["type"], "participant_joined");
    assert_eq!(ev[0]["participant"]["identity"], "bob");
    assert_eq!(ev[0]["participant"]["metadata"]["role"], "host");
    assert!(ev[0].get("id").is_none(), "pushes carry no id");

    send(
        &mut h,
        &b,
        json!({"type":"update_participant","id":2,"name":"Bobby"}),
        t0,
    );
    assert_eq!(b.drain()[0]["type"], "participant_updated");
    assert_eq!(a.drain()[0]["participant"]["name"], "Bobby");

    send(&mut h, &b, json!({"type":"leave","id":3}), t0);
    assert_eq!(b.types(), ["left"]);
    let ev = a.drain();
    assert_eq!(ev[0]["type"], "participant_left");
    assert_eq!(ev[0]["reason"], "left");
    assert_eq!(h.participants("r").unwrap().len(), 1);
}

#[test]
fn token_room_is_enforced_and_rooms_fill_up() {
    let t0 = Instant::now();
    let mut h = hub(t0);
    let mut x = connect(&mut h, "x", Some("other"), None, 64, t0);
    send(&mut h, &x, json!({"type":"join","id":1,"room":"r"}), t0);
    let e = &x.drain()[1];
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str(), e["id"].as_i64()),
        (Some("error"), Some("forbidden"), Some(1))
    );

    let mut none = connect(&mut h, "n", None, None, 64, t0);
    send(&mut h, &none, json!({"type":"join","id":1}), t0);
    assert_eq!(none.drain()[1]["code"], "invalid_message");

    let mut cs: Vec<Client> = (0..4)
        .map(|i| connect(&mut h, &format!("u{i}"), Some("*"), None, 64, t0))
        .collect();
    for c in &cs {
        send(&mut h, c, json!({"type":"join","id":1,"room":"small"}), t0);
    }
    assert_eq!(cs[3].drain()[1]["code"], "room_full");
    assert_eq!(cs[0].drain()[1]["type"], "joined");
    send(
        &mut h,
        &cs[0],
        json!({"type":"join","id":1,"room":"small"}),
        t0,
    );
    assert_eq!(cs[0].drain().last().unwrap()["code"], "invalid_state");
    send(
        &mut h,
        &cs[0],
        json!({"type":"join","id":1,"room":"bad/name"}),
        t0,
    );
    assert_eq!(cs[0].drain().last().unwrap()["code"], "invalid_room");
}

#[test]
fn same_identity_replaces_older_session_in_room() {
    let t0 = Instant::now();
    let mut h = hub(t0);
    let mut a1 = connect(&mut h, "alice", Some("r"), None, 64, t0);
    let mut b = connect(&mut h, "bob", Some("r"), None, 64, t0);
    send(&mut h, &a1, json!({"type":"join"}), t0);
    send(&mut h, &b, json!({"type":"join"}), t0);
    a1.drain();
    b.drain();
    let a2 = connect(&mut h, "alice", Some("r"), None, 64, t0);
    send(&mut h, &a2, json!({"type":"join"}), t0);
    let removed = a1.drain();
    assert_eq!(removed[0]["type"], "removed");
    assert_eq!(removed[0]["reason"], "duplicate_identity");
    assert_eq!(b.types(), ["participant_left", "participant_joined"]);
    assert_eq!(h.participants("r").unwrap().len(), 2);
}

#[test]
fn empty_room_closes_after_idle_timeout() {
    let t0 = Instant::now();
    let mut h = hub(t0);
    let a = connect(&mut h, "alice", Some("r"), None, 64, t0);
    send(&mut h, &a, json!({"type":"join"}), t0);
    send(
        &mut h,
        &a,
        json!({"type":"leave"}),
        t0 + Duration::from_secs(1),
    );
    assert_eq!(h.rooms().len(), 1, "an empty room lingers");
    let due = h.next_timeout().unwrap();
    assert_eq!(due, t0 + Duration::from_secs(61));
    h.handle_timeouts(due - Duration::from_millis(1));
    assert_eq!(h.rooms().len(), 1);
    // Rejoining and leaving again restarts the idle clock.
    send(
        &mut h,
        &a,
        json!({"type":"join"}),
        t0 + Duration::from_secs(30),
    );
    send(
        &mut h,
        &a,
        json!({"type":"leave"}),
        t0 + Duration::from_secs(40),
    );
    h.handle_timeouts(due);
    assert_eq!(
        h.rooms().len(),
        1,
        "stale idle timer must not close a reused room"
    );
    h.handle_timeouts(t0 + Duration::from_secs(100));
    assert!(h.rooms().is_empty());
}

#[test]
fn lost_connection_resumes_without_flapping() {
    let t0 = Instant::now();
    let mut h = hub(t0);
    let mut a = connect(&mut h, "alice", Some("r"), None, 64, t0);
    let mut b = connect(&mut h, "bob", Some("r"), None, 64, t0);
    let token = a.drain()[0]["resume_token"].as_str().unwrap().to_owned();
    send(&mut h, &a, json!({"type":"join"}), t0);
    send(&mut h, &b, json!({"type":"join"}), t0);
    a.drain();
    b.drain();

    h.disconnect(
        a.at.key,
        a.at.generation,
        false,
        t0 + Duration::from_secs(1),
    );
    assert!(
        b.drain().is_empty(),
        "no leave while within the grace period"
    );
    send(
        &mut h,
        &b,
        json!({"type":"update_participant","metadata":{"m":1}}),
        t0 + Duration::from_secs(2),
    );
    b.drain();

    // A wrong secret or another identity cannot take the session over.
    let mut thief = connect(
        &mut h,
        "mallory",
        Some("r"),
        Some(&token),
        64,
        t0 + Duration::from_secs(3),
    );
    assert_eq!(thief.drain()[0]["resumed"], false);
    let forged = format!("{}.AAAA", token.split('.').next().unwrap());
    let mut wrong = connect(
        &mut h,
        "alice",
        Some("r"),
        Some(&forged),
        64,
        t0 + Duration::from_secs(3),
    );
    assert_eq!(wrong.drain()[0]["resumed"], false);

    let mut a2 = connect(
        &mut h,
        "alice",
        Some("r"),
        Some(&token),
        64,
        t0 + Duration::from_secs(5),
    );
    assert_eq!(a2.at.key, a.at.key);
    let msgs = a2.drain();
    assert_eq!(msgs[0]["type"], "welcome");
    assert_eq!(msgs[0]["resumed"], true);
    assert_eq!(msgs[0]["room"], "r");
    assert_eq!(
        msgs[1]["type"], "participant_updated",
        "missed pushes are replayed in order"
    );
    // The grace timer of the old connection must not end the resumed session.
    h.handle_timeouts(t0 + Duration::from_secs(60));
    assert!(b.drain().is_empty());
    assert_eq!(h.participants("r").unwrap().len(), 2);

    // Without a resume, the grace period ends the session and others see it leave.
    h.disconnect(
        a2.at.key,
        a2.at.generation,
        false,
        t0 + Duration::from_secs(70),
    );
    h.handle_timeouts(t0 + Duration::from_secs(79));
    assert!(b.drain().is_empty());
    h.handle_timeouts(t0 + Duration::from_secs(80));
    let ev = b.drain();
    assert_eq!(ev[0]["type"], "participant_left");
    assert_eq!(ev[0]["reason"], "disconnected");
}

#[test]
fn overflowing_replay_buffer_ends_the_session() {
    let t0 = Instant::now();
    let mut h = hub(t0);
    let a = connect(&mut h, "alice", Some("r"), None, 64, t0);
    let mut b = connect(&mut h, "bob", Some("r"), None, 64, t0);
    send(&mut h, &a, json!({"type":"join"}), t0);
    send(&mut h, &b, json!({"type":"join"}), t0);
    h.disconnect(a.at.key, a.at.generation, false, t0);
    b.drain();
    for i in 0..9 {
        send(
            &mut h,
            &b,
            json!({"type":"update_participant","metadata":{"i":i}}),
            t0,
        );
    }
    let ev = b.drain();
    assert!(
        ev.iter().any(|m| m["type"] == "participant_left"),
        "alice must be gone: {ev:?}"
    );
}

#[test]
fn slow_consumer_is_disconnected_and_others_unaffected() {
    let t0 = Instant::now();
    let mut h = hub(t0);
    let mut slow = connect(&mut h, "slow", Some("r"), None, 8, t0);
    let mut b = connect(&mut h, "bob", Some("r"), None, 64, t0);
    send(&mut h, &slow, json!({"type":"join"}), t0);
    send(&mut h, &b, json!({"type":"join"}), t0);
    b.drain();
    for _ in 0..20 {
        send(
            &mut h,
            &b,
            json!({"type":"update_participant","metadata":{}}),
            t0,
        );
        b.drain();
    }
    assert_eq!(h.participants("r").unwrap().len(), 1);
    assert_eq!(slow.drain().len(), 8);
    assert!(slow.rx.try_recv().is_err());
}

fn call_setup(h: &mut Hub, t0: Instant) -> (Client, Client, Client, String) {
    let mut caller = connect(h, "alice", None, None, 64, t0);
    let mut phone = connect(h, "bob", None, None, 64, t0);
    let mut laptop = connect(h, "bob", None, None, 64, t0);
    caller.drain();
    phone.drain();
    laptop.drain();
    send(
        h,
        &caller,
        json!({"type":"call_invite","id":1,"to":"bob","sdp":{"type":"offer","sdp":"v=0 offer"}}),
        t0,
    );
    let r = caller.drain();
    assert_eq!(r[0]["type"], "call_invited");
    let call_id = r[0]["call_id"].as_str().unwrap().to_owned();
    for dev in [&mut phone, &mut laptop] {
        let m = dev.drain();
        assert_eq!(m[0]["type"], "call_incoming");
        assert_eq!(m[0]["from"]["identity"], "alice");
        assert_eq!(m[0]["sdp"]["sdp"], "v=0 offer");
    }
    (caller, phone, laptop, call_id)
}

#[test]
fn call_is_answered_on_one_device_and_relays_both_ways() {
    let t0 = Instant::now();
    let mut h = hub(t0);
    let (mut caller, mut phone, mut laptop, call_id) = call_setup(&mut h, t0);
    send(
        &mut h,
        &phone,
        json!({"type":"call_ringing","call_id":call_id}),
        t0,
    );
    assert_eq!(caller.types(), ["call_ringing"]);
    // Trickle ICE from the caller reaches every ringing device.
    send(
        &mut h,
        &caller,
        json!({"type":"call_ice","call_id":call_id,"candidate":{"candidate":"c1","sdpMid":"0"}}),
        t0,
    );
    assert_eq!(phone.types(), ["call_ice"]);
    assert_eq!(laptop.types(), ["call_ice"]);
    // A device that has not answered cannot send.
    send(
        &mut h,
        &laptop,
        json!({"type":"call_ice","id":5,"call_id":call_id,"candidate":null}),
        t0,
    );
    assert_eq!(laptop.drain()[0]["code"], "invalid_state");

    send(
        &mut h,
        &phone,
        json!({"type":"call_accept","id":2,"call_id":call_id,"sdp":{"type":"answer","sdp":"v=0 answer"}}),
        t0,
    );
    assert_eq!(phone.drain()[0]["type"], "ok");
    let acc = caller.drain();
    assert_eq!(acc[0]["type"], "call_accepted");
    assert_eq!(acc[0]["sdp"]["type"], "answer");
    let other = laptop.drain();
    assert_eq!(other[0]["type"], "call_ended");
    assert_eq!(other[0]["reason"], "answered_elsewhere");

    send(
        &mut h,
        &phone,
        json!({"type":"call_ice","call_id":call_id,"candidate":{"candidate":"c2"}}),
        t0,
    );
    assert_eq!(caller.drain()[0]["candidate"]["candidate"], "c2");
    send(
        &mut h,
        &caller,
        json!({"type":"call_sdp","call_id":call_id,"sdp":{"type":"offer","sdp":"re-offer"}}),
        t0,
    );
    assert_eq!(phone.drain()[0]["sdp"]["sdp"], "re-offer");
    assert!(laptop.drain().is_empty());

    // A third party calling either of them is told they are busy.
    let mut carol = connect(&mut h, "carol", None, None, 64, t0);
    carol.drain();
    send(
        &mut h,
        &carol,
        json!({"type":"call_invite","id":1,"to":"alice"}),
        t0,
    );
    let r = carol.drain();
    assert_eq!(r[1]["type"], "call_ended");
    assert_eq!(r[1]["reason"], "busy");

    send(
        &mut h,
        &caller,
        json!({"type":"call_hangup","call_id":call_id}),
        t0,
    );
    let end = phone.drain();
    assert_eq!(end[0]["type"], "call_ended");
    assert_eq!(end[0]["reason"], "hangup");
    assert!(
        caller.drain().is_empty(),
        "no ack without a request id, no echo to the initiator"
    );
    send(
        &mut h,
        &caller,
        json!({"type":"call_hangup","id":9,"call_id":call_id}),
        t0,
    );
    assert_eq!(caller.drain()[0]["code"], "call_not_found");
}

#[test]
fn unanswered_call_times_out() {
    let t0 = Instant::now();
    let mut h = hub(t0);
    let (mut caller, mut phone, mut laptop, _) = call_setup(&mut h, t0);
    h.handle_timeouts(t0 + Duration::from_secs(29));
    assert!(caller.drain().is_empty());
    h.handle_timeouts(t0 + Duration::from_secs(30));
    for c in [&mut caller, &mut phone, &mut laptop] {
        let m = c.drain();
        assert_eq!(m[0]["type"], "call_ended");
        assert_eq!(m[0]["reason"], "timeout");
    }
}

#[test]
fn reject_cancel_and_unavailable() {
    let t0 = Instant::now();
    let mut h = hub(t0);
    let (mut caller, phone, mut laptop, call_id) = call_setup(&mut h, t0);
    send(
        &mut h,
        &phone,
        json!({"type":"call_reject","call_id":call_id,"reason":"busy"}),
        t0,
    );
    assert_eq!(caller.drain()[0]["reason"], "busy");
    assert_eq!(laptop.drain()[0]["reason"], "rejected_elsewhere");

    send(
        &mut h,
        &caller,
        json!({"type":"call_invite","id":1,"to":"bob"}),
        t0,
    );
    let call_id = caller.drain()[0]["call_id"].as_str().unwrap().to_owned();
    laptop.drain();
    send(
        &mut h,
        &caller,
        json!({"type":"call_cancel","call_id":call_id}),
        t0,
    );
    assert_eq!(laptop.drain()[0]["reason"], "cancelled");

    send(
        &mut h,
        &caller,
        json!({"type":"call_invite","id":1,"to":"nobody"}),
        t0,
    );
    assert_eq!(caller.drain()[0]["code"], "callee_unavailable");
    send(
        &mut h,
        &caller,
        json!({"type":"call_invite","id":1,"to":"alice"}),
        t0,
    );
    assert_eq!(caller.drain()[0]["code"], "invalid_message");
    send(
        &mut h,
        &caller,
        json!({"type":"call_invite","id":1,"to":"bob","sdp":{"type":"answer","sdp":""}}),
        t0,
    );
    assert_eq!(caller.drain()[0]["code"], "invalid_message");
}

#[test]
fn caller_lost_beyond_grace_ends_call() {
    let t0 = Instant::now();
    let mut h = hub(t0);
    let (caller, mut phone, _laptop, call_id) = call_setup(&mut h, t0);
    send(
        &mut h,
        &phone,
        json!({"type":"call_accept","call_id":call_id}),
        t0,
    );
    h.disconnect(caller.at.key, caller.at.generation, false, t0);
    h.handle_timeouts(t0 + Duration::from_secs(9));
    assert!(phone.drain().is_empty(), "the call survives a short drop");
    h.handle_timeouts(t0 + Duration::from_secs(10));
    let m = phone.drain();
    assert_eq!(m[0]["type"], "call_ended");
    assert_eq!(m[0]["reason"], "peer_disconnected");
}

#[test]
fn every_request_type_decodes_from_its_documented_example() {
    // Keeps ClientMessage::TYPES and the enum in step.
    let examples = [
        json!({"type":"ping"}),
        json!({"type":"join","room":"r"}),
        json!({"type":"leave"}),
        json!({"type":"list_participants"}),
        json!({"type":"update_participant","name":"n"}),
        json!({"type":"get_ice_servers"}),
        json!({"type":"call_invite","to":"b"}),
        json!({"type":"call_ringing","call_id":"c"}),
        json!({"type":"call_accept","call_id":"c"}),
        json!({"type":"call_reject","call_id":"c"}),
        json!({"type":"call_cancel","call_id":"c"}),
        json!({"type":"call_hangup","call_id":"c"}),
        json!({"type":"call_sdp","call_id":"c","sdp":{"type":"offer","sdp":"v=0"}}),
        json!({"type":"call_ice","call_id":"c","candidate":null}),
        json!({"type":"chat_sync","device":"d1","cursors":{"room:r":3}}),
        json!({"type":"chat_send","conversation":"room:r","client_msg_id":"m1","text":"hi"}),
        json!({"type":"chat_edit","conversation":"room:r","client_msg_id":"m2","seq":1,"text":"hey"}),
        json!({"type":"chat_delete","conversation":"room:r","client_msg_id":"m3","seq":1}),
        json!({"type":"chat_received","conversation":"room:r","seq":1}),
        json!({"type":"chat_read","conversation":"room:r","seq":1}),
        json!({"type":"chat_typing","conversation":"room:r","typing":true}),
        json!({"type":"chat_history","conversation":"room:r","before":10,"limit":20}),
        json!({"type":"chat_conversations"}),
        json!({"type":"chat_open_direct","with":"bob"}),
        json!({"type":"chat_create_group","name":"team","members":["bob"]}),
        json!({"type":"chat_add_members","conversation":"group:x","members":["carol"]}),
        json!({"type":"chat_remove_members","conversation":"group:x","members":["carol"]}),
        json!({"type":"media_join"}),
        json!({"type":"media_offer","sdp":"v=0"}),
        json!({"type":"media_answer","offer_id":3,"sdp":"v=0"}),
        json!({"type":"media_subscribe","track":"T1"}),
        json!({"type":"media_auto_subscribe","on":false}),
        json!({"type":"media_pin","participants":["S_x"]}),
        json!({"type":"media_leave"}),
    ];
    assert_eq!(examples.len(), ClientMessage::TYPES.len());
    for (ex, ty) in examples.iter().zip(ClientMessage::TYPES) {
        assert_eq!(ex["type"], *ty);
        assert!(
            matches!(decode(&ex.to_string()), Decoded::Request(None, _)),
            "{ex}"
        );
    }
    let _ = RequestId::Num(0);
}

/// A moderator's mute is kept per identity for the room's lifetime: a member's later
/// sessions (a rejoin) find it until it is lifted or the room closes.
#[test]
fn moderated_mutes_outlast_sessions_until_lifted() {
    use huddle_sfu::TrackKind::{Audio, Video};
    let t0 = Instant::now();
    let mut h = hub(t0);
    let join = |h: &mut Hub, identity: &str| -> String {
        let c = connect(h, identity, Some("r"), None, 64, t0);
        send(h, &c, json!({"type":"join","id":1}), t0);
        h.participants("r")
            .unwrap()
            .into_iter()
            .find(|p| p.identity == identity)
            .unwrap()
            .sid
    };
    let kinds = |h: &Hub, sid: &str| -> Vec<_> { h.moderated_kinds(sid).iter().collect() };
    let alice = join(&mut h, "alice");
    let bob = join(&mut h, "bob");
    assert!(h.set_moderated("r", "alice", Some(Audio), true));
    assert_eq!(kinds(&h, &alice), [Audio]);
    assert_eq!(kinds(&h, &bob), []);
    // Only members of an existing room.
    assert!(!h.set_moderated("r", "carol", None, true));
    assert!(!h.set_moderated("elsewhere", "alice", None, true));
    assert_eq!(kinds(&h, "S_unknown"), []);
    // Alice's next session (the same identity joining again) is still muted.
    let alice = join(&mut h, "alice");
    assert_eq!(kinds(&h, &alice), [Audio]);
    assert!(h.set_moderated("r", "alice", None, true));
    assert_eq!(kinds(&h, &alice), [Audio, Video]);
    assert!(h.set_moderated("r", "alice", Some(Audio), false));
    assert_eq!(kinds(&h, &alice), [Video]);
    // Closing the room forgets it.
    assert!(h.set_moderated("r", "bob", None, true));
    assert!(h.close_room("r", t0));
    let bob = join(&mut h, "bob");
    assert_eq!(kinds(&h, &bob), []);
}

/// Connection quality: the hub keeps each member's latest level; the SFU's changes go
/// to the room, a member who joins is told them all right after `joined` (whether or
/// not it has a media session), and a member who leaves the room is forgotten.
#[test]
fn connection_quality_is_told_to_joiners_and_forgotten_on_leave() {
    use crate::protocol::QualityUpdate;
    let t0 = Instant::now();
    let mut h = hub(t0);
    let mut a = connect(&mut h, "alice", Some("r"), None, 64, t0);
    let mut b = connect(&mut h, "bob", Some("r"), None, 64, t0);
    send(&mut h, &a, json!({"type":"join","id":1}), t0);
    let alice = a.drain()[1]["participant"]["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let level = |quality: &'static str| QualityUpdate {
        sid: alice.clone(),
        identity: "alice".into(),
        quality,
        score: 4.3,
    };
    assert!(h.note_quality("r", &level("excellent")), "first level");
    assert!(!h.note_quality("r", &level("excellent")), "no change");
    assert!(h.note_quality("r", &level("poor")), "a change");
    assert!(
        !h.note_quality("elsewhere", &level("good")),
        "not a member there"
    );

    b.drain();
    send(&mut h, &b, json!({"type":"join","id":2}), t0);
    let msgs = b.drain();
    let types: Vec<&str> = msgs.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["joined", "connection_quality"]);
    assert_eq!(msgs[1]["room"], "r");
    assert_eq!(msgs[1]["participants"][0]["sid"], alice.as_str());
    assert_eq!(msgs[1]["participants"][0]["quality"], "poor");
    assert!(msgs[1].get("id").is_none(), "a push");

    // Alice leaves the room: she is forgotten, and no longer noted.
    send(&mut h, &a, json!({"type":"leave","id":3}), t0);
    assert!(
        !h.note_quality("r", &level("good")),
        "alice is not a member"
    );
    // Bob's media session ends (the SFU's leave) while he stays: forgotten too.
    let bob = msgs[0]["participant"]["sid"].as_str().unwrap().to_owned();
    let bob_level = QualityUpdate {
        sid: bob.clone(),
        identity: "bob".into(),
        quality: "good",
        score: 3.8,
    };
    assert!(h.note_quality("r", &bob_level));
    h.forget_quality("r", &bob);
    let mut c = connect(&mut h, "carol", Some("r"), None, 64, t0);
    c.drain();
    send(&mut h, &c, json!({"type":"join","id":4}), t0);
    assert_eq!(c.types(), ["joined"]);
}
