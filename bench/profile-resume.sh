#!/usr/bin/env bash
# Profiles a Switchboard server (perf, DWARF call graphs) during one of the resume scenarios and
# prints where its CPU goes (bench/tools/inclusive.py: share of samples under each part).
#   bench/profile-resume.sh mutations [BINARY]   saturated setInventory (SQLITE_SYNCHRONOUS=$SYNC,
#                                                default normal); BINARY e.g. the pre-log one
#   bench/profile-resume.sh storm                the "conns first" round of a storm (S=$S, default
#                                                10000 subscribers, MISSED=$MISSED events each, default 20)
#   bench/profile-resume.sh replay               one subscriber resuming $N events (default 50000)
# Needs perf (root, or perf_event_paranoid <= 1). Uses $CARGO_TARGET_DIR or ./target; copies the
# server binary so that a rebuild cannot delete it under perf. Output in /tmp/switchboard-profile-resume/.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?mutations, storm or replay}
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
BIN=${2:-$TARGET/release/switchboard}
OUT=/tmp/switchboard-profile-resume; mkdir -p "$OUT"
cp "$BIN" "$OUT/switchboard"
rm -f "$OUT"/db* "$OUT"/server.log "$OUT"/*.old "$OUT"/ctl "$OUT"/ack
PORT=$((20000 + RANDOM % 20000))
BIND_ADDR=127.0.0.1:$PORT JWT_SECRET=bench-secret DATABASE_URL="sqlite://$OUT/db" NO_COLOR=1 \
  SQLITE_SYNCHRONOUS=${SYNC:-normal} MAX_CONNECTIONS_PER_USER=1000000 RESUME_MAX_EVENTS=100000 \
  taskset -c 0 "$OUT/switchboard" > "$OUT/server.log" 2>&1 &
SPID=$!
trap 'kill $SPID 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q "listening on" "$OUT/server.log" && break; sleep 0.1; done
bench() { "$TARGET/release/switchboard-bench" "$@" --url "ws://127.0.0.1:$PORT/graphql" --pid "$SPID"; }

case "$MODE" in
  mutations)
    bench setinventory --saturated --seconds 12 > "$OUT/bench.txt" 2>&1 &
    B=$!; sleep 5
    perf record -F 999 --call-graph dwarf,16384 -p "$SPID" -o "$OUT/cpu.data" -- sleep 4 2> /dev/null
    perf stat -e task-clock,context-switches -p "$SPID" -x, -o "$OUT/stat.csv" -- sleep 2
    wait $B
    sed 's/^/perf stat (2 s): /' "$OUT/stat.csv" | grep -v "^perf stat (2 s): #" | grep -v ": $" ;;
  storm|replay)
    # perf starts disabled and is switched on and off through a control fifo when the harness
    # says the measured part begins and ends.
    mkfifo "$OUT/ctl" "$OUT/ack"
    perf record -F 499 --call-graph dwarf,32768 -p "$SPID" -o "$OUT/cpu.data" -D -1 \
      --control "fifo:$OUT/ctl,$OUT/ack" 2> /dev/null &
    P=$!
    exec 7<>"$OUT/ctl" 8<>"$OUT/ack"
    if [ "$MODE" = storm ]; then
      bench storm -s "${S:-10000}" --missed "${MISSED:-20}" > "$OUT/bench.txt" 2>&1 &
      START="now every subscribe at once"; NTH=2; STOP="storm: resume, conns first:"
    else
      bench replay --sizes "${N:-50000}" --repeats 1 > "$OUT/bench.txt" 2>&1 &
      START="after the cursor"; NTH=1; STOP="run 1:"
    fi
    B=$!
    until [ "$(grep -c "$START" "$OUT/bench.txt" || true)" -ge "$NTH" ]; do sleep 0.05; done
    echo enable >&7; read -r -t 5 _ <&8 || true
    until grep -q "$STOP" "$OUT/bench.txt"; do sleep 0.02; done
    echo disable >&7; read -r -t 5 _ <&8 || true
    wait $B; kill -INT $P; wait $P || true ;;
  *) echo "unknown mode $MODE" >&2; exit 2 ;;
esac
grep -E "^\| (setinventory|storm|replay)" "$OUT/bench.txt" || tail -20 "$OUT/bench.txt"
perf script -i "$OUT/cpu.data" -F comm,tid,ip,sym --no-inline 2>/dev/null > "$OUT/stacks.txt"
python3 bench/tools/inclusive.py < "$OUT/stacks.txt" | tee "$OUT/inclusive.txt"
