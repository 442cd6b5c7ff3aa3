#!/usr/bin/env bash
# The whole test suite: the Rust tests (against SQLite, then again against PostgreSQL), the
# real-client end-to-end tests, and a benchmark smoke run. Installs what it needs when it is
# missing (Debian's postgresql and chromium, the npm packages) and starts a private PostgreSQL
# server on a free loopback port for the second run, stopping it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/services.sh

step() { printf '\n==> %s\n' "$*"; }

nextest() {
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --no-fail-fast "$@"
  else
    cargo test --no-fail-fast
  fi
}

step "Rust tests (SQLite store)"
nextest

step "Rust black-box tests again, against PostgreSQL (a private server)"
pg_dir="$(mktemp -d /tmp/switchboard-test-pg.XXXXXX)"
trap 'stop_postgres "$pg_dir"; rm -rf "$pg_dir"' EXIT
start_postgres "$pg_dir" "$(free_port)"
SWITCHBOARD_TEST_POSTGRES="$PG_URL" nextest -E 'kind(test)'

if [ -x tests/e2e/run.sh ]; then
  step "End-to-end tests with real clients (tests/e2e)"
  tests/e2e/run.sh
fi

if [ -x bench/smoke.sh ]; then
  step "Benchmark smoke run (bench/)"
  bench/smoke.sh
fi
