#!/usr/bin/env python3
"""Sends junk to a UDP port at a steady rate from several source ports: STUN Binding
requests that parse (USERNAME naming no session, PRIORITY, a MESSAGE-INTEGRITY nobody
can check) alternating with RTP-looking datagrams. It stands for a flood from forged
addresses against the SFU's media port (bench/scripts/sfu-flood.sh).

    udp_flood.py HOST PORT RATE SECONDS [SOURCES]

Prints the number of datagrams sent.
"""
import socket
import struct
import sys
import time


def stun_check(n):
    attrs = struct.pack("!HH", 0x0006, 8) + b"nosuch:x"
    attrs += struct.pack("!HHI", 0x0024, 4, 0x6E001EFF)
    attrs += struct.pack("!HH", 0x0008, 20) + bytes(20)
    txid = n.to_bytes(12, "big")
    return struct.pack("!HHI", 0x0001, len(attrs), 0x2112A442) + txid + attrs


def rtp(n):
    return struct.pack("!BBHII", 0x80, 0x6F, n & 0xFFFF, n, 0xDEADBEEF) + bytes(188)


def main():
    host, port, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    sources = int(sys.argv[5]) if len(sys.argv) > 5 else 16
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(sources)]
    for s in socks:
        s.setblocking(False)
    start = time.monotonic()
    sent = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            break
        due = int(elapsed * rate)
        while sent < due:
            payload = stun_check(sent) if sent % 2 == 0 else rtp(sent)
            try:
                socks[sent % sources].sendto(payload, (host, port))
            except BlockingIOError:
                pass
            sent += 1
        time.sleep(0.0005)
    print(sent)


if __name__ == "__main__":
    main()
