#!/usr/bin/env bash
# End-to-end tests with the clients Switchboard's users run (Apollo Client, urql,
# subscriptions-transport-ws, graphql-ws, GraphiQL in headless Chromium).
#
# Installs what it needs when missing, idempotently: Debian's chromium, the pinned npm packages
# (npm ci), the release binary. Then runs `node --test`.
#
#   tests/e2e/run.sh                 # everything
#   tests/e2e/run.sh test/urql.test.js  # one file (paths relative to tests/e2e)
#
# Outside this script, run a file as it does: NODE_OPTIONS=--preserve-symlinks node --test FILE.
#
# Environment: SWITCHBOARD_BIN (default <repo>/target/release/switchboard, built if missing or
# older than the sources; set it to skip the build), CARGO_TARGET_DIR (honoured),
# E2E_CONCURRENCY (test files run at once; default 2), CHROMIUM_PATH (default /usr/bin/chromium).
set -euo pipefail

E2E_DIR="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$E2E_DIR/../.." && pwd)"
cd "$E2E_DIR"

step() { printf '==> %s\n' "$*"; }

# Node 20 or newer, with npm.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "error: node and npm (Node >= 20) are needed for the e2e tests" >&2
  exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "error: Node >= 20 is needed for the e2e tests (found $(node --version))" >&2
  exit 1
fi

# Chromium for the GraphiQL test: Debian's package, never a browser download.
export CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM_PATH" ]; then
  step "installing Debian's chromium"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

# Switchboard's JavaScript client (clients/js): its own pinned dev dependencies (TypeScript and
# the packages its types name), then its check: the types hold, and dist/ (which the binary serves
# to the console and the rooms demo) is what src/ compiles to. The tests below use it as
# installed here (a link to clients/js) and as `npm pack` makes it (test/pack.test.mjs).
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
CLIENT_DIR="$REPO/clients/js"
if [ ! -f "$CLIENT_DIR/node_modules/.package-lock.json" ] || ! cmp -s "$CLIENT_DIR/package-lock.json" "$CLIENT_DIR/node_modules/.client-lock-installed"; then
  step "npm ci (clients/js)"
  (cd "$CLIENT_DIR" && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.client-lock-installed)
fi
step "clients/js: npm run check (tsc --strict; dist/ is what src/ compiles to)"
(cd "$CLIENT_DIR" && npm run --silent check)

# The pinned npm packages; skipped when node_modules already matches the lockfile.
if [ ! -f node_modules/.package-lock.json ] || ! cmp -s package-lock.json node_modules/.e2e-lock-installed; then
  step "npm ci (tests/e2e)"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.e2e-lock-installed
fi

# The release binary: built unless SWITCHBOARD_BIN names one, or it is newer than the sources.
if [ -z "${SWITCHBOARD_BIN:-}" ]; then
  target_dir="${CARGO_TARGET_DIR:-$REPO/target}"
  case "$target_dir" in /*) ;; *) target_dir="$REPO/$target_dir" ;; esac
  export SWITCHBOARD_BIN="$target_dir/release/switchboard"
  stale="$(find "$REPO/src" "$REPO/migrations" "$REPO/assets" "$REPO/clients/js/dist" "$REPO/Cargo.toml" "$REPO/Cargo.lock" \
    -newer "$SWITCHBOARD_BIN" -print -quit 2>/dev/null || echo missing)"
  if [ ! -x "$SWITCHBOARD_BIN" ] || [ -n "$stale" ]; then
    step "cargo build --release"
    (cd "$REPO" && cargo build --release --locked)
  fi
fi
if [ ! -x "$SWITCHBOARD_BIN" ]; then
  echo "error: no server binary at $SWITCHBOARD_BIN" >&2
  exit 1
fi

mkdir -p artifacts
step "node --test ($SWITCHBOARD_BIN)"
if [ "$#" -eq 0 ]; then
  set -- test/*.test.js test/*.test.mjs
fi
# node_modules/@switchboard/client is a link to clients/js: resolve what the library imports
# (graphql-ws, @apollo/client, ...) from here, as for an installed package, not from clients/js's
# own dev copies (two copies of Apollo Client in one app is not what users run).
export NODE_OPTIONS="--preserve-symlinks${NODE_OPTIONS:+ $NODE_OPTIONS}"
# One retry, as for the Rust tests (.config/nextest.toml): the files with a failed test run once
# more, and pass only if every test in them passes then. A retried file is printed as FLAKY: that
# mark is a bug to chase, not to retry away. A test that fails twice fails the run.
run_tests() {
  node --test --test-reporter=tap --test-concurrency="${E2E_CONCURRENCY:-2}" --test-timeout=120000 "$@"
}
first="$(mktemp /tmp/switchboard-e2e.XXXXXX)"
trap 'rm -f "$first"' EXIT
if run_tests "$@" | tee "$first"; [ "${PIPESTATUS[0]}" -eq 0 ]; then
  exit 0
fi
# The file of every top-level test that failed: its `location:` follows its `not ok` line.
mapfile -t failed < <(awk '
  /^not ok / { want = 1; next }
  want && /^  location: / { sub(/^  location: .?/, ""); sub(/:[0-9]+:[0-9]+.?$/, ""); print; want = 0 }
' "$first" | sort -u)
if [ "${#failed[@]}" -eq 0 ]; then
  echo "error: the e2e run failed and no failed test names its file; not retrying" >&2
  exit 1
fi
for file in "${failed[@]}"; do echo "FLAKY? retrying once: $file" >&2; done
run_tests "${failed[@]}"
echo "FLAKY: passed on retry: ${failed[*]} (see the first run's failures above)" >&2
