#!/usr/bin/env bash
# Builds Switchboard as it was just before the event log (commit d182529 by default) into
# $CARGO_TARGET_DIR/prelog/switchboard: the "without" side of `switchboard-bench logcost` and
# `logidle`. Uses a git worktree in /tmp and the same target dir (and so the same release
# profile and dependency builds) as this tree, then rebuilds this tree's server, whose
# release/switchboard the other build replaced.   bench/build-prelog.sh [COMMIT]
set -euo pipefail
cd "$(dirname "$0")/.."
COMMIT=${1:-d182529}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
TREE=/tmp/sb-$COMMIT
if [ ! -d "$TREE" ]; then
  git worktree add --detach "$TREE" "$COMMIT"
fi
(cd "$TREE" && cargo build --release --bin switchboard -p switchboard)
mkdir -p "$CARGO_TARGET_DIR/prelog"
cp "$CARGO_TARGET_DIR/release/switchboard" "$CARGO_TARGET_DIR/prelog/switchboard"
cargo build --release --bin switchboard -p switchboard
echo "pre-log server ($COMMIT): $CARGO_TARGET_DIR/prelog/switchboard"
