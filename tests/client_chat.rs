//! The native client SDK's chat against the real server: sends made while the server is
//! killed and restarted are all acked exactly once with distinct seqs; the receiver gets
//! each entry once, in order; and a client restarted with its saved cursors resumes
//! exactly where it stopped.

mod common;

use std::time::Duration;

use common::Server;
use common::chat::chat_token;
use huddle_client::{Client, Config, Event};

fn config(server: &Server, identity: &str, device: &str) -> Config {
    Config::new(
        format!("ws://{}/v1/ws", server.addr),
        chat_token(identity, Some("sdk")),
    )
    .device(device)
}

/// Waits for `n` chat messages, skipping other events.
async fn collect(events: &mut tokio::sync::mpsc::Receiver<Event>, n: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    while seqs.len() < n {
        match tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
            Ok(Some(Event::ChatMessage(m))) => seqs.push(m.seq),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_sends_survive_a_server_crash_and_arrive_once_in_order() {
    let mut server = Server::start(
        "[chat]\nmessages_per_second = 100000\nmessage_burst = 100000\n\
         [signal]\nmessages_per_second = 100000\nmessage_burst = 100000\n",
    );
    let (alice, _alice_events) = Client::connect(config(&server, "alice", "a1"))
        .await
        .unwrap();
    let (bob, mut bob_events) = Client::connect(config(&server, "bob", "b1")).await.unwrap();
    // Both devices follow the room's chat once synced.
    for c in [&alice, &bob] {
        c.join(None).await.unwrap();
    }
    // Sends paced over ~600 ms; the server is killed a third of the way through.
    let acks_before_crash = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let pacer = {
        let alice = alice.clone();
        let count = acks_before_crash.clone();
        tokio::spawn(async move {
            let mut sends = Vec::new();
            for i in 0..300 {
                let alice = alice.clone();
                let count = count.clone();
                sends.push(tokio::spawn(async move {
                    let r = alice.send_chat("room:sdk", &format!("n{i}")).await;
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    r
                }));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            sends
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = acks_before_crash.load(std::sync::atomic::Ordering::Relaxed);
    tokio::task::block_in_place(|| server.crash_and_restart());
    let sends = pacer.await.unwrap();
    let mut acked = Vec::new();
    for s in sends {
        let ack = tokio::time::timeout(Duration::from_secs(30), s)
            .await
            .expect("every send is acked in the end")
            .unwrap()
            .expect("acked, not failed");
        acked.push(ack.seq);
    }
    assert!(
        before > 0 && before < 300,
        "the crash came mid-run ({before} acked before it)"
    );
    acked.sort();
    assert_eq!(
        acked,
        (1..=300).collect::<Vec<_>>(),
        "each message stored once"
    );
    let got = collect(&mut bob_events, 300).await;
    assert_eq!(got, (1..=300).collect::<Vec<_>>());
    assert_eq!(bob.cursors()["room:sdk"], 300);
    // Nothing more arrives: no duplicates after the catch-up.
    let extra = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let Some(Event::ChatMessage(m)) = bob_events.recv().await {
                return m;
            }
        }
    })
    .await;
    assert!(extra.is_err(), "unexpected {extra:?}");

    // A restarted app passes back its saved cursors and resumes exactly there.
    let saved = bob.cursors();
    bob.close().await;
    for i in 0..5 {
        alice
            .send_chat("room:sdk", &format!("later{i}"))
            .await
            .unwrap();
    }
    let (_bob, mut events) = Client::connect(config(&server, "bob", "b2").cursors(saved))
        .await
        .unwrap();
    assert_eq!(collect(&mut events, 5).await, vec![301, 302, 303, 304, 305]);
}

#[tokio::test]
async fn a_refused_token_fails_fast_and_server_errors_are_typed() {
    let server = Server::start("");
    let bad = Config::new(format!("ws://{}/v1/ws", server.addr), "not-a-token");
    match Client::connect(bad).await {
        Err(huddle_client::ClientError::Refused(401)) => {}
        other => panic!("expected a 401 refusal, got {:?}", other.map(|_| ())),
    }
    let (alice, _events) = Client::connect(config(&server, "alice", "a1"))
        .await
        .unwrap();
    match alice.send_chat("room:elsewhere", "hi").await {
        Err(huddle_client::ClientError::Server(e)) => assert_eq!(e.code, "forbidden"),
        other => panic!("expected forbidden, got {other:?}"),
    }
    let dm = alice.open_direct("bob").await.unwrap();
    assert_eq!(dm.members, vec!["alice", "bob"]);
    let ack = alice.send_chat(&dm.id, "hello bob").await.unwrap();
    assert_eq!(ack.seq, 1);
    let page = alice.history(&dm.id, None, None, 10).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].text.as_deref(), Some("hello bob"));
}
