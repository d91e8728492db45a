#!/bin/bash
# Cost per forwarded packet of one huddle build's SFU, driven by another build's
# synthetic clients (`bench sfu-load --url`), so that server and clients can be changed
# one at a time. Prints packets sent per CPU-second of the server over 10 s of a fixed
# load (8 rooms of 10 audio participants, one shard).
#
#   bench/scripts/sfu-ab.sh <server huddle binary> <client huddle binary> [tag]
#
# ROOMS, PARTICIPANTS (per room) and PUBLISHERS (per room; the others only receive)
# change the load, e.g. ROOMS=2 PARTICIPANTS=50 PUBLISHERS=10 (the server's default
# limits allow 50 participants per room).
#
# Uses 127.0.0.1:18080 and the SFU's default UDP port 7882; both must be free. With
# CLIENT_NETNS=huddle-bench (see veth-ns.sh) the clients run in that namespace and the
# server listens on 10.99.0.1 (HTTP port 18080, UDP 7882).
set -euo pipefail
host=127.0.0.1
run_clients=()
if [ -n "${CLIENT_NETNS:-}" ]; then
  host=10.99.0.1
  run_clients=(ip netns exec "$CLIENT_NETNS")
fi
server=$1
clients=$2
tag=${3:-run}
dir=$(mktemp -d)
secret=sfu-ab-api-secret-$RANDOM$RANDOM
HUDDLE_AUTH__TOKEN_SECRET=sfu-ab-token-secret-$RANDOM$RANDOM$RANDOM$RANDOM \
HUDDLE_AUTH__API_SECRET=$secret HUDDLE_SFU__SHARDS=1 HUDDLE_TURN__ENABLED=false \
HUDDLE_SFU__LISTEN=$host:7882 \
  "$server" serve --listen $host:18080 --data-dir "$dir/data" --log-level warn \
  >"$dir/server.log" 2>&1 &
spid=$!
trap 'kill $spid 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT
sleep 2
"${run_clients[@]}" "$clients" bench sfu-load --url http://$host:18080 --api-secret "$secret" \
  --participants "${PARTICIPANTS:-10}" --publishers "${PUBLISHERS:-${PARTICIPANTS:-10}}" \
  --rooms "${ROOMS:-8}" --max-rooms "${ROOMS:-8}" --step-seconds 25 --out "$dir/report.json" \
  >"$dir/bench.log" 2>&1 &
bpid=$!
sample() {
  local pkts cpu
  pkts=$(curl -s http://$host:18080/metrics | awk '/^huddle_sfu_packets_out_total /{print $2}')
  cpu=$(awk '{print $14 + $15}' "/proc/$spid/stat")
  echo "$pkts $cpu"
}
# Joins are done and the step is measuring after about 14 s.
sleep 14
read -r p0 c0 < <(sample)
sleep 10
read -r p1 c1 < <(sample)
wait $bpid
ticks=$(getconf CLK_TCK)
awk -v t="$tag" -v p="$((p1 - p0))" -v c="$((c1 - c0))" -v hz="$ticks" \
  'BEGIN { printf "%s: %d packets, %.2f CPU s, %.0f pkt per CPU-s\n", t, p, c / hz, p / (c / hz) }'
