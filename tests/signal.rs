//! Whole-system tests of the signalling service: the real binary on loopback, driven by
//! real WebSocket (tokio-tungstenite) and HTTP (reqwest) clients.

mod common;

use std::time::Duration;

use common::{API_SECRET, Client, Server, TOKEN_SECRET, issuer, token};
use huddle_signal::auth::{Claims, ISSUER, default_grants};
use reqwest::Method;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

async fn upgrade_status(url: &str, origin: Option<&str>, bearer: Option<&str>) -> u16 {
    let mut req = url.into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut()
            .insert("Origin", HeaderValue::from_str(o).unwrap());
    }
    if let Some(b) = bearer {
        req.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {b}")).unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default();
            assert!(
                body.contains("\"type\":\"error\""),
                "error body must be JSON: {body}"
            );
            resp.status().as_u16()
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

async fn admin(http: &reqwest::Client, method: Method, url: &str) -> reqwest::Response {
    http.request(method, url)
        .bearer_auth(API_SECRET)
        .send()
        .await
        .unwrap()
}

async fn upgrade_error_code(url: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_ref().unwrap()).unwrap();
            (
                resp.status().as_u16(),
                body["code"].as_str().unwrap().to_owned(),
            )
        }
        Ok(_) => (101, String::new()),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test]
async fn tokens_are_checked_on_upgrade() {
    let server = Server::start("");
    let base = format!("ws://{}/v1/ws", server.addr);
    assert_eq!(
        upgrade_error_code(&base).await,
        (401, "token_missing".into())
    );

    let forged =
        issuer("some-other-secret-0123456789abcdef").mint(&huddle_signal::auth::TokenRequest {
            identity: "mallory".into(),
            name: None,
            room: Some("*".into()),
            grants: default_grants(),
            ttl: None,
        });
    let forged = forged.unwrap().0;
    assert_eq!(
        upgrade_error_code(&server.ws_url(&forged)).await,
        (401, "token_invalid".into())
    );
    assert_eq!(
        upgrade_error_code(&server.ws_url("garbage")).await,
        (401, "token_invalid".into())
    );

    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &Claims {
            sub: "late".into(),
            name: None,
            room: Some("r".into()),
            grants: default_grants(),
            iss: ISSUER.into(),
            iat: 1,
            nbf: None,
            exp: 1000,
        },
        &jsonwebtoken::EncodingKey::from_secret(TOKEN_SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        upgrade_error_code(&server.ws_url(&expired)).await,
        (401, "token_expired".into())
    );

    // A valid token works as a query parameter and as a Bearer header.
    let good = token("alice", "r");
    let c = Client::connect(&server.ws_url(&good)).await.unwrap();
    assert_eq!(c.welcome["identity"], "alice");
    assert_eq!(c.welcome["protocol"], 1);
    assert_eq!(upgrade_status(&base, None, Some(&good)).await, 101);
}

#[tokio::test]
async fn cross_site_upgrades_are_refused() {
    let server = Server::start("[http]\nallowed_origins = [\"https://app.example.com\"]\n");
    let url = server.ws_url(&token("a", "r"));
    assert_eq!(
        upgrade_status(&url, Some("https://evil.example"), None).await,
        403
    );
    assert_eq!(upgrade_status(&url, Some("null"), None).await, 403);
    assert_eq!(
        upgrade_status(&url, Some("https://app.example.com"), None).await,
        101
    );
    let same = format!("http://{}", server.addr);
    assert_eq!(upgrade_status(&url, Some(&same), None).await, 101);
    assert_eq!(
        upgrade_status(&url, None, None).await,
        101,
        "native clients send no Origin"
    );
}

