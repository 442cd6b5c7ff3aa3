#!/usr/bin/env bash
# The `cluster` scenario (issue 10) with a private PostgreSQL and Redis on free loopback ports,
# stopped and deleted at the end however the run ends. Builds the server and the harness first.
#
#   bench/cluster.sh [--store postgres|sqlite] [switchboard-bench options…]
#   bench/cluster.sh --writes [switchboard-bench options…]
#
# --store sqlite: the nodes share one SQLite file instead of PostgreSQL (Redis is still used).
# Everything after is passed to `switchboard-bench cluster` (-r, --seconds, --per-node, …).
# On PostgreSQL it then runs setInventory's write transaction alone with pgbench: the store's ceiling.
#
# --writes (issue 17): on PostgreSQL, pgbench runs setInventory's write transaction one at a time
# (one client: the store's ceiling for one change at a time), then `switchboard-bench writes` runs
# the mix on one node and on three nodes of that store (--nodes 1,3, a watcher set per node checking
# order), with --ceiling set to pgbench's figure; then pgbench once more, to bracket the noise.
# Pass --baseline-bin PATH to run a previous build side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/services.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

store=postgres
writes=0
if [ "${1:-}" = "--store" ]; then
  store=$2
  shift 2
elif [ "${1:-}" = "--writes" ]; then
  writes=1
  shift
fi
case "$store" in postgres | sqlite) ;; *) echo "--store postgres or sqlite, not $store" >&2; exit 2 ;; esac

cargo build --release --bin switchboard -p switchboard
cargo build --release -p switchboard-bench

dir="$(mktemp -d /tmp/switchboard-bench-cluster.XXXXXX)"
chmod 755 "$dir"
cleanup() {
  stop_redis "$dir/redis"
  [ -d "$dir/pg" ] && stop_postgres "$dir/pg"
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_redis "$dir/redis" "$(free_port)"
store_args=()
if [ "$store" = postgres ]; then
  start_postgres "$dir/pg" "$(free_port)"
  store_args=(--database-url "$PG_URL" --pg-pid "$(head -n 1 "$dir/pg/data/postmaster.pid")")
fi

# setInventory's write transaction alone, as the server before the group commit sent it, in a
# database of its own; prints its tps.
pgbench_alone() {
  local clients=$1 sync=$2 port bin
  port=${PG_URL##*:}
  port=${port%%/*}
  bin=$(pg_bindir)
  if [ ! -f "$dir/writetx.loaded" ]; then
    "$bin/createdb" -h 127.0.0.1 -p "$port" -U switchboard writetx
    "$bin/psql" -q -h 127.0.0.1 -p "$port" -U switchboard -d writetx -f bench/tools/write-tx.sql >/dev/null
    touch "$dir/writetx.loaded"
  fi
  echo "== pgbench: setInventory's write transaction alone, $clients client(s), synchronous_commit=$sync, 10 s" >&2
  local out
  out=$(PGOPTIONS="-c synchronous_commit=$sync" "$bin/pgbench" -n -M prepared -h 127.0.0.1 -p "$port" \
    -U switchboard -c "$clients" -j $((clients < 2 ? clients : 2)) -T 10 -f bench/tools/write-tx.pgbench writetx 2>&1 |
    grep -E "latency average|^tps|failed")
  echo "$out" >&2
  echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}

if [ "$writes" = 1 ]; then
  [ "$store" = postgres ] || { echo "--writes runs on PostgreSQL" >&2; exit 2; }
  before=$(pgbench_alone 1 on)
  "$CARGO_TARGET_DIR/release/switchboard-bench" writes --spawn "$CARGO_TARGET_DIR/release/switchboard" \
    --redis-url "$REDIS_URL" "${store_args[@]}" --nodes 1,3 --watchers 1 --ceiling "$before" "$@"
  after=$(pgbench_alone 1 on)
  echo "pgbench one at a time: $before tps before the runs, $after tps after (--ceiling was the first)"
  exit 0
fi

"$CARGO_TARGET_DIR/release/switchboard-bench" cluster --spawn "$CARGO_TARGET_DIR/release/switchboard" \
  --redis-url "$REDIS_URL" "${store_args[@]}" "$@"

# What bounds the figure on PostgreSQL: setInventory's transaction run by pgbench alone (no
# Switchboard, no Redis), in a database of its own, with as many clients as the scenario had
# publishers (12) and with one, and without waiting for the WAL to reach the disk.
if [ "$store" = postgres ]; then
  for run in "12 on" "1 on" "12 off"; do
    read -r clients sync <<<"$run"
    pgbench_alone "$clients" "$sync" >/dev/null
  done
fi
