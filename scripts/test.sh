#!/usr/bin/env bash
# The whole test suite: the Rust tests, the real-client end-to-end tests, and a benchmark smoke run.
# Installs what it needs when it is missing (npm packages; Debian's chromium for the browser test).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast
else
  cargo test --no-fail-fast
fi

if [ -x tests/e2e/run.sh ]; then
  step "End-to-end tests with real clients (tests/e2e)"
  tests/e2e/run.sh
fi

if [ -x bench/smoke.sh ]; then
  step "Benchmark smoke run (bench/)"
  bench/smoke.sh
fi