#[tokio::test]
async fn dev_mode_allows_only_localhost_origins() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(
        "",
        &[
            "--dev",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        server.addr.ip().is_loopback(),
        "--dev must bind to loopback, got {}",
        server.addr
    );
    let url = server.ws_url(&token("a", "r"));
    let port = server.addr.port();
    assert_eq!(
        upgrade_status(&url, Some(&format!("http://localhost:{port}")), None).await,
        101
    );
    assert_eq!(
        upgrade_status(&url, Some("https://example.com"), None).await,
        403
    );
    // The demo's token endpoint exists only in development mode.
    let resp = reqwest::Client::new()
        .post(server.http("/v1/dev/token"))
        .json(&json!({"identity": "demo", "room": "lobby"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let c = Client::connect(&server.ws_url(body["token"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(c.welcome["identity"], "demo");
}

#[tokio::test]
async fn join_leave_presence_and_admin_api() {
    let server = Server::start("");
    let mut a = server.connect("alice", "standup").await;
    let mut b = server.connect("bob", "standup").await;
    let r = a
        .request(json!({"type":"join","metadata":{"avatar":"a.png"}}), 1)
        .await;
    assert_eq!(r["type"], "joined");
    assert_eq!(r["participants"].as_array().unwrap().len(), 1);
    let r = b.request(json!({"type":"join"}), 1).await;
    assert_eq!(r["participants"].as_array().unwrap().len(), 2);
    let ev = a.recv().await;
    assert_eq!(
        (ev["type"].as_str(), ev["participant"]["identity"].as_str()),
        (Some("participant_joined"), Some("bob"))
    );

    let r = a.request(json!({"type":"list_participants"}), 2).await;
    let ids: Vec<&str> = r["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identity"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alice", "bob"]);

    let http = reqwest::Client::new();
    let unauth = http.get(server.http("/v1/rooms")).send().await.unwrap();
    assert_eq!(unauth.status(), 401);
    let rooms: serde_json::Value = admin(&http, Method::GET, &server.http("/v1/rooms"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rooms["rooms"][0]["name"], "standup");
    assert_eq!(rooms["rooms"][0]["participants"], 2);
    let parts: serde_json::Value = admin(
        &http,
        Method::GET,
        &server.http("/v1/rooms/standup/participants"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(parts["participants"].as_array().unwrap().len(), 2);

    // A normal user's token is not an admin credential.
    let not_admin = http
        .delete(server.http("/v1/rooms/standup/participants/bob"))
        .bearer_auth(token("alice", "standup"))
        .send()
        .await
        .unwrap();
    assert_eq!(not_admin.status(), 403);
    let removed = admin(
        &http,
        Method::DELETE,
        &server.http("/v1/rooms/standup/participants/bob"),
    )
    .await;
    assert_eq!(removed.status(), 204);
    let m = b.recv().await;
    assert_eq!(
        (m["type"].as_str(), m["reason"].as_str()),
        (Some("removed"), Some("removed"))
    );
    let ev = a.recv().await;
    assert_eq!(
        (ev["type"].as_str(), ev["identity"].as_str()),
        (Some("participant_left"), Some("bob"))
    );

    let closed = admin(&http, Method::DELETE, &server.http("/v1/rooms/standup")).await;
    assert_eq!(closed.status(), 204);
    let m = a.recv().await;
    assert_eq!(
        (m["type"].as_str(), m["reason"].as_str()),
        (Some("removed"), Some("room_closed"))
    );
    let missing = admin(&http, Method::DELETE, &server.http("/v1/rooms/standup")).await;
    assert_eq!(missing.status(), 404);

    // Leaving a room the client is not in is an error, and the connection carries on.
    let r = a.request(json!({"type":"leave"}), 3).await;
    assert_eq!(r["code"], "not_in_room");
    assert_eq!(a.request(json!({"type":"ping"}), 4).await["type"], "pong");
}

#[tokio::test]
async fn rest_endpoint_mints_working_tokens() {
    let server = Server::start("");
    let http = reqwest::Client::new();
    let wrong = http
        .post(server.http("/v1/tokens"))
        .bearer_auth("wrong-secret")
        .json(&json!({"identity":"carol","room":"r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let bad = http
        .post(server.http("/v1/tokens"))
        .bearer_auth(API_SECRET)
        .json(&json!({"identity":"","room":"r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let ok: serde_json::Value = http
        .post(server.http("/v1/tokens"))
        .bearer_auth(API_SECRET)
        .json(&json!({"identity":"carol","name":"Carol","room":"r","ttl":"10m","grants":{"subscribe":true}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut c = Client::connect(&server.ws_url(ok["token"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(c.welcome["name"], "Carol");
    assert_eq!(c.welcome["permissions"]["publish"], false);
    assert_eq!(c.welcome["permissions"]["subscribe"], true);
    // Without the publish grant, placing a call is forbidden.
    let r = c.request(json!({"type":"call_invite","to":"x"}), 1).await;
    assert_eq!(r["code"], "forbidden");
}

#[tokio::test]
async fn one_to_one_call_negotiation() {
    let server = Server::start(
        "[ice]\nstun_urls = [\"stun:stun.test:3478\"]\nturn_urls = [\"turn:turn.test:3478?transport=udp\"]\nturn_secret = \"north\"\n",
    );
    let mut alice = server.connect("alice", "r").await;
    let mut bob = server.connect("bob", "r").await;
    // ICE servers come with TURN REST credentials valid for the configured TTL.
    let ice = &bob.welcome["ice_servers"];
    assert_eq!(ice[0]["urls"][0], "stun:stun.test:3478");
    let user = ice[1]["username"].as_str().unwrap();
    assert!(user.ends_with(":bob"), "{user}");
    assert_eq!(
        ice[1]["credential"].as_str().unwrap(),
        huddle_signal::ice::turn_rest_password(b"north", user)
    );

    let r = alice
        .request(
            json!({"type":"call_invite","to":"bob","sdp":{"type":"offer","sdp":"v=0\r\no=alice"}}),
            1,
        )
        .await;
    assert_eq!(r["type"], "call_invited");
    let call_id = r["call_id"].as_str().unwrap().to_owned();
    let inc = bob.recv().await;
    assert_eq!(inc["type"], "call_incoming");
    assert_eq!(inc["from"]["identity"], "alice");
    assert_eq!(inc["sdp"]["sdp"], "v=0\r\no=alice");

    bob.send(json!({"type":"call_ringing","call_id":call_id}))
        .await;
    assert_eq!(alice.recv().await["type"], "call_ringing");
    alice.send(json!({"type":"call_ice","call_id":call_id,"candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}})).await;
    assert_eq!(bob.recv().await["candidate"]["sdpMid"], "0");

    let r = bob
        .request(json!({"type":"call_accept","call_id":call_id,"sdp":{"type":"answer","sdp":"v=0\r\no=bob"}}), 7)
        .await;
    assert_eq!(r["type"], "ok");
    let acc = alice.recv().await;
    assert_eq!(acc["type"], "call_accepted");
    assert_eq!(acc["sdp"]["sdp"], "v=0\r\no=bob");
    bob.send(json!({"type":"call_ice","call_id":call_id,"candidate":{"candidate":"candidate:2 1 udp 1 127.0.0.1 5001 typ host"}})).await;
    assert_eq!(alice.recv().await["type"], "call_ice");
    bob.send(json!({"type":"call_ice","call_id":call_id,"candidate":null}))
        .await;
    assert_eq!(alice.recv().await["candidate"], serde_json::Value::Null);

    bob.send(json!({"type":"call_hangup","call_id":call_id}))
        .await;
    let end = alice.recv().await;
    assert_eq!(
        (end["type"].as_str(), end["reason"].as_str()),
        (Some("call_ended"), Some("hangup"))
    );
}

#[tokio::test]
async fn unanswered_call_times_out() {
    let server = Server::start("[calls]\nring_timeout = \"300ms\"\n");
    let mut alice = server.connect("alice", "r").await;
    let mut bob = server.connect("bob", "r").await;
    alice
        .request(json!({"type":"call_invite","to":"bob"}), 1)
        .await;
    assert_eq!(bob.recv().await["type"], "call_incoming");
    for c in [&mut alice, &mut bob] {
        let m = c.recv().await;
        assert_eq!(
            (m["type"].as_str(), m["reason"].as_str()),
            (Some("call_ended"), Some("timeout"))
        );
    }
}

#[tokio::test]
async fn silent_connection_times_out_and_presence_updates() {
    let server = Server::start(
        "[signal]\nheartbeat_interval = \"100ms\"\nheartbeat_timeout = \"400ms\"\nresume_grace = \"200ms\"\n",
    );
    let mut a = server.connect("alice", "r").await;
    let mut b = server.connect("bob", "r").await;
    a.request(json!({"type":"join"}), 1).await;
    b.request(json!({"type":"join"}), 1).await;
    a.recv().await; // participant_joined(bob)
    // `a` stops reading: it no longer answers pings, so the server must give up on it.
    let started = std::time::Instant::now();
    let ev = b.recv().await;
    assert_eq!(
        (ev["type"].as_str(), ev["identity"].as_str()),
        (Some("participant_left"), Some("alice"))
    );
    assert_eq!(ev["reason"], "disconnected");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "left too early: {:?}",
        started.elapsed()
    );
    drop(a);
    // An answering client is never timed out.
    b.expect_silence(Duration::from_millis(800)).await;
    assert_eq!(b.request(json!({"type":"ping"}), 2).await["type"], "pong");
}

#[tokio::test]
async fn reconnect_within_grace_resumes_without_flapping() {
    let server = Server::start("[signal]\nresume_grace = \"5s\"\n");
    let mut a = server.connect("alice", "r").await;
    let mut b = server.connect("bob", "r").await;
    let resume = a.welcome["resume_token"].as_str().unwrap().to_owned();
    let sid = a.welcome["session_id"].clone();
    a.request(json!({"type":"join"}), 1).await;
    b.request(json!({"type":"join"}), 1).await;
    a.recv().await;
    // Drop the TCP connection without a close frame, as a network loss would.
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.request(
        json!({"type":"update_participant","metadata":{"hand":"up"}}),
        2,
    )
    .await;

    let url = format!(
        "{}&resume_token={}",
        server.ws_url(&token("alice", "r")),
        resume
    );
    let mut a2 = Client::connect(&url).await.unwrap();
    assert_eq!(a2.welcome["resumed"], true);
    assert_eq!(a2.welcome["session_id"], sid);
    assert_eq!(a2.welcome["room"], "r");
    let missed = a2.recv().await;
    assert_eq!(
        missed["type"], "participant_updated",
        "missed event replayed: {missed}"
    );
    assert_eq!(missed["participant"]["metadata"]["hand"], "up");

    // Bob saw no leave/join: the next thing he gets is the answer to his own ping.
    assert_eq!(b.request(json!({"type":"ping"}), 3).await["type"], "pong");
    b.expect_silence(Duration::from_millis(300)).await;
    let r = a2.request(json!({"type":"list_participants"}), 9).await;
    assert_eq!(r["participants"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn bad_input_gets_errors_and_the_connection_survives() {
    let server = Server::start("[signal]\nmax_message_bytes = 2048\n");
    let mut c = server.connect("alice", "r").await;

    c.send_raw(Message::text("this is not json")).await;
    assert_eq!(c.recv().await["code"], "bad_json");
    c.send_raw(Message::text(r#"{"type":"launch_missiles","id":41}"#))
        .await;
    let e = c.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_i64()),
        (Some("unknown_type"), Some(41))
    );
    c.send_raw(Message::text(r#"{"type":"call_accept","id":"x1"}"#))
        .await;
    let e = c.recv().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str(), e["id"].as_str()),
        (Some("error"), Some("invalid_message"), Some("x1"))
    );
    c.send_raw(Message::text(format!(
        r#"{{"type":"ping","pad":"{}"}}"#,
        "x".repeat(3000)
    )))
    .await;
    assert_eq!(c.recv().await["code"], "message_too_large");
    c.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    assert_eq!(c.recv().await["code"], "binary_not_supported");
    c.send_raw(Message::text(
        r#"{"type":"join","id":5,"room":"../../etc"}"#,
    ))
    .await;
    assert_eq!(c.recv().await["code"], "invalid_room");
    c.send_raw(Message::text("\u{0}\u{1}{{{{")).await;
    assert_eq!(c.recv().await["code"], "bad_json");
    assert_eq!(
        c.request(json!({"type":"ping"}), 6).await["type"],
        "pong",
        "still usable"
    );

    // Far beyond the hard frame limit the connection is closed (1009), and only it.
    let mut other = server.connect("bob", "r").await;
    c.send_raw(Message::text("x".repeat(300 * 1024))).await;
    let m = c.recv().await;
    assert!(m["type"] == "$close" || m["type"] == "$closed", "{m}");
    assert_eq!(
        other.request(json!({"type":"ping"}), 1).await["type"],
        "pong"
    );
}

#[tokio::test]
async fn rate_limit_drops_excess_messages_only() {
    let server = Server::start("[signal]\nmessages_per_second = 5\nmessage_burst = 5\n");
    let mut c = server.connect("alice", "r").await;
    for i in 0..20 {
        c.send(json!({"type":"ping","id":i})).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..20 {
        match c.recv().await["type"].as_str().unwrap() {
            "pong" => pongs += 1,
            "error" => limited += 1,
            t => panic!("unexpected {t}"),
        }
    }
    assert!(
        pongs >= 5 && limited >= 10,
        "pongs={pongs} limited={limited}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.request(json!({"type":"ping"}), 99).await["type"], "pong");
}

#[tokio::test]
async fn connections_per_ip_are_limited() {
    let server = Server::start("[signal]\nmax_connections_per_ip = 2\n");
    let _a = server.connect("a", "r").await;
    let _b = server.connect("b", "r").await;
    assert_eq!(
        upgrade_error_code(&server.ws_url(&token("c", "r"))).await,
        (429, "too_many_connections".into())
    );
    drop(_a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _c = server.connect("c", "r").await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = Server::start("");
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(server.http("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(server.http("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let mut c = server.connect("alice", "r").await;
    c.request(json!({"type":"join"}), 1).await;
    c.send_raw(Message::text("nope")).await;
    c.recv().await;
    let text = http
        .get(server.http("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "huddle_ws_connections 1",
        "huddle_rooms 1",
        "huddle_participants 1",
        "huddle_signal_messages_in_total{type=\"join\"} 1",
        "huddle_signal_errors_total{code=\"bad_json\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let page = http.get(server.http("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));
}

#[tokio::test]
async fn graceful_shutdown_tells_clients_and_exits_zero() {
    let mut server = Server::start("[shutdown]\nreconnect_after = \"1500ms\"\n");
    let mut a = server.connect("alice", "r").await;
    a.request(json!({"type":"join"}), 1).await;
    server.sigterm();
    let m = a.recv().await;
    assert_eq!(m["type"], "shutdown");
    assert_eq!(m["reconnect_after_ms"], 1500);
    let close = a.recv().await;
    assert_eq!(close["type"], "$close");
    assert_eq!(close["code"], 1001);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(
        tokio_tungstenite::connect_async(server.ws_url(&token("b", "r")))
            .await
            .is_err()
    );
}

/// `r` is an `invalid_message` error whose message names `field`.
fn assert_invalid(r: &serde_json::Value, field: &str) {
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("invalid_message")),
        "{r}"
    );
    assert!(r["message"].as_str().unwrap_or("").contains(field), "{r}");
}

/// `media_subscribe`'s `max_quality` is checked before it reaches the SFU, and a track the
/// session does not receive cannot be given one.
#[tokio::test]
async fn media_subscribe_checks_max_quality() {
    let server = Server::start_with("[sfu]\nlisten = \"127.0.0.1:0\"\n", &["--dev"], &[]);
    let mut a = server.connect("alice", "q").await;
    a.request(json!({"type": "join"}), 1).await;
    let r = a.request(json!({"type": "media_join"}), 2).await;
    assert_eq!(r["type"], "media_joined", "{r}");
    let r = a
        .request(
            json!({"type": "media_subscribe", "track": "T1", "max_quality": "ultra"}),
            3,
        )
        .await;
    assert_invalid(&r, "max_quality");
    // A valid quality for a track that does not exist: the SFU refuses it.
    let r = a
        .request(
            json!({"type": "media_subscribe", "track": "T99", "max_quality": "low"}),
            4,
        )
        .await;
    assert_eq!(r["type"], "error", "{r}");
    // A picture limit beyond any camera is refused before the SFU sees it; one in range
    // for a track it does not receive is refused by the SFU.
    let r = a
        .request(
            json!({"type": "media_subscribe", "track": "T1", "max_width": 100_000}),
            5,
        )
        .await;
    assert_invalid(&r, "max_width");
    let r = a
        .request(
            json!({"type": "media_subscribe", "track": "T99", "max_width": 640, "max_height": 360}),
            6,
        )
        .await;
    assert_eq!(r["type"], "error", "{r}");
}

/// `media_pin` names members of the room's media session: more than four is refused
/// before the SFU sees it, someone not in the session is `not_found`, members (and an
/// empty list) are accepted.
#[tokio::test]
async fn media_pin_takes_members_of_the_media_session() {
    let server = Server::start_with("[sfu]\nlisten = \"127.0.0.1:0\"\n", &["--dev"], &[]);
    let mut a = server.connect("alice", "pin").await;
    let mut b = server.connect("bob", "pin").await;
    a.request(json!({"type": "join"}), 1).await;
    b.request(json!({"type": "join"}), 1).await;
    let r = a.request(json!({"type": "media_join"}), 2).await;
    assert_eq!(r["type"], "media_joined", "{r}");
    let r = b.request(json!({"type": "media_join"}), 2).await;
    let bob = r["sid"].as_str().expect("bob's sid").to_owned();
    let five: Vec<String> = (0..5).map(|i| format!("S_{i}")).collect();
    let r = a
        .request(json!({"type": "media_pin", "participants": five}), 3)
        .await;
    assert_invalid(&r, "pinned");
    let r = a
        .request(
            json!({"type": "media_pin", "participants": ["S_nobody"]}),
            4,
        )
        .await;
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("not_found")),
        "{r}"
    );
    let r = a
        .request(json!({"type": "media_pin", "participants": [bob]}), 5)
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    let r = a
        .request(json!({"type": "media_pin", "participants": []}), 6)
        .await;
    assert_eq!(r["type"], "ok", "{r}");
}
