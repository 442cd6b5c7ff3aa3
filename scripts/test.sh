#!/usr/bin/env bash
# The whole test suite: the Rust tests (against SQLite, then again against PostgreSQL), the
# WebSocket conformance suite (Autobahn|Testsuite, cases 1-7, against the socket layer), the
# real-client end-to-end tests, and a benchmark smoke run. Installs what it needs when it is
# missing (Debian's postgresql and chromium, the npm packages, a private Python 2.7 for
# Autobahn) and starts a private PostgreSQL server on a free loopback port for the second run,
# stopping it at the end.
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

# A Python 2.7 of one's own for Autobahn|Testsuite, the fallback scripts/autobahn.sh documents
# for when its private one (Debian 11's, unpacked into ~/.cache) cannot be installed: pyenv's
# 2.7, when this machine has one.
pyenv_python27() {
  command -v pyenv >/dev/null 2>&1 || return 1
  local version
  version="$(pyenv versions --bare 2>/dev/null | grep -E '^2\.7(\.[0-9]+)?$' | tail -n 1)"
  [ -n "$version" ] && [ -x "$(pyenv root)/versions/$version/bin/python2.7" ] || return 1
  echo "$(pyenv root)/versions/$version/bin/python2.7"
}

# Builds the echo server on the socket layer both channels run on (examples/autobahn_echo.rs),
# starts it on a port of its choosing, runs Autobahn|Testsuite's cases 1-7 against it, stops it,
# and fails when a case failed or the suite could not run.
autobahn_conformance() {
  local target="${CARGO_TARGET_DIR:-$PWD/target}"
  cargo build --release --example autobahn_echo
  if ! scripts/autobahn.sh --install; then
    local py2
    py2="$(pyenv_python27)" || {
      echo "Autobahn|Testsuite could not be installed, and there is no pyenv 2.7 to fall back on" >&2
      return 1
    }
    echo "==> falling back on $py2 for Autobahn|Testsuite" >&2
    export AUTOBAHN_PYTHON2="$py2"
    scripts/autobahn.sh --install
  fi

  local log
  log="$(mktemp /tmp/switchboard-autobahn-echo.XXXXXX)"
  # Port 0: the server binds a free port itself and says which ("echoing on ws://ADDR/").
  "$target/release/examples/autobahn_echo" 0 2>"$log" &
  local pid=$! url="" deadline=$((SECONDS + 30))
  while [ -z "$url" ]; do
    url="$(sed -n 's|^echoing on \(ws://[^ ]*\)$|\1|p' "$log")"
    if [ -z "$url" ] && { ! kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; }; then
      cat "$log" >&2
      kill "$pid" 2>/dev/null || true
      echo "the Autobahn echo server did not start" >&2
      return 1
    fi
    [ -n "$url" ] || sleep 0.1
  done

  local rc=0
  scripts/autobahn.sh "$url" || rc=$?
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$log"
  return "$rc"
}

step "Rust tests (SQLite store)"
nextest

step "Rust black-box tests again, against PostgreSQL (a private server)"
pg_dir="$(mktemp -d /tmp/switchboard-test-pg.XXXXXX)"
trap 'stop_postgres "$pg_dir"; rm -rf "$pg_dir"' EXIT
start_postgres "$pg_dir" "$(free_port)"
SWITCHBOARD_TEST_POSTGRES="$PG_URL" nextest -E 'kind(test)'

step "WebSocket conformance: Autobahn|Testsuite cases 1-7 against the socket layer (scripts/autobahn.sh)"
autobahn_conformance

if [ -x tests/e2e/run.sh ]; then
  step "End-to-end tests with real clients (tests/e2e)"
  tests/e2e/run.sh
fi

if [ -x bench/smoke.sh ]; then
  step "Benchmark smoke run (bench/)"
  bench/smoke.sh
fi
