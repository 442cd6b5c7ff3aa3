#!/usr/bin/env bash
# Profiles a Switchboard server during a fan-out: CPU buckets (perf, DWARF call graphs) and
# malloc/realloc calls per delivery (libc uprobes), with allocation sites.
#   bench/profile.sh [SUBSCRIBERS] [RATE] [SECONDS]     (defaults 1000 20 12)
# Needs perf (root, or perf_event_paranoid <= 1 and uprobes allowed). Uses $CARGO_TARGET_DIR or
# ./target for the binaries; copies the server binary so that a rebuild cannot delete it under
# perf (a deleted binary cannot be unwound or symbolised). Output in /tmp/switchboard-profile/.
set -euo pipefail
cd "$(dirname "$0")/.."
S=${1:-1000}; R=${2:-20}; T=${3:-12}
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
OUT=/tmp/switchboard-profile; mkdir -p "$OUT"
cp "$TARGET/release/switchboard" "$OUT/switchboard"
# The default build allocates with jemalloc, which neither massif nor libc probes can see.
if nm "$OUT/switchboard" 2>/dev/null | grep -q ' _rjem_malloc$'; then
  echo "error: $TARGET/release/switchboard uses jemalloc; build it with the system allocator first:" >&2
  echo "  cargo build --release --bin switchboard --no-default-features" >&2
  exit 1
fi
rm -f "$OUT"/db* "$OUT"/server.log "$OUT"/*.old
PORT=$((20000 + RANDOM % 20000))
BIND_ADDR=127.0.0.1:$PORT JWT_SECRET=bench-secret DATABASE_URL="sqlite://$OUT/db" NO_COLOR=1 \
  taskset -c 0 "$OUT/switchboard" > "$OUT/server.log" 2>&1 &
SPID=$!
trap 'kill $SPID 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q "listening on" "$OUT/server.log" && break; sleep 0.1; done
bench() { "$TARGET/release/switchboard-bench" fanout --url "ws://127.0.0.1:$PORT/graphql" --pid "$SPID" -s "$S" -r "$R" --seconds "$T" "$@"; }
half=$((T / 2))

echo "== CPU profile ($S subscribers, $R events/s)"
bench > "$OUT/fanout-cpu.txt" 2>&1 &
B=$!; sleep "$half"
perf record -F 1999 --call-graph dwarf,16384 -p "$SPID" -o "$OUT/cpu.data" -- sleep 4 2> /dev/null
wait $B; grep -E "^\| fanout" "$OUT/fanout-cpu.txt" || cat "$OUT/fanout-cpu.txt"
perf script -i "$OUT/cpu.data" -F comm,tid,ip,sym --no-inline 2>/dev/null | python3 bench/tools/buckets.py | tee "$OUT/buckets.txt"

echo "== allocations per delivery"
LIBC=$(ldd "$OUT/switchboard" | awk '/libc.so.6/ {print $3}')
perf probe -q -x "$LIBC" --add malloc 2>/dev/null || true
perf probe -q -x "$LIBC" --add realloc 2>/dev/null || true
bench > "$OUT/fanout-alloc.txt" 2>&1 &
B=$!; sleep "$half"
perf stat -e probe_libc:malloc,probe_libc:realloc -p "$SPID" -x, -o "$OUT/alloc-stat.csv" -- sleep 4
perf record -e probe_libc:malloc,probe_libc:realloc --call-graph dwarf,8192 -p "$SPID" -o "$OUT/alloc.data" -- sleep 0.5 2> /dev/null
wait $B
python3 - "$OUT/alloc-stat.csv" "$S" "$R" <<'PY'
import sys
counts = {l.split(',')[2]: int(l.split(',')[0]) for l in open(sys.argv[1]) if l.count(',') > 2 and l.split(',')[0].isdigit()}
deliveries = 4 * int(sys.argv[2]) * float(sys.argv[3])
for event, n in counts.items():
    print(f"{event}: {n} in 4 s = {n / deliveries:.2f} per delivery ({deliveries:.0f} deliveries)")
PY
perf script -i "$OUT/alloc.data" -F event,ip,sym --no-inline 2>/dev/null | python3 bench/tools/alloc_sites.py > "$OUT/alloc-sites.txt"
head -25 "$OUT/alloc-sites.txt"
