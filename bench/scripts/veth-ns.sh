#!/bin/bash
# A network namespace for benchmark clients, joined to this host by a veth pair whose
# receive processing runs in its own kernel threads (GRO on, threaded NAPI). A datagram
# the SFU sends into it is then delivered by the napi/… thread, not inside the SFU's
# own send call as on loopback, where the clients' socket delivery and wake-ups are
# charged to the sender; that is closer to a network interface, whose receive side is
# on the clients' machines (the sender still pays for waking that thread). Needs root,
# iproute2 and ethtool.
#
#   bench/scripts/veth-ns.sh up     # namespace huddle-bench, host 10.99.0.1, clients 10.99.0.2
#   bench/scripts/veth-ns.sh down
set -euo pipefail
ns=huddle-bench
case ${1:-} in
up)
  ip netns add $ns
  ip link add hb0 type veth peer name hb1
  ip link set hb1 netns $ns
  ip addr add 10.99.0.1/24 dev hb0
  ip link set hb0 up
  ip netns exec $ns ip addr add 10.99.0.2/24 dev hb1
  ip netns exec $ns ip link set hb1 up
  ip netns exec $ns ip link set lo up
  # veth hands a datagram to the peer's NAPI queue only when the peer does GRO and the
  # sender does no TSO; otherwise it goes to the sending CPU's backlog, processed in
  # the sender's own system call as on loopback.
  ethtool -K hb0 gro on tso off gso off >/dev/null
  ip netns exec $ns ethtool -K hb1 gro on tso off gso off >/dev/null
  echo 1 >/sys/class/net/hb0/threaded
  ip netns exec $ns sh -c 'echo 1 >/sys/class/net/hb1/threaded'
  ;;
down)
  ip link del hb0 2>/dev/null || true
  ip netns del $ns 2>/dev/null || true
  ;;
*)
  echo "usage: $0 up|down" >&2
  exit 2
  ;;
esac
