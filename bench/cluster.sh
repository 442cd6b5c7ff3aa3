#!/usr/bin/env bash
# The `cluster` scenario (issue 10) with a private PostgreSQL and Redis on free loopback ports,
# stopped and deleted at the end however the run ends. Builds the server and the harness first.
#
#   bench/cluster.sh [--store postgres|sqlite] [switchboard-bench options…]
#
# --store sqlite: the nodes share one SQLite file instead of PostgreSQL (Redis is still used).
# Everything after is passed to `switchboard-bench cluster` (-r, --seconds, --per-node, …).
# On PostgreSQL it then runs setInventory's write transaction alone with pgbench: the store's ceiling.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/services.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

store=postgres
if [ "${1:-}" = "--store" ]; then
  store=$2
  shift 2
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
"$CARGO_TARGET_DIR/release/switchboard-bench" cluster --spawn "$CARGO_TARGET_DIR/release/switchboard" \
  --redis-url "$REDIS_URL" "${store_args[@]}" "$@"

# What bounds the figure on PostgreSQL: setInventory's transaction run by pgbench alone (no
# Switchboard, no Redis), in a database of its own, with as many clients as the scenario had
# publishers (12) and with one, and without waiting for the WAL to reach the disk.
if [ "$store" = postgres ]; then
  port=${PG_URL##*:}
  port=${port%%/*}
  bin=$(pg_bindir)
  "$bin/createdb" -h 127.0.0.1 -p "$port" -U switchboard writetx
  "$bin/psql" -q -h 127.0.0.1 -p "$port" -U switchboard -d writetx -f bench/tools/write-tx.sql >/dev/null
  for run in "12 on" "1 on" "12 off"; do
    read -r clients sync <<<"$run"
    echo "== pgbench: setInventory's write transaction alone, $clients client(s), synchronous_commit=$sync, 10 s"
    PGOPTIONS="-c synchronous_commit=$sync" "$bin/pgbench" -n -M prepared -h 127.0.0.1 -p "$port" -U switchboard \
      -c "$clients" -j 2 -T 10 -f bench/tools/write-tx.pgbench writetx 2>&1 | grep -E "latency average|^tps|failed"
  done
fi
