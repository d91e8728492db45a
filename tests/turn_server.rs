//! `huddle turn` as a process: limits that need no third-party client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

mod common;
use common::TurnProcess;

#[test]
fn stream_connections_over_the_per_ip_cap_are_closed_and_counted() {
    let turn = TurnProcess::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--relay-ip",
            "127.0.0.1",
            "--auth-secret",
            "s",
            "--metrics-listen",
            "127.0.0.1:0",
            "--threads",
            "1",
        ],
        &[("HUDDLE_TURN__MAX_STREAM_CONNECTIONS_PER_IP", "2")],
    );
    let tcp = turn.tcp;
    let keep: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(tcp).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    // The third connection from this IP is closed without a byte.
    let mut third = TcpStream::connect(tcp).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        third.read(&mut buf).unwrap_or(0),
        0,
        "over-cap connection must be closed"
    );
    // The two admitted ones still get STUN answers: a Binding request over TCP.
    let mut first = &keep[0];
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(&[5u8; 12]);
    first.write_all(&req).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut resp = [0u8; 20];
    first.read_exact(&mut resp).unwrap();
    assert_eq!(&resp[0..2], &[0x01, 0x01], "Binding success response");
    let body = turn.metrics_text();
    assert!(
        body.contains("huddle_turn_stream_connections_refused_total 1"),
        "{body}"
    );
    drop(keep);
}
