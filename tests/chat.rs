//! Chat over real WebSockets against the real server, on SQLite and (when configured)
//! PostgreSQL: live delivery, idempotent resends, offline delivery and resume, history
//! paging, edits and deletes, permissions, attachments, the push webhook and bad input.

mod common;

use std::time::Duration;

use common::chat::{ChatClient, backends, chat_token, seqs, start, texts};
use serde_json::{Value, json};

const ROOM: &str = "room:standup";

#[tokio::test]
async fn room_chat_is_delivered_live_in_order_to_every_device() {
    for backend in backends().await {
        let server = start(&backend, "");
        let mut alice =
            ChatClient::connect(&server, "alice", Some("standup"), "a1", json!({})).await;
        let mut bob = ChatClient::connect(&server, "bob", Some("standup"), "b1", json!({})).await;
        let mut bob2 = ChatClient::connect(&server, "bob", Some("standup"), "b2", json!({})).await;
        for i in 1..=5 {
            let ack = alice
                .send_text(ROOM, &format!("m{i}"), &format!("hello {i}"))
                .await;
            assert_eq!(ack["type"], "chat_ack", "{}: {ack}", backend.name());
            assert_eq!(ack["seq"], i);
            assert_eq!(ack["duplicate"], false);
            assert!(ack["server_ts"].as_i64().unwrap() > 1_600_000_000_000);
        }
        for c in [&mut bob, &mut bob2, &mut alice] {
            let got = c.messages(5).await;
            assert_eq!(seqs(&got), vec![1, 2, 3, 4, 5], "{}", backend.name());
            assert_eq!(texts(&got)[4], "hello 5");
            assert!(
                got.iter()
                    .all(|m| m["sender"] == "alice" && m["conversation"] == ROOM)
            );
            c.expect_no_messages(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test]
async fn a_resend_after_a_lost_ack_is_acked_again_and_stored_once() {
    for backend in backends().await {
        let server = start(&backend, "");
        let mut alice =
            ChatClient::connect(&server, "alice", Some("standup"), "a1", json!({})).await;
        let mut bob = ChatClient::connect(&server, "bob", Some("standup"), "b1", json!({})).await;
        let first = alice.send_text(ROOM, "same-id", "once").await;
        let again = alice.send_text(ROOM, "same-id", "once").await;
        assert_eq!(first["seq"], 1);
        assert_eq!(again["type"], "chat_ack");
        assert_eq!(again["seq"], 1, "{}", backend.name());
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["server_ts"], first["server_ts"]);
        assert_eq!(seqs(&bob.messages(1).await), vec![1]);
        bob.expect_no_messages(Duration::from_millis(300)).await;
        // The same id in another conversation is a client bug, not a resend.
        let dm = alice
            .request(json!({"type":"chat_open_direct","with":"bob"}))
            .await;
        let dm_id = dm["conversation"]["id"].as_str().unwrap().to_owned();
        let clash = alice.send_text(&dm_id, "same-id", "elsewhere").await;
        assert_eq!(clash["code"], "duplicate_client_id", "{clash}");
        let h = alice
            .request(json!({"type":"chat_history","conversation":ROOM}))
            .await;
        assert_eq!(h["messages"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn offline_devices_get_exactly_what_they_missed_then_live_messages() {
    for backend in backends().await {
        let server = start(&backend, "");
        let mut alice =
            ChatClient::connect(&server, "alice", Some("standup"), "a1", json!({})).await;
        let mut bob =
            ChatClient::connect(&server, "bob", Some("standup"), "phone", json!({})).await;
        for i in 1..=3 {
            alice
                .send_text(ROOM, &format!("m{i}"), &format!("t{i}"))
                .await;
        }
        let got = bob.messages(3).await;
        assert_eq!(seqs(&got), vec![1, 2, 3]);
        // The phone acknowledges 2 only, then drops off.
        bob.c
            .send(json!({"type":"chat_received","conversation":ROOM,"seq":2}))
            .await;
        // An ack is not answered; a later request proves it was processed in order.
        let _ = bob.request(json!({"type":"chat_conversations"})).await;
        drop(bob);
        for i in 4..=6 {
            alice
                .send_text(ROOM, &format!("m{i}"), &format!("t{i}"))
                .await;
        }
        // Reconnecting without cursors resumes after the device's last ack.
        let mut bob =
            ChatClient::connect(&server, "bob", Some("standup"), "phone", json!({})).await;
        assert_eq!(bob.synced_convs()[ROOM], (2, 6), "{}", bob.synced);
        alice.send_text(ROOM, "m7", "t7").await;
        let got = bob.messages(5).await;
        assert_eq!(seqs(&got), vec![3, 4, 5, 6, 7], "{}", backend.name());
        bob.expect_no_messages(Duration::from_millis(200)).await;
        // A device that says what it has gets exactly the rest.
        let mut tablet =
            ChatClient::connect(&server, "bob", Some("standup"), "tablet", json!({ROOM: 5})).await;
        assert_eq!(seqs(&tablet.messages(2).await), vec![6, 7]);
        tablet.expect_no_messages(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn members_who_were_never_online_get_direct_messages_on_first_connect() {
    for backend in backends().await {
        let server = start(&backend, "");
        let mut alice = ChatClient::connect(&server, "alice", None, "a1", json!({})).await;
        let conv = alice
            .request(json!({"type":"chat_open_direct","with":"bob"}))
            .await;
        assert_eq!(conv["type"], "chat_conversation", "{conv}");
        let id = conv["conversation"]["id"].as_str().unwrap().to_owned();
        assert_eq!(conv["conversation"]["members"], json!(["alice", "bob"]));
        for i in 1..=4 {
            let ack = alice
                .send_text(&id, &format!("d{i}"), &format!("dm {i}"))
                .await;
            assert_eq!(ack["seq"], i);
        }
        let mut bob = ChatClient::connect(&server, "bob", None, "b1", json!({})).await;
        let got = bob.messages(4).await;
        assert_eq!(seqs(&got), vec![1, 2, 3, 4], "{}", backend.name());
        assert_eq!(bob.synced["conversations"][0]["unread"], 4);
    }
}

#[tokio::test]
async fn non_members_can_neither_read_nor_post() {
    for backend in backends().await {
        let server = start(&backend, "");
        let mut alice = ChatClient::connect(&server, "alice", None, "a1", json!({})).await;
        let mut carol = ChatClient::connect(&server, "carol", Some("other"), "c1", json!({})).await;
        let dm = alice
            .request(json!({"type":"chat_open_direct","with":"bob"}))
            .await;
        let dm = dm["conversation"]["id"].as_str().unwrap().to_owned();
        alice.send_text(&dm, "x1", "secret").await;
        let group = alice
            .request(json!({"type":"chat_create_group","name":"team","members":["bob"]}))
            .await;
        let group = group["conversation"]["id"].as_str().unwrap().to_owned();
        for conv in [&dm, &group] {
            let post = carol.send_text(conv, "c-x", "let me in").await;
            assert_eq!(post["code"], "not_member", "{}: {post}", backend.name());
            let read = carol
                .request(json!({"type":"chat_history","conversation":conv}))
                .await;
            assert_eq!(read["code"], "not_member", "{read}");
        }
        // A room the token does not name.
        let post = carol.send_text(ROOM, "c-y", "hi").await;
        assert_eq!(post["code"], "forbidden", "{post}");
        let read = carol
            .request(json!({"type":"chat_history","conversation":ROOM}))
            .await;
        assert_eq!(read["code"], "forbidden");
        // Only the owner adds members; once added, carol's device follows live.
        let mut bob = ChatClient::connect(&server, "bob", None, "b1", json!({})).await;
        let denied = bob
            .request(json!({"type":"chat_add_members","conversation":group,"members":["carol"]}))
            .await;
        assert_eq!(denied["code"], "forbidden");
        let added = alice
            .request(json!({"type":"chat_add_members","conversation":group,"members":["carol"]}))
            .await;
        assert_eq!(
            added["conversation"]["members"],
            json!(["alice", "bob", "carol"])
        );
        let joined = carol.next_of("chat_joined").await;
        assert_eq!(joined["conversation"]["id"], group.as_str());
        alice.send_text(&group, "g1", "welcome").await;
        let got = carol.messages(1).await;
        assert_eq!(texts(&got), vec!["welcome"]);
        // Removed members stop receiving and may no longer post.
        let left = carol
            .request(json!({"type":"chat_remove_members","conversation":group,"members":["carol"]}))
            .await;
        assert_eq!(left["type"], "chat_conversation", "{left}");
        alice.send_text(&group, "g2", "after").await;
        carol.expect_no_messages(Duration::from_millis(300)).await;
        let post = carol.send_text(&group, "c-z", "still here?").await;
        assert_eq!(post["code"], "not_member");
        let got = bob.messages(3).await;
        let in_group: Vec<Value> = got
            .into_iter()
            .filter(|m| m["conversation"] == group.as_str())
            .collect();
        assert_eq!(seqs(&in_group), vec![1, 2]);
    }
}

#[tokio::test]
async fn history_pages_by_seq() {
    for backend in backends().await {
        let server = start(&backend, "");
        let mut alice =
            ChatClient::connect(&server, "alice", Some("standup"), "a1", json!({})).await;
        for i in 1..=25 {
            alice
                .send_text(ROOM, &format!("h{i}"), &format!("n{i}"))
                .await;
        }
        let page = |v: &Value| seqs(v["messages"].as_array().unwrap());
        let latest = alice
            .request(json!({"type":"chat_history","conversation":ROOM,"limit":10}))
            .await;
        assert_eq!(
            page(&latest),
            (16..=25).collect::<Vec<_>>(),
            "{}",
            backend.name()
        );
        assert_eq!(latest["has_more"], true);
        let older = alice
            .request(json!({"type":"chat_history","conversation":ROOM,"before":16,"limit":10}))
            .await;
        assert_eq!(page(&older), (6..=15).collect::<Vec<_>>());
        let oldest = alice
            .request(json!({"type":"chat_history","conversation":ROOM,"before":6,"limit":10}))
            .await;
        assert_eq!(page(&oldest), (1..=5).collect::<Vec<_>>());
        assert_eq!(oldest["has_more"], false);
        let newer = alice
            .request(json!({"type":"chat_history","conversation":ROOM,"after":20,"limit":10}))
            .await;
        assert_eq!(page(&newer), vec![21, 22, 23, 24, 25]);
        assert_eq!(newer["has_more"], false);
        let both = alice
            .request(json!({"type":"chat_history","conversation":ROOM,"after":1,"before":5}))
            .await;
        assert_eq!(both["code"], "invalid_message");
    }
}

#[tokio::test]
async fn edits_and_deletes_are_events_with_their_own_seq() {
    for backend in backends().await {
        let server = start(&backend, "");
        let mut alice =
            ChatClient::connect(&server, "alice", Some("standup"), "a1", json!({})).await;
        let mut bob = ChatClient::connect(&server, "bob", Some("standup"), "b1", json!({})).await;
        alice.send_text(ROOM, "e1", "helo").await;
        let edit = alice
            .request(json!({"type":"chat_edit","conversation":ROOM,"client_msg_id":"e2","seq":1,"text":"hello"}))
            .await;
        assert_eq!(edit["seq"], 2, "{}: {edit}", backend.name());
        let not_yours = bob
            .request(json!({"type":"chat_edit","conversation":ROOM,"client_msg_id":"b-e","seq":1,"text":"hijack"}))
            .await;
        assert_eq!(not_yours["code"], "invalid_target");
        let del = alice
            .request(json!({"type":"chat_delete","conversation":ROOM,"client_msg_id":"e3","seq":1}))
            .await;
        assert_eq!(del["seq"], 3);
        let again = alice
            .request(json!({"type":"chat_edit","conversation":ROOM,"client_msg_id":"e4","seq":1,"text":"zombie"}))
            .await;
        assert_eq!(again["code"], "invalid_target");
        let missing = alice
            .request(
                json!({"type":"chat_delete","conversation":ROOM,"client_msg_id":"e5","seq":99}),
            )
            .await;
        assert_eq!(missing["code"], "invalid_target");
        let got = bob.messages(3).await;
        assert_eq!(seqs(&got), vec![1, 2, 3]);
        assert_eq!(got[1]["kind"], "edit");
        assert_eq!(got[1]["target_seq"], 1);
        assert_eq!(got[1]["text"], "hello");
        assert_eq!(got[2]["kind"], "delete");
        assert_eq!(got[2]["target_seq"], 1);
        let h = alice
            .request(json!({"type":"chat_history","conversation":ROOM}))
            .await;
        let first = &h["messages"][0];
        assert_eq!(first["deleted"], true, "{h}");
        assert!(
            first.get("text").is_none(),
            "a tombstone keeps no text: {first}"
        );
        assert!(first["edited_ts"].as_i64().is_some());
    }
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    for backend in backends().await {
        let server = start(
            &backend,
            "[chat]\nmax_text_bytes = 100\nmax_metadata_bytes = 50\n",
        );
        let mut alice =
            ChatClient::connect(&server, "alice", Some("standup"), "a1", json!({})).await;
        let cases = [
            (
                json!({"type":"chat_send","conversation":ROOM,"client_msg_id":"x","text":"a".repeat(101)}),
                "message_too_large",
            ),
            (
                json!({"type":"chat_send","conversation":ROOM,"text":"no id"}),
                "invalid_message",
            ),
            (
                json!({"type":"chat_send","conversation":ROOM,"client_msg_id":"","text":"empty id"}),
                "invalid_message",
            ),
            (
                json!({"type":"chat_send","conversation":ROOM,"client_msg_id":"y","text":""}),
                "invalid_message",
            ),
            (
                json!({"type":"chat_send","conversation":ROOM,"client_msg_id":"z","text":"bell\u{7}"}),
                "invalid_message",
            ),
            (
                json!({"type":"chat_send","conversation":"nowhere","client_msg_id":"w","text":"?"}),
                "invalid_message",
            ),
            (
                json!({"type":"chat_send","conversation":ROOM,"client_msg_id":"v","text":"m","metadata":{"k":"x".repeat(60)}}),
                "invalid_message",
            ),
            (
                json!({"type":"chat_send","conversation":ROOM,"client_msg_id":"u","text":"r","reply_to":7}),
                "invalid_target",
            ),
            (
                json!({"type":"chat_send","conversation":ROOM,"client_msg_id":"t","text":"a","attachments":["../etc"]}),
                "invalid_message",
            ),
            (
                json!({"type":"chat_send","conversation":ROOM,"client_msg_id":"s","text":"a","attachments":["a".repeat(64)]}),
                "invalid_target",
            ),
            (
                json!({"type":"chat_send","conversation":ROOM,"client_msg_id":7,"text":"a"}),
                "invalid_message",
            ),
            (
                json!({"type":"chat_sync","device":"again"}),
                "invalid_state",
            ),
        ];
        for (req, code) in cases {
            let r = alice.request(req.clone()).await;
            assert_eq!(r["code"], code, "{}: {req} -> {r}", backend.name());
        }
        // Nothing was stored: the next message gets seq 1.
        let ok = alice.send_text(ROOM, "fine", "fine").await;
        assert_eq!(ok["seq"], 1, "{ok}");
        let meta = alice
            .request(json!({"type":"chat_send","conversation":ROOM,"client_msg_id":"m","text":"m","reply_to":1,"metadata":{"app":"x"}}))
            .await;
        assert_eq!(meta["seq"], 2);
        let h = alice
            .request(json!({"type":"chat_history","conversation":ROOM}))
            .await;
        assert_eq!(h["messages"][1]["metadata"], json!({"app":"x"}));
        assert_eq!(h["messages"][1]["reply_to"], 1);
    }
}

#[tokio::test]
async fn senders_are_rate_limited_across_devices() {
    let server = start(
        &common::chat::Backend::Sqlite,
        "[chat]\nmessages_per_second = 1\nmessage_burst = 3\n",
    );
    let mut a1 = ChatClient::connect(&server, "alice", Some("standup"), "a1", json!({})).await;
    let mut a2 = ChatClient::connect(&server, "alice", Some("standup"), "a2", json!({})).await;
    let mut codes = Vec::new();
    for i in 0..3 {
        codes.push(a1.send_text(ROOM, &format!("r{i}"), "x").await["type"].clone());
    }
    let limited = a2.send_text(ROOM, "r9", "x").await;
    assert_eq!(codes, vec!["chat_ack", "chat_ack", "chat_ack"]);
    assert_eq!(limited["code"], "rate_limited", "{limited}");
    // Someone else is not affected.
    let mut bob = ChatClient::connect(&server, "bob", Some("standup"), "b1", json!({})).await;
    assert_eq!(bob.send_text(ROOM, "b", "y").await["seq"], 4);
}

#[tokio::test]
async fn read_markers_unread_counts_and_typing() {
    let server = start(&common::chat::Backend::Sqlite, "");
    let mut alice = ChatClient::connect(&server, "alice", Some("standup"), "a1", json!({})).await;
    let mut bob = ChatClient::connect(&server, "bob", Some("standup"), "b1", json!({})).await;
    for i in 1..=4 {
        alice.send_text(ROOM, &format!("u{i}"), "x").await;
    }
    bob.messages(4).await;
    let list = bob.request(json!({"type":"chat_conversations"})).await;
    assert_eq!(list["conversations"][0]["unread"], 4, "{list}");
    let ok = bob
        .request(json!({"type":"chat_read","conversation":ROOM,"seq":3}))
        .await;
    assert_eq!(ok["type"], "ok");
    let receipt = alice.next_of("chat_read").await;
    assert_eq!(receipt["identity"], "bob");
    assert_eq!(receipt["seq"], 3);
    let list = bob.request(json!({"type":"chat_conversations"})).await;
    assert_eq!(list["conversations"][0]["unread"], 1);
    assert_eq!(list["conversations"][0]["read_seq"], 3);
    bob.c
        .send(json!({"type":"chat_typing","conversation":ROOM,"typing":true}))
        .await;
    let typing = alice.next_of("chat_typing").await;
    assert_eq!(typing["identity"], "bob");
    assert_eq!(typing["typing"], true);
    // Ephemeral: never in the log.
    let h = alice
        .request(json!({"type":"chat_history","conversation":ROOM}))
        .await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 4);
    // Typing in a conversation one does not follow is refused.
    let r = bob
        .request(json!({"type":"chat_typing","conversation":"group:nope","typing":true}))
        .await;
    assert_eq!(r["code"], "not_member");
}

#[tokio::test]
async fn acked_messages_survive_a_crash() {
    for backend in backends().await {
        let mut server = start(&backend, "");
        let mut alice =
            ChatClient::connect(&server, "alice", Some("standup"), "a1", json!({})).await;
        for i in 1..=20 {
            assert_eq!(
                alice.send_text(ROOM, &format!("k{i}"), "durable").await["seq"],
                i
            );
        }
        server.crash_and_restart();
        let mut bob =
            ChatClient::connect(&server, "bob", Some("standup"), "b1", json!({ROOM: 0})).await;
        assert_eq!(
            seqs(&bob.messages(20).await),
            (1..=20).collect::<Vec<_>>(),
            "{}",
            backend.name()
        );
        // Sequence numbers continue after the restart.
        let mut alice =
            ChatClient::connect(&server, "alice", Some("standup"), "a1", json!({})).await;
        assert_eq!(alice.send_text(ROOM, "k21", "after").await["seq"], 21);
    }
}

fn png() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend((0..2000u32).map(|i| (i * 7) as u8));
    v
}

#[tokio::test]
async fn attachments_upload_and_download_with_membership_checks() {
    for backend in backends().await {
        let server = start(&backend, "[chat]\nmax_attachment_bytes = 4096\n");
        let http = reqwest::Client::new();
        let upload = |who: &str, ct: &str, body: Vec<u8>| {
            http.post(server.http("/v1/chat/attachments"))
                .bearer_auth(chat_token(who, None))
                .header("content-type", ct)
                .body(body)
                .send()
        };
        let r = upload("alice", "image/png", png()).await.unwrap();
        assert_eq!(r.status(), 201, "{}", backend.name());
        let meta: Value = r.json().await.unwrap();
        let id = meta["id"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 64);
        assert_eq!(meta["size"], png().len());
        // Same bytes, same id.
        let again: Value = upload("alice", "image/png", png())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(again["id"], id.as_str());
        assert_eq!(
            upload("alice", "text/html", png()).await.unwrap().status(),
            415
        );
        assert_eq!(
            upload("alice", "image/jpeg", png()).await.unwrap().status(),
            415
        );
        assert_eq!(
            upload("alice", "image/png", vec![0x89; 5000])
                .await
                .unwrap()
                .status(),
            413
        );
        let no_token = http
            .post(server.http("/v1/chat/attachments"))
            .header("content-type", "image/png")
            .body(png())
            .send()
            .await
            .unwrap();
        assert_eq!(no_token.status(), 401);
        let download = |who: &str| {
            http.get(server.http(&format!("/v1/chat/attachments/{id}")))
                .bearer_auth(chat_token(who, None))
                .send()
        };
        assert_eq!(download("alice").await.unwrap().status(), 200);
        assert_eq!(download("bob").await.unwrap().status(), 404);
        let mut alice = ChatClient::connect(&server, "alice", None, "a1", json!({})).await;
        let dm = alice
            .request(json!({"type":"chat_open_direct","with":"bob"}))
            .await;
        let dm = dm["conversation"]["id"].as_str().unwrap().to_owned();
        let sent = alice
            .request(json!({"type":"chat_send","conversation":dm,"client_msg_id":"p1","text":"","attachments":[id]}))
            .await;
        assert_eq!(sent["type"], "chat_ack", "{sent}");
        // Bob may not re-share what he never uploaded nor saw...
        let mut carol = ChatClient::connect(&server, "carol", None, "c1", json!({})).await;
        let cdm = carol
            .request(json!({"type":"chat_open_direct","with":"bob"}))
            .await;
        let cdm = cdm["conversation"]["id"].as_str().unwrap().to_owned();
        let steal = carol
            .request(json!({"type":"chat_send","conversation":cdm,"client_msg_id":"s1","text":"x","attachments":[id]}))
            .await;
        assert_eq!(steal["code"], "invalid_target");
        // ...but as a member of the conversation that carries it, he may read it.
        let r = download("bob").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "image/png");
        assert_eq!(r.bytes().await.unwrap().to_vec(), png());
        assert_eq!(download("carol").await.unwrap().status(), 404);
    }
}

#[tokio::test]
async fn the_webhook_hears_of_messages_for_offline_members() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/push", hook.local_addr().unwrap());
    let server = start(
        &common::chat::Backend::Sqlite,
        &format!("[chat]\nwebhook_url = \"{url}\"\nwebhook_secret = \"hook-secret\"\n"),
    );
    let mut alice = ChatClient::connect(&server, "alice", None, "a1", json!({})).await;
    let _carol = ChatClient::connect(&server, "carol", None, "c1", json!({})).await;
    let group = alice
        .request(json!({"type":"chat_create_group","name":"g","members":["bob","carol"]}))
        .await;
    let group = group["conversation"]["id"].as_str().unwrap().to_owned();
    alice.send_text(&group, "w1", "are you there?").await;
    let (mut sock, _) = tokio::time::timeout(Duration::from_secs(5), hook.accept())
        .await
        .expect("webhook called")
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let body = loop {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "webhook request cut short");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(at) = text.find("\r\n\r\n") {
            let head = text[..at].to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            if buf.len() >= at + 4 + len {
                break (head, buf[at + 4..at + 4 + len].to_vec());
            }
        }
    };
    sock.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = body;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["event"], "chat.undelivered");
    assert_eq!(v["recipients"], json!(["bob"]), "carol is online: {v}");
    assert_eq!(v["seq"], 1);
    assert_eq!(v["preview"], "are you there?");
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"hook-secret").unwrap();
    mac.update(&body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        head.contains(&format!("x-huddle-signature: sha256={want}")),
        "{head}"
    );
}

#[tokio::test]
async fn retention_deletes_old_entries_but_never_reuses_seqs() {
    for backend in backends().await {
        let server = start(&backend, "[chat]\nretention = \"1s\"\n");
        let mut alice =
            ChatClient::connect(&server, "alice", Some("standup"), "a1", json!({})).await;
        for i in 1..=3 {
            alice.send_text(ROOM, &format!("old{i}"), "soon gone").await;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let h = alice
                .request(json!({"type":"chat_history","conversation":ROOM}))
                .await;
            if h["messages"].as_array().unwrap().is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: never deleted: {h}",
                backend.name()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(alice.send_text(ROOM, "new", "fresh").await["seq"], 4);
        // A device resuming from before the deleted range just gets what is left.
        let mut bob =
            ChatClient::connect(&server, "bob", Some("standup"), "b1", json!({ROOM: 0})).await;
        assert_eq!(seqs(&bob.messages(1).await), vec![4]);
        bob.expect_no_messages(Duration::from_millis(200)).await;
    }
}
