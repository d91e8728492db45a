//! Interop of `huddle turn` with coturn's own clients (Debian package `coturn`):
//! `turnutils_stunclient` for STUN Binding and `turnutils_uclient` relaying to
//! `turnutils_peer` over UDP and TCP client legs, with channels and with Send/Data
//! indications, static users and TURN REST credentials. Every run must lose nothing.
//!
//! The tools are looked up on PATH; CI installs them and sets HUDDLE_REQUIRE_INTEROP=1 so
//! that their absence fails instead of skipping.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;
use common::TurnProcess;

fn tool(name: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("HUDDLE_REQUIRE_INTEROP").is_none(),
            "{name} not found: install Debian's coturn package"
        );
        eprintln!("SKIPPED: {name} not found (apt-get install coturn)");
    }
    found
}

/// `huddle turn` with every listener (UDP, TCP, TLS with a self-signed certificate),
/// an IPv6 relay, static and REST credentials, and metrics.
struct Turn {
    process: TurnProcess,
    udp: SocketAddr,
    tcp: SocketAddr,
    tls: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Turn {
    fn start() -> Turn {
        // A self-signed certificate for the TLS listener (the client does not verify it).
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        let mut args: Vec<std::ffi::OsString> = vec!["--tls-listen".into(), "127.0.0.1:0".into()];
        args.extend([
            "--tls-cert".into(),
            cert_path.into_os_string(),
            "--tls-key".into(),
            key_path.into_os_string(),
        ]);
        for a in [
            "--listen",
            "127.0.0.1:0",
            "--relay-ip",
            "127.0.0.1",
            "--relay-ip-v6",
            "::1",
            "--min-port",
            "41000",
            "--max-port",
            "48999",
            "--realm",
            "huddle.test",
            "--user",
            "alice:wonderland",
            "--auth-secret",
            "rest-secret",
            "--allow-loopback-peers",
            "--metrics-listen",
            "127.0.0.1:0",
        ] {
            args.push(a.into());
        }
        let process = TurnProcess::start(&args, &[]);
        let (udp, tcp, tls) = (process.udp, process.tcp, process.tls.unwrap());
        Turn {
            process,
            udp,
            tcp,
            tls,
            _dir: dir,
        }
    }

    fn metrics(&self) -> String {
        self.process.metrics_text()
    }
}

/// A UDP echo peer (`turnutils_peer`) on a free loopback port.
struct Peer {
    child: Child,
    port: u16,
}

impl Peer {
    fn start(bin: &std::path::Path) -> Peer {
        Self::start_on(bin, "127.0.0.1")
    }

