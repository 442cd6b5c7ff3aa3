#!/usr/bin/env bash
# User-space instructions per setInventory, counted by valgrind's callgrind: a figure that the
# other engineers' builds on this machine cannot bend (CPU time per mutation moves by ±30 % with
# them; instruction counts do not). Kernel work (syscalls, context switches, fsync) is not in it.
#   bench/callgrind-mutations.sh [BINARY] [SECONDS]   (default: this tree's release build, 20 s)
# The server runs under callgrind with instrumentation off; it is switched on for SECONDS of saturated
# setInventory (after a warm-up) and the mutations in that window are read from /metrics
# (switchboard_events_published_total). SQLITE_SYNCHRONOUS=$SYNC (default normal).
# Output in /tmp/switchboard-callgrind/<binary's directory name>/ (inclusive.txt: the top functions).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
BIN=${1:-$TARGET/release/switchboard}
T=${2:-20}
OUT=/tmp/switchboard-callgrind/$(basename "$(dirname "$BIN")"); mkdir -p "$OUT"
cp "$BIN" "$OUT/switchboard"
rm -f "$OUT"/db* "$OUT"/server.log "$OUT"/callgrind.out*
PORT=$((20000 + RANDOM % 20000))
BIND_ADDR=127.0.0.1:$PORT JWT_SECRET=bench-secret DATABASE_URL="sqlite://$OUT/db" NO_COLOR=1 \
  SQLITE_SYNCHRONOUS=${SYNC:-normal} MAX_CONNECTIONS_PER_USER=1000000 \
  taskset -c 0 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
  "$OUT/switchboard" > "$OUT/server.log" 2>&1 &
VPID=$!
trap 'kill $VPID 2>/dev/null || true' EXIT
for _ in $(seq 240); do grep -q "listening on" "$OUT/server.log" 2>/dev/null && break; sleep 0.5; done
published() {
  curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^switchboard_events_published_total/ {s += $NF} END {printf "%d\n", s}'
}
"$TARGET/release/switchboard-bench" setinventory --saturated --depth 4 --seconds $((T + 15)) \
  --url "ws://127.0.0.1:$PORT/graphql" --pid "$VPID" > "$OUT/bench.txt" 2>&1 &
B=$!
sleep 8
before=$(published)
callgrind_control -i on "$VPID" > /dev/null
sleep "$T"
callgrind_control -i off "$VPID" > /dev/null
after=$(published)
callgrind_control -d "$VPID" > /dev/null
wait $B || true
echo "published: $before before, $after after"
n=$((after - before))
FILE=$(ls -S "$OUT"/callgrind.out* | sed -n 1p)  # the dump, not the empty file at exit
IR=$(callgrind_annotate "$FILE" 2>/dev/null | awk '/PROGRAM TOTALS/ !done {gsub(",", "", $1); print $1; done = 1}')
echo "$BIN: $n mutations in the window, $IR instructions: $((IR / (n > 0 ? n : 1))) per mutation"
callgrind_annotate --inclusive=yes "$FILE" 2>/dev/null | sed -n 1,80p > "$OUT/inclusive.txt"
