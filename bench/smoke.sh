#!/usr/bin/env bash
# CI smoke run of the benchmark harness: builds the server and the harness, then runs a short
# fan-out (50 subscribers, 100 events/s, 2 s) against a spawned server. Exits non-zero on any
# missing, duplicate or out-of-order delivery, closed subscriber or failed publish.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --bin switchboard -p switchboard
cargo build --release -p switchboard-bench
exec "$CARGO_TARGET_DIR/release/switchboard-bench" smoke --check --spawn "$CARGO_TARGET_DIR/release/switchboard" "$@"
