#!/bin/bash
# What a flood of junk from unknown source addresses costs the SFU: one huddle build's
# server (one shard) carries a fixed load of `bench sfu-load` peers, driven by another
# build's clients, and the server's CPU is read over 10 s without and then 10 s with
# `udp_flood.py` sending RATE datagrams a second (STUN checks naming no session, and
# RTP) at its media port from 16 source ports. Prints the server's share of a core in
# both windows and how many datagrams it counted as unrouted.
#
#   bench/scripts/sfu-flood.sh <server huddle binary> <client huddle binary> [tag]
#
# ROOMS (20), PARTICIPANTS (10) and PUBLISHERS (1) set the load: many peers, few
# packets, so that what grows with the number of peers shows. RATE defaults to 20000.
# Uses 127.0.0.1:18080 and UDP port 7882.
set -euo pipefail
. "$(dirname "$0")/sfu-load-common.sh"
server=$1
clients=$2
tag=${3:-run}
rate=${RATE:-20000}
rooms=${ROOMS:-20}
participants=${PARTICIPANTS:-10}
dir=$(mktemp -d)
start_sfu_server "$dir" 127.0.0.1 "$server"
trap 'kill $spid 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT
sleep 2
"$clients" bench sfu-load --url http://127.0.0.1:18080 --api-secret "$secret" \
  --participants "$participants" --publishers "${PUBLISHERS:-1}" \
  --rooms "$rooms" --max-rooms "$rooms" --step-seconds 40 \
  --out "$dir/report.json" >"$dir/bench.log" 2>&1 &
bpid=$!
ticks() { awk '{print $14 + $15}' "/proc/$spid/stat"; }
unrouted() {
  curl -s http://127.0.0.1:18080/metrics | awk '/^huddle_sfu_unrouted_dropped_total /{print $2}'
}
hz=$(getconf CLK_TCK)
# Joins are done after about 14 s.
sleep 16
c0=$(ticks)
sleep 10
c1=$(ticks)
u1=$(unrouted)
sent=$(python3 "$(dirname "$0")/udp_flood.py" 127.0.0.1 7882 "$rate" 10)
c2=$(ticks)
u2=$(unrouted)
wait $bpid || true
awk -v t="$tag" -v a="$((c1 - c0))" -v b="$((c2 - c1))" -v hz="$hz" -v s="$sent" -v u="$((u2 - u1))" \
  'BEGIN { printf "%s: server %.0f%% of a core without, %.0f%% with the flood (%d sent, %d unrouted)\n", t, a / hz * 10, b / hz * 10, s, u }'
