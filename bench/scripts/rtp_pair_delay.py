#!/usr/bin/env python3
"""Time the SFU takes to forward RTP, from a packet capture of its UDP port.

    rtp_pair_delay.py <capture.pcap> <sfu port> [seconds to skip]

Every RTP packet the SFU sends is paired with the packet it came from: the latest one
received on the port, before it, with the same RTP timestamp (SRTP leaves the RTP
header in the clear, and huddle keeps a publisher's timestamps; `bench sfu-load` starts
each sender's timestamps at a different origin, so a timestamp names one publisher's
frame). The delay is the difference of the two capture times. On loopback the kernel
stamps a datagram during the sender's system call, so this is the SFU's own latency:
reading, decrypting, routing, packetizing, encrypting and sending, and any queueing
behind other work. RTCP, STUN and DTLS are left out, and so are retransmission streams
(RFC 4588 RTX: resends answering NACKs, and the bandwidth estimator's probes, which
str0m sends as resends of old packets): a stream that repeats, to the same destination,
timestamps another stream already carried. Packets the SFU sent in the first `seconds to
skip` of the capture (0 by default) are left out: the start of a capture on loopback
came with a stall of a few milliseconds (most likely tcpdump attaching its socket),
which is not the SFU's. Standard library only.
"""

import struct
import sys

# Link-layer header length by pcap link type: Ethernet (also loopback on Linux), Linux
# cooked v1 and v2.
LINK_HEADER = {1: 14, 113: 16, 276: 20}


def packets(path):
    """(time in s, source port, destination port, UDP payload) of each IPv4/IPv6 UDP
    datagram in the capture."""
    with open(path, "rb") as f:
        header = f.read(24)
        if len(header) < 24:
            raise SystemExit(f"{path}: not a pcap file")
        magic = struct.unpack("<I", header[:4])[0]
        if magic == 0xA1B23C4D:
            scale = 1e-9
        elif magic == 0xA1B2C3D4:
            scale = 1e-6
        else:
            raise SystemExit(f"{path}: unsupported pcap format (magic {magic:#x})")
        link = struct.unpack("<I", header[20:24])[0]
        if link not in LINK_HEADER:
            raise SystemExit(f"{path}: unsupported link type {link}")
        skip = LINK_HEADER[link]
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return
            sec, frac, caplen, _ = struct.unpack("<IIII", rec)
            data = f.read(caplen)
            ip = data[skip:]
            if not ip:
                continue
            version = ip[0] >> 4
            if version == 4:
                if len(ip) < 20 or ip[9] != 17:
                    continue
                udp = ip[(ip[0] & 15) * 4:]
            elif version == 6:
                if len(ip) < 40 or ip[6] != 17:
                    continue
                udp = ip[40:]
            else:
                continue
            if len(udp) < 8:
                continue
            sport, dport = struct.unpack(">HH", udp[:4])
            yield sec + frac * scale, sport, dport, udp[8:]


def rtp_timestamp(payload):
    """The RTP timestamp of an RTP packet (RFC 3550 §5.1), None for anything else
    (RTCP's packet types 200-206 fall in 64-95 once the marker bit is masked off)."""
    if len(payload) < 12 or payload[0] >> 6 != 2 or 64 <= (payload[1] & 0x7F) <= 95:
        return None
    return struct.unpack(">I", payload[4:8])[0]


def rtp_ssrc(payload):
    """The SSRC of an RTP packet (its timestamp was read, so the header is there)."""
    return struct.unpack(">I", payload[8:12])[0]


# Timestamps a stream must repeat before it counts as a retransmission stream (one could
# be a coincidence between two streams' timestamp origins).
RTX_REPEATS = 3


def retransmission_streams(sent):
    """(destination port, SSRC) of the streams among `sent` (time-ordered (destination
    port, SSRC, timestamp) of the SFU's RTP packets) that repeat timestamps another
    stream to the same destination carried first."""
    first = {}
    repeats = {}
    for dport, ssrc, ts in sent:
        owner = first.setdefault((dport, ts), ssrc)
        if owner != ssrc:
            repeats[(dport, ssrc)] = repeats.get((dport, ssrc), 0) + 1
    return {stream for stream, n in repeats.items() if n >= RTX_REPEATS}


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def main():
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    path, port = sys.argv[1], int(sys.argv[2])
    skip = float(sys.argv[3]) if len(sys.argv) == 4 else 0.0
    rtp = []
    captured = sorted(packets(path), key=lambda p: p[0])
    start = captured[0][0] if captured else 0.0
    for t, sport, dport, payload in captured:
        ts = rtp_timestamp(payload)
        if ts is not None and port in (sport, dport):
            rtp.append((t, sport, dport, ts, rtp_ssrc(payload)))
    rtx = retransmission_streams(
        [(dport, ssrc, ts) for _, sport, dport, ts, ssrc in rtp if sport == port]
    )
    latest_in = {}
    delays = []
    unmatched = 0
    resent = 0
    for t, sport, dport, ts, ssrc in rtp:
        if dport == port:
            latest_in[ts] = t
        elif t - start < skip:
            continue
        elif (dport, ssrc) in rtx:
            resent += 1
        else:
            t_in = latest_in.get(ts)
            if t_in is None:
                unmatched += 1
            else:
                delays.append((t - t_in) * 1e3)
    if not delays:
        raise SystemExit("no forwarded RTP packet could be paired")
    delays.sort()
    print(
        f"{len(delays)} forwarded RTP packets ({unmatched} unpaired, {resent} "
        f"retransmitted left out): SFU delay ms "
        f"p50 {percentile(delays, 0.5):.3f}  p90 {percentile(delays, 0.9):.3f}  "
        f"p99 {percentile(delays, 0.99):.3f}  p99.9 {percentile(delays, 0.999):.3f}  "
        f"max {delays[-1]:.3f}"
    )


if __name__ == "__main__":
    main()
