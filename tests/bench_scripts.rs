//! bench/scripts/rtp_pair_delay.py, which times the SFU from a capture of its port, on a
//! capture written here: forwarded RTP packets are paired with the received packet of
//! the same RTP timestamp, over IPv4 and IPv6; RTCP, unpaired packets and retransmission
//! streams are left out. And bench/scripts/udp_flood.py, the junk of `sfu-flood.sh`.

use std::process::Command;

const SFU_PORT: u16 = 7882;

/// An RTP packet (RFC 3550 §5.1) with payload type `pt` and timestamp `ts`.
fn rtp(pt: u8, ts: u32) -> Vec<u8> {
    rtp_of(0x1234_5678, pt, ts)
}

/// The same in the stream of SSRC `ssrc`.
fn rtp_of(ssrc: u32, pt: u8, ts: u32) -> Vec<u8> {
    let mut p = vec![0x80, pt, 0, 1];
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xAA; 20]);
    p
}

fn udp(src: u16, dst: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&src.to_be_bytes());
    u.extend_from_slice(&dst.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// An Ethernet frame carrying a UDP datagram over IPv4 or IPv6 (loopback addresses).
fn frame(v6: bool, src: u16, dst: u16, payload: &[u8]) -> Vec<u8> {
    let udp = udp(src, dst, payload);
    let mut f = vec![0; 12];
    if v6 {
        f.extend_from_slice(&[0x86, 0xDD]);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(udp.len() as u16).to_be_bytes());
        f.extend_from_slice(&[17, 64]);
        let lo = std::net::Ipv6Addr::LOCALHOST.octets();
        f.extend_from_slice(&lo);
        f.extend_from_slice(&lo);
    } else {
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&((20 + udp.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
    }
    f.extend_from_slice(&udp);
    f
}

/// A nanosecond pcap file of `(time in ns, frame)` records.
fn pcap(records: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xA1B2_3C4Du32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (ns, f) in records {
        out.extend_from_slice(&((ns / 1_000_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((ns % 1_000_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// Runs the script on the capture at `path` for `port`, with `extra` arguments.
fn pair_delay(path: &std::path::Path, port: u16, extra: &[&str]) -> std::process::Output {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/bench/scripts/rtp_pair_delay.py"
    );
    Command::new("python3")
        .arg(script)
        .arg(path)
        .arg(port.to_string())
        .args(extra)
        .output()
        .expect("python3 runs (CI installs it)")
}

#[test]
fn rtp_pair_delay_times_each_forwarded_packet_from_its_source() {
    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;
    let (a, b, c) = (960_000, 7_777_000, 123);
    // Written out of time order: the script sorts by capture time.
    let records = vec![
        // Publishers' packets reach the SFU.
        (S, frame(false, 40_000, SFU_PORT, &rtp(111, a))),
        (S + 10 * MS, frame(false, 40_002, SFU_PORT, &rtp(111, b))),
        // A second packet of b's timestamp arrives later: b's forward pairs with the
        // latest one before it.
        (S + 12 * MS, frame(false, 40_002, SFU_PORT, &rtp(111, b))),
        // Forwarded: a to two subscribers, b over IPv6.
        (S + 300_000, frame(false, SFU_PORT, 40_001, &rtp(96, a))),
        (S + 700_000, frame(false, SFU_PORT, 40_003, &rtp(96, a))),
        (
            S + 12 * MS + 500_000,
            frame(true, SFU_PORT, 40_001, &rtp(96, b)),
        ),
        // RTCP (a receiver report, packet type 201) is not RTP.
        (S + 800_000, frame(false, SFU_PORT, 40_001, &rtp(201, a))),
        // A timestamp the SFU never received.
        (S + 900_000, frame(false, SFU_PORT, 40_001, &rtp(96, c))),
        // Traffic of another port is not the SFU's.
        (S + 950_000, frame(false, 5000, 40_001, &rtp(96, a))),
        // A retransmission stream (RTX) to 40_001 resends a, b and c long after: not
        // forwarding, left out.
        (
            S + 20 * MS,
            frame(false, SFU_PORT, 40_001, &rtp_of(7, 97, a)),
        ),
        (
            S + 21 * MS,
            frame(false, SFU_PORT, 40_001, &rtp_of(7, 97, b)),
        ),
        (
            S + 22 * MS,
            frame(false, SFU_PORT, 40_001, &rtp_of(7, 97, c)),
        ),
        // Another stream to 40_003 that happens to carry a's timestamp once (two
        // streams' timestamp origins can meet): forwarded, counted.
        (
            S + 800_000,
            frame(false, SFU_PORT, 40_003, &rtp_of(8, 111, a)),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sfu.pcap");
    std::fs::write(&path, pcap(&records)).unwrap();
    let run = |extra: &[&str]| {
        let out = pair_delay(&path, SFU_PORT, extra);
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    assert_eq!(
        run(&[]),
        "4 forwarded RTP packets (1 unpaired, 3 retransmitted left out): SFU delay ms \
         p50 0.700  p90 0.800  p99 0.800  p99.9 0.800  max 0.800",
    );
    // Skipping the first 0.5 ms of the capture leaves out a's forward at 0.3 ms.
    assert_eq!(
        run(&["0.0005"]),
        "3 forwarded RTP packets (1 unpaired, 3 retransmitted left out): SFU delay ms \
         p50 0.700  p90 0.800  p99 0.800  p99.9 0.800  max 0.800",
    );
}

#[test]
fn rtp_pair_delay_refuses_what_is_not_a_capture() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not.pcap");
    std::fs::write(&path, b"this is not a pcap file at all").unwrap();
    let out = pair_delay(&path, SFU_PORT, &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unsupported pcap format"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// bench/scripts/udp_flood.py, the junk `sfu-flood.sh` sends: the count it prints
/// arrives, half STUN Binding requests with the attributes a STUN parser requires of an
/// ICE check (USERNAME, PRIORITY, MESSAGE-INTEGRITY; RFC 8445 §7.1.2; so the SFU routes
/// them rather than dropping them as malformed), half RTP, from several ports.
#[test]
fn udp_flood_sends_checks_that_parse_and_rtp() {
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let port = sink.local_addr().unwrap().port().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/scripts/udp_flood.py");
    let out = Command::new("python3")
        .args([script, "127.0.0.1", &port, "2000", "0.1", "4"])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{out:?}");
    let sent: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!((150..=200).contains(&sent), "{sent} sent");
    let (mut checks, mut rtps, mut sources) = (0, 0, std::collections::HashSet::new());
    let mut buf = [0u8; 2048];
    for _ in 0..sent {
        let (n, from) = sink.recv_from(&mut buf).expect("every datagram arrives");
        sources.insert(from);
        let d = &buf[..n];
        if d[0] == 0x80 {
            rtps += 1;
            continue;
        }
        // Binding request, length of what follows the header, magic cookie.
        assert_eq!(&d[..2], &[0x00, 0x01]);
        assert_eq!(usize::from(u16::from_be_bytes([d[2], d[3]])), n - 20);
        assert_eq!(&d[4..8], &[0x21, 0x12, 0xa4, 0x42]);
        let mut kinds = Vec::new();
        let mut rest = &d[20..];
        while !rest.is_empty() {
            let kind = u16::from_be_bytes([rest[0], rest[1]]);
            let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            kinds.push(kind);
            rest = &rest[(4 + len).next_multiple_of(4)..];
        }
        assert_eq!(
            kinds,
            [0x0006, 0x0024, 0x0008],
            "USERNAME, PRIORITY, MESSAGE-INTEGRITY"
        );
        checks += 1;
    }
    assert_eq!((checks, rtps), (sent.div_ceil(2), sent / 2));
    assert_eq!(sources.len(), 4);
}
