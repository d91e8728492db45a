//! `huddle turn` as a process: limits that need no third-party client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn stream_connections_over_the_per_ip_cap_are_closed_and_counted() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_huddle"))
        .args([
            "turn",
            "--listen",
            "127.0.0.1:0",
            "--relay-ip",
            "127.0.0.1",
            "--auth-secret",
            "s",
        ])
        .args(["--metrics-listen", "127.0.0.1:0", "--threads", "1"])
        .env("HUDDLE_TURN__MAX_STREAM_CONNECTIONS_PER_IP", "2")
        .env("HUDDLE_LOG__LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut tcp, mut metrics): (Option<SocketAddr>, Option<SocketAddr>) = (None, None);
    while tcp.is_none() || metrics.is_none() {
        let line = lines.next().expect("huddle turn exited").unwrap();
        if let Some(a) = line.strip_prefix("huddle: turn listening on tcp://") {
            tcp = Some(a.parse().unwrap());
        } else if let Some(a) = line.strip_prefix("huddle: turn metrics on http://") {
            metrics = Some(a.parse().unwrap());
        }
    }
    let tcp = tcp.unwrap();
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
    let mut m = TcpStream::connect(metrics.unwrap()).unwrap();
    write!(m, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    m.read_to_string(&mut body).unwrap();
    assert!(
        body.contains("huddle_turn_stream_connections_refused_total 1"),
        "{body}"
    );
    drop(keep);
    let _ = child.kill();
    let _ = child.wait();
}
