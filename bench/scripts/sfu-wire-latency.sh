#!/bin/bash
# The SFU's own forwarding latency, measured on the wire: one huddle build's server
# (one shard) under a fixed `bench sfu-load` load, its UDP port captured on loopback
# with tcpdump for a few seconds, each forwarded RTP packet paired with the packet it
# came from (rtp_pair_delay.py). The server runs on SERVER_CPUS and the clients and
# tcpdump on CLIENT_CPUS, so that the clients' work does not preempt the SFU (on a
# machine with more cores, give each side its own).
#
#   bench/scripts/sfu-wire-latency.sh <huddle binary> [tag]
#
# ROOMS (8), PARTICIPANTS (10, per room), PUBLISHERS (all) set the load as in
# sfu-ab.sh (sfu-load-common.sh); SERVER_CPUS (0), CLIENT_CPUS (1), CAPTURE_SECONDS (5);
# CLIENTS names another huddle binary to run the clients (the same one by default);
# SKIP_SECONDS (0.25): the start of the capture left out of the figures (it came with
# a stall of a few milliseconds, most likely tcpdump attaching; rtp_pair_delay.py).
# Needs tcpdump
# (Debian: apt-get install tcpdump) and root for the capture. Uses 127.0.0.1:18080
# and UDP port 7882.
set -euo pipefail
bin=$1
tag=${2:-run}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/sfu-load-common.sh"
dir=$(mktemp -d)
start_sfu_server "$dir" 127.0.0.1 taskset -c "${SERVER_CPUS:-0}" "$bin"
trap 'kill $spid 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT
sleep 2
start_sfu_load "$dir" 127.0.0.1 taskset -c "${CLIENT_CPUS:-1}" "${CLIENTS:-$bin}"
# Joins are done and the step is measuring after about 14 s.
sleep 14
taskset -c "${CLIENT_CPUS:-1}" timeout "${CAPTURE_SECONDS:-5}" \
  tcpdump -q -s 96 -B 65536 -i lo --time-stamp-precision=nano -w "$dir/sfu.pcap" \
  udp port 7882 2>"$dir/tcpdump.log" || true
wait $bpid
echo "$tag: $(grep -m1 -E '^ +[0-9]+ +[0-9]+ ' "$dir/bench.log" || tail -1 "$dir/bench.log")"
grep -E 'packets (captured|dropped by kernel)' "$dir/tcpdump.log" | sed "s/^/$tag: tcpdump: /"
echo "$tag: $(python3 "$here/rtp_pair_delay.py" "$dir/sfu.pcap" 7882 "${SKIP_SECONDS:-0.25}")"
