#!/bin/bash
# Cost per forwarded packet of one huddle build's SFU, driven by another build's
# synthetic clients (`bench sfu-load --url`), so that server and clients can be changed
# one at a time. Prints packets sent per CPU-second of the server over 10 s of a fixed
# load (8 rooms of 10 audio participants, one shard; SHARDS sets the count), and each
# shard thread's share of a core.
#
#   bench/scripts/sfu-ab.sh <server huddle binary> <client huddle binary> [tag]
#
# ROOMS, PARTICIPANTS (per room) and PUBLISHERS (per room; the others only receive)
# change the load, e.g. ROOMS=2 PARTICIPANTS=50 PUBLISHERS=10 (sfu-load-common.sh).
#
# Uses 127.0.0.1:18080 and the SFU's default UDP port 7882; both must be free. With
# CLIENT_NETNS=huddle-bench (see veth-ns.sh) the clients run in that namespace and the
# server listens on 10.99.0.1 (HTTP port 18080, UDP 7882).
set -euo pipefail
. "$(dirname "$0")/sfu-load-common.sh"
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
start_sfu_server "$dir" "$host" "$server"
trap 'kill $spid 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT
sleep 2
start_sfu_load "$dir" "$host" "${run_clients[@]}" "$clients"
sample() {
  local pkts cpu
  pkts=$(curl -s http://$host:18080/metrics | awk '/^huddle_sfu_packets_out_total /{print $2}')
  cpu=$(awk '{print $14 + $15}' "/proc/$spid/stat")
  echo "$pkts $cpu"
}
# CPU ticks of each SFU shard thread (huddle-sfu-N), one "name ticks" line each.
threads() {
  local t
  for t in /proc/"$spid"/task/*; do
    case $(cat "$t/comm") in
      huddle-sfu-*) echo "$(cat "$t/comm") $(awk '{print $14 + $15}' "$t/stat")" ;;
    esac
  done | sort
}
# Joins are done and the step is measuring after about 14 s.
sleep 14
read -r p0 c0 < <(sample)
threads >"$dir/threads0"
sleep 10
read -r p1 c1 < <(sample)
threads >"$dir/threads1"
wait $bpid
ticks=$(getconf CLK_TCK)
awk -v t="$tag" -v p="$((p1 - p0))" -v c="$((c1 - c0))" -v hz="$ticks" \
  'BEGIN { printf "%s: %d packets, %.2f CPU s, %.0f pkt per CPU-s\n", t, p, c / hz, p / (c / hz) }'
# Each shard thread's share of a core over the 10 s.
join "$dir/threads0" "$dir/threads1" | awk -v t="$tag" -v hz="$ticks" \
  '{ s = s sprintf(" %s %.0f%%", $1, ($3 - $2) / hz * 10) } END { print t ": threads:" s }'
