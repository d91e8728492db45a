# Shared by sfu-ab.sh and sfu-wire-latency.sh (sourced, not run): a huddle server with
# SHARDS SFU shards (1) and the fixed `bench sfu-load` load those scripts measure.
#
# ROOMS (8), PARTICIPANTS (10, per room) and PUBLISHERS (all; the others only receive)
# set the load; LOAD_ARGS adds `bench sfu-load` options (e.g. `--video`). The server's
# default limits allow 50 participants per room. Other HUDDLE_* settings pass through
# the environment (e.g. HUDDLE_SFU__SPREAD_ROOMS_ABOVE).

# start_sfu_server DIR HOST CMD...: runs `CMD... serve` on HOST (HTTP port 18080, SFU
# UDP port 7882) with fresh secrets, SHARDS shards and TURN off, logging to
# DIR/server.log.
# Sets `spid` (the server's pid) and `secret` (its API secret).
start_sfu_server() {
  local dir=$1 host=$2
  shift 2
  secret=sfu-bench-api-secret-$RANDOM$RANDOM
  HUDDLE_AUTH__TOKEN_SECRET=sfu-bench-token-secret-$RANDOM$RANDOM$RANDOM$RANDOM \
  HUDDLE_AUTH__API_SECRET=$secret HUDDLE_SFU__SHARDS=${SHARDS:-1} HUDDLE_TURN__ENABLED=false \
  HUDDLE_SFU__LISTEN=$host:7882 \
    "$@" serve --listen "$host:18080" --data-dir "$dir/data" --log-level warn \
    >"$dir/server.log" 2>&1 &
  spid=$!
}

# start_sfu_load DIR HOST CMD...: runs `CMD... bench sfu-load` against that server, one
# step of 25 s at the ROOMS/PARTICIPANTS/PUBLISHERS load, report in DIR/report.json and
# output in DIR/bench.log. Sets `bpid`. Joins are done and the step is measuring about
# 14 s after it starts.
start_sfu_load() {
  local dir=$1 host=$2 participants=${PARTICIPANTS:-10}
  shift 2
  "$@" bench sfu-load --url "http://$host:18080" --api-secret "$secret" \
    --participants "$participants" --publishers "${PUBLISHERS:-$participants}" \
    --rooms "${ROOMS:-8}" --max-rooms "${ROOMS:-8}" --step-seconds 25 \
    --out "$dir/report.json" ${LOAD_ARGS:-} >"$dir/bench.log" 2>&1 &
  bpid=$!
}
