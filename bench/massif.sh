#!/usr/bin/env bash
# Heap per idle connection by allocation site: runs Switchboard under valgrind's massif, opens
# N subscribed idle connections with the harness, stops the server and prints bytes per
# connection at the heap peak.   bench/massif.sh [CONNECTIONS] [--sse]   (default 2000)
# --sse: the subscribers are GraphQL-over-SSE streams (distinct connections) instead of graphql-ws.
# Uses $CARGO_TARGET_DIR or ./target (or the binary in $SWITCHBOARD_BIN); output in
# /tmp/switchboard-heap/.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
shift || true
IDLE_ARGS=("$@")
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
OUT=/tmp/switchboard-heap; mkdir -p "$OUT"
cp "${SWITCHBOARD_BIN:-$TARGET/release/switchboard}" "$OUT/switchboard"
# The default build allocates with jemalloc, which neither massif nor libc probes can see.
if nm "$OUT/switchboard" 2>/dev/null | grep -q ' _rjem_malloc$'; then
  echo "error: $TARGET/release/switchboard uses jemalloc; build it with the system allocator first:" >&2
  echo "  cargo build --release --bin switchboard --no-default-features" >&2
  exit 1
fi
rm -f "$OUT"/db* "$OUT"/server.log "$OUT"/massif.out
PORT=$((20000 + RANDOM % 20000))
# Every connection signs in as the same user, far past the default per-user share (as in
# switchboard-bench's own spawned servers).
BIND_ADDR=127.0.0.1:$PORT JWT_SECRET=bench-secret DATABASE_URL="sqlite://$OUT/db" NO_COLOR=1 \
  MAX_CONNECTIONS_PER_USER=1000000 \
  taskset -c 0 valgrind --tool=massif --threshold=0.3 --depth=40 --detailed-freq=1 --max-snapshots=40 \
  --massif-out-file="$OUT/massif.out" "$OUT/switchboard" > "$OUT/server.log" 2>&1 &
VPID=$!
trap 'kill $VPID 2>/dev/null || true' EXIT
for _ in $(seq 120); do grep -q "listening on" "$OUT/server.log" 2>/dev/null && break; sleep 0.5; done
"$TARGET/release/switchboard-bench" idle --url "ws://127.0.0.1:$PORT/graphql" --pid "$VPID" \
  --max-connections "$N" --step $((N / 2)) --concurrency 16 "${IDLE_ARGS[@]}" 2>&1 | grep "^| idle" || true
kill -TERM "$VPID"; wait "$VPID" 2>/dev/null || true
python3 bench/tools/massif_sites.py "$OUT/massif.out" "$N"