    fn start_on(bin: &std::path::Path, ip: &str) -> Peer {
        let port = UdpSocket::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .args(["-L", ip, "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        Peer { child, port }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs turnutils_uclient and returns (sent, received, lost).
fn uclient(bin: &std::path::Path, server_port: u16, peer: u16, extra: &[&str]) -> (u64, u64, u64) {
    uclient_to(bin, server_port, "127.0.0.1", peer, extra)
}

fn uclient_to(
    bin: &std::path::Path,
    server_port: u16,
    peer_ip: &str,
    peer: u16,
    extra: &[&str],
) -> (u64, u64, u64) {
    let run = || {
        let out = Command::new("timeout")
            .arg("60")
            .arg(bin)
            .args(extra)
            .args(["-n", "40", "-m", "2", "-l", "180", "-z", "5"])
            .args([
                "-e",
                peer_ip,
                "-r",
                &peer.to_string(),
                "-p",
                &server_port.to_string(),
                "127.0.0.1",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let mut text = run();
    // Each uclient connection binds a random channel number (0x4000-0x4FFF) to the peer's
    // RTCP port, then another random one to the peer: one time in 4096 the two are equal
    // and the second bind is a conflict that RFC 8656 section 12 answers with 400 (so
    // does coturn). That is the tool's dice, not the server: draw again, once. A server
    // that refused a good bind would refuse it the second time too.
    if text.contains("channel bind: error 400") {
        eprintln!("uclient drew a channel number twice; running it again:\n{text}");
        text = run();
    }
    let field = |key: &str| -> Option<u64> {
        text.lines()
            .rev()
            .find_map(|l| l.split(key).nth(1))
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
    };
    let sent =
        field("tot_send_msgs=").unwrap_or_else(|| panic!("no totals in uclient output:\n{text}"));
    let recv = field("tot_recv_msgs=").unwrap_or(0);
    let lost = field("Total lost packets ").unwrap_or(u64::MAX);
    (sent, recv, lost)
}

fn assert_lossless(label: &str, (sent, recv, lost): (u64, u64, u64), expected: u64) {
    assert_eq!(sent, expected, "{label}: sent");
    assert_eq!(recv, sent, "{label}: every message must come back");
    assert_eq!(lost, 0, "{label}: lost packets");
}

#[test]
fn stunclient_gets_its_reflexive_address() {
    let Some(bin) = tool("turnutils_stunclient") else {
        return;
    };
    let turn = Turn::start();
    let out = Command::new("timeout")
        .arg("20")
        .arg(bin)
        .args(["-p", &turn.udp.port().to_string(), "127.0.0.1"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("UDP reflexive addr: 127.0.0.1:"), "{text}");
}

#[test]
fn uclient_relays_over_udp_with_channels_and_indications() {
    let (Some(uc), Some(pb)) = (tool("turnutils_uclient"), tool("turnutils_peer")) else {
        return;
    };
    let turn = Turn::start();
    let peer = Peer::start(&pb);
    let port = turn.udp.port();
    assert_lossless(
        "udp channels, static user",
        uclient(&uc, port, peer.port, &["-u", "alice", "-w", "wonderland"]),
        80,
    );
    assert_lossless(
        "udp send/data indications, REST",
        uclient(
            &uc,
            port,
            peer.port,
            &["-s", "-u", "bob", "-W", "rest-secret"],
        ),
        80,
    );
    assert_lossless(
        "udp with DONT-FRAGMENT",
        uclient(
            &uc,
            port,
            peer.port,
            &["-g", "-u", "alice", "-w", "wonderland"],
        ),
        80,
    );
    // Two clients relayed by this same server talk through each other's relay address.
    assert_lossless(
        "udp client to client",
        uclient(
            &uc,
            port,
            peer.port,
            &["-y", "-u", "alice", "-w", "wonderland"],
        ),
        160,
    );
    // An IPv6 relay (REQUESTED-ADDRESS-FAMILY) to an IPv6 peer, from an IPv4 client leg.
    let peer6 = Peer::start_on(&pb, "::1");
    assert_lossless(
        "udp ipv6 relay",
        uclient_to(
            &uc,
            port,
            "::1",
            peer6.port,
            &["-x", "-u", "alice", "-w", "wonderland"],
        ),
        80,
    );
    let m = turn.metrics();
    assert!(m.contains("huddle_turn_packets_to_peers_total"), "{m}");
    assert!(
        !m.contains("huddle_turn_packets_to_peers_total 0\n"),
        "relayed packets are counted:\n{m}"
    );
}

#[test]
fn uclient_relays_over_tcp_with_channels_and_indications() {
    let (Some(uc), Some(pb)) = (tool("turnutils_uclient"), tool("turnutils_peer")) else {
        return;
    };
    let turn = Turn::start();
    let peer = Peer::start(&pb);
    let port = turn.tcp.port();
    assert_lossless(
        "tcp channels",
        uclient(
            &uc,
            port,
            peer.port,
            &["-t", "-u", "alice", "-w", "wonderland"],
        ),
        80,
    );
    assert_lossless(
        "tcp indications, REST",
        uclient(
            &uc,
            port,
            peer.port,
            &["-t", "-s", "-u", "bob", "-W", "rest-secret"],
        ),
        80,
    );
    assert_lossless(
        "tcp padded channels",
        uclient(
            &uc,
            port,
            peer.port,
            &["-t", "-D", "-u", "alice", "-w", "wonderland"],
        ),
        80,
    );
}

#[test]
fn uclient_relays_over_tls() {
    let (Some(uc), Some(pb)) = (tool("turnutils_uclient"), tool("turnutils_peer")) else {
        return;
    };
    let turn = Turn::start();
    let peer = Peer::start(&pb);
    let port = turn.tls.port();
    assert_lossless(
        "tls channels",
        uclient(
            &uc,
            port,
            peer.port,
            &["-t", "-S", "-u", "alice", "-w", "wonderland"],
        ),
        80,
    );
    assert_lossless(
        "tls indications, REST",
        uclient(
            &uc,
            port,
            peer.port,
            &["-t", "-S", "-s", "-u", "bob", "-W", "rest-secret"],
        ),
        80,
    );
}

#[test]
fn wrong_password_is_refused_and_counted() {
    let (Some(uc), Some(pb)) = (tool("turnutils_uclient"), tool("turnutils_peer")) else {
        return;
    };
    let turn = Turn::start();
    let peer = Peer::start(&pb);
    let out = Command::new("timeout")
        .args(["5"])
        .arg(uc)
        .args([
            "-u",
            "alice",
            "-w",
            "not-the-password",
            "-n",
            "5",
            "-m",
            "1",
        ])
        .args([
            "-e",
            "127.0.0.1",
            "-r",
            &peer.port.to_string(),
            "-p",
            &turn.udp.port().to_string(),
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !text.contains("tot_recv_msgs=5"),
        "nothing may be relayed:\n{text}"
    );
    let m = turn.metrics();
    let failures: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("huddle_turn_auth_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(failures >= 1, "auth failures are counted:\n{m}");
    assert!(m.contains("huddle_turn_allocations 0"), "{m}");
}
