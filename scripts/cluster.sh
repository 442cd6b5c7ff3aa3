#!/usr/bin/env bash
# A local Switchboard cluster on this machine: a private PostgreSQL and Redis, N switchboard nodes
# (the release binary) sharing them, and HAProxy in front. Everything lives in one state directory
# and listens on loopback only.
#
#   scripts/cluster.sh up [--nodes N]       start what is not running (idempotent), wait until
#                                           every node is ready, print the URLs
#   scripts/cluster.sh down [--purge]       stop everything (by PID); --purge also deletes the state
#   scripts/cluster.sh status               what runs, each node's /ready, HAProxy's view; exit 3
#                                           when something is not running
#   scripts/cluster.sh logs [NAME] [-f]     the last lines of every log, or NAME's (-f: follow)
#   scripts/cluster.sh kill NAME            SIGKILL one part (node-2, redis, haproxy): a crash
#   scripts/cluster.sh stop NAME            stop one part cleanly (node-2, redis, haproxy, postgres)
#
# NAME is node-1 … node-N, postgres, redis or haproxy. `up` again restarts whatever was killed or
# stopped, on the same ports, with the same data.
#
# Options and environment:
#   --dir DIR, CLUSTER_DIR            state directory (default: <repo>/target/cluster)
#   --nodes N, CLUSTER_NODES          switchboard nodes (default 3, or as many as last time)
#   --port P, CLUSTER_PORT            the balancer's port (default: a free port, kept in the state)
#   --stats-port P, CLUSTER_STATS_PORT  HAProxy's stats page (default: a free port, kept)
#   CLUSTER_NODE_PORT                 first node's port; node i gets CLUSTER_NODE_PORT + i - 1
#   JWT_SECRET                        the nodes' signing key (default: made once, kept, printed)
#   SWITCHBOARD_BIN                   the binary to run (default: the release build, built with
#                                     `cargo build --release` when missing or older than the sources)
#   Any other switchboard variable (RUST_LOG, WS_HEARTBEAT_INTERVAL, …) set when running `up` is
#   passed to the nodes it starts.
#
# Debian's postgresql, redis-server and haproxy are installed when missing. As root, PostgreSQL
# runs as the `postgres` user; everything else runs as whoever runs this script.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib/services.sh
source "$REPO/scripts/lib/services.sh"

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

command=${1:-}
[ -n "$command" ] || usage 2
shift
DIR=${CLUSTER_DIR:-$REPO/target/cluster}
WANT_NODES=${CLUSTER_NODES:-}
WANT_PORT=${CLUSTER_PORT:-}
WANT_STATS_PORT=${CLUSTER_STATS_PORT:-}
PURGE=0
FOLLOW=0
NAME=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR=$2; shift 2 ;;
    --nodes) WANT_NODES=$2; shift 2 ;;
    --port) WANT_PORT=$2; shift 2 ;;
    --stats-port) WANT_STATS_PORT=$2; shift 2 ;;
    --purge) PURGE=1; shift ;;
    -f | --follow) FOLLOW=1; shift ;;
    -h | --help) usage 0 ;;
    -*) echo "unknown option $1" >&2; usage 2 ;;
    *) NAME=$1; shift ;;
  esac
done
case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac
STATE="$DIR/cluster.env"

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# --- state ------------------------------------------------------------------------------------

# The state file holds the ports, the secret and where PostgreSQL keeps its data, so that `up`
# after `down` (or after a crash) comes back on the same addresses with the same data. It is
# shell (KEY=value lines) and read by the end-to-end tests and the benchmark too.
load_state() {
  NODES="" LB_PORT="" STATS_PORT="" PG_PORT="" REDIS_PORT="" PG_DIR="" JWT="" BIN=""
  declare -gA NODE_PORT=()
  [ -f "$STATE" ] || return 0
  local key value
  while IFS='=' read -r key value; do
    case "$key" in
      NODES) NODES=$value ;;
      BALANCER_PORT) LB_PORT=$value ;;
      STATS_PORT) STATS_PORT=$value ;;
      PG_PORT) PG_PORT=$value ;;
      REDIS_PORT) REDIS_PORT=$value ;;
      PG_DIR) PG_DIR=$value ;;
      JWT_SECRET) JWT=$value ;;
      SWITCHBOARD_BIN) BIN=$value ;;
      NODE_*_PORT) local i=${key#NODE_}; NODE_PORT[${i%_PORT}]=$value ;;
    esac
  done <"$STATE"
}

save_state() {
  local tmp="$STATE.tmp" i
  {
    echo "# scripts/cluster.sh state: ports, secret, data directories (written by 'up')"
    echo "NODES=$NODES"
    echo "BALANCER_PORT=$LB_PORT"
    echo "BALANCER_URL=http://127.0.0.1:$LB_PORT"
    echo "STATS_PORT=$STATS_PORT"
    echo "STATS_URL=http://127.0.0.1:$STATS_PORT/"
    echo "PG_PORT=$PG_PORT"
    echo "PG_DIR=$PG_DIR"
    echo "DATABASE_URL=postgres://switchboard@127.0.0.1:$PG_PORT/switchboard"
    echo "REDIS_PORT=$REDIS_PORT"
    echo "REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
    echo "JWT_SECRET=$JWT"
    echo "SWITCHBOARD_BIN=$BIN"
    for i in $(seq 1 "$NODES"); do
      echo "NODE_${i}_PORT=${NODE_PORT[$i]}"
      echo "NODE_${i}_URL=http://127.0.0.1:${NODE_PORT[$i]}"
    done
  } >"$tmp"
  mv "$tmp" "$STATE"
}

# A free port that none of this cluster's parts uses yet.
TAKEN=" "
new_port() {
  local port
  for _ in $(seq 1 50); do
    port=$(free_port)
    case "$TAKEN" in *" $port "*) continue ;; esac
    TAKEN+="$port "
    echo "$port"
    return
  done
  die "no free port found"
}

# --- processes --------------------------------------------------------------------------------

# The PID in FILE if that process is alive and is what we started (its program name contains
# WHAT): a stale PID file, or a PID reused by another program, never gets a signal from us.
live_pid() {
  local file=$1 what=$2 pid argv0
  [ -f "$file" ] || return 1
  pid=$(head -n 1 "$file" 2>/dev/null | tr -d '[:space:]')
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  argv0=$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n 1)
  case "${argv0##*/}" in *"$what"*) echo "$pid" ;; *) return 1 ;; esac
}

node_pidfile() { echo "$DIR/node-$1.pid"; }
node_pid() { live_pid "$(node_pidfile "$1")" switchboard; }
redis_pid() { live_pid "$DIR/redis/redis.pid" redis-server; }
haproxy_pid() { live_pid "$DIR/haproxy.pid" haproxy; }
pg_pid() { [ -n "$PG_DIR" ] && live_pid "$PG_DIR/data/postmaster.pid" postgres; }

# Sends SIGNAL to PID and waits up to SECONDS for it to go; then SIGKILL.
stop_pid() {
  local pid=$1 signal=$2 seconds=$3
  kill "-$signal" "$pid" 2>/dev/null || return 0
  local deadline=$((SECONDS + seconds))
  while [ -d "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.1
      return 0
    fi
    sleep 0.05
  done
}

# GET URL: prints "STATUS BODY"; STATUS 000 when nothing answers.
http_get() {
  local url=$1
  if command -v curl >/dev/null 2>&1; then
    local body status
    body=$(curl -s -m 2 -w '\n%{http_code}' "$url" 2>/dev/null) || true
    status=${body##*$'\n'}
    body=${body%$'\n'*}
    echo "${status:-000} $body"
  else
    python3 - "$url" <<'EOF'
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except Exception:
    print("000")
EOF
  fi
}

binary() {
  if [ -n "${SWITCHBOARD_BIN:-}" ]; then
    BIN=$SWITCHBOARD_BIN
  else
    local target_dir="${CARGO_TARGET_DIR:-$REPO/target}"
    case "$target_dir" in /*) ;; *) target_dir="$REPO/$target_dir" ;; esac
    BIN="$target_dir/release/switchboard"
    local stale
    stale="$(find "$REPO/src" "$REPO/migrations" "$REPO/assets" "$REPO/Cargo.toml" "$REPO/Cargo.lock" \
      -newer "$BIN" -print -quit 2>/dev/null || echo missing)"
    if [ ! -x "$BIN" ] || [ -n "$stale" ]; then
      say "==> cargo build --release --bin switchboard"
      (cd "$REPO" && cargo build --release --locked --bin switchboard) >&2
    fi
  fi
  [ -x "$BIN" ] || die "no switchboard binary at $BIN"
}

# --- the parts --------------------------------------------------------------------------------

start_pg() {
  if pg_pid >/dev/null; then return 0; fi
  if [ -z "$PG_DIR" ]; then
    PG_DIR="$DIR/postgres"
    mkdir -p "$PG_DIR"
    # As root the server runs as `postgres`, which must be able to reach its directory: a state
    # directory under a private home (/root) is not reachable, so the data goes under /tmp then.
    if [ "$(id -u)" -eq 0 ]; then
      chown postgres "$PG_DIR"
      if ! runuser -u postgres -- test -w "$PG_DIR" 2>/dev/null; then
        rmdir "$PG_DIR"
        PG_DIR=$(mktemp -d /tmp/switchboard-cluster-pg.XXXXXX)
      fi
    fi
    save_state
  fi
  say "==> postgres on 127.0.0.1:$PG_PORT ($PG_DIR)"
  start_postgres "$PG_DIR" "$PG_PORT" 9>&-
}

start_redis_part() {
  if redis_pid >/dev/null; then return 0; fi
  say "==> redis on 127.0.0.1:$REDIS_PORT"
  start_redis "$DIR/redis" "$REDIS_PORT" 9>&-
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || die "redis did not start: see $DIR/redis/redis.log"
}

start_node() {
  local i=$1
  if node_pid "$i" >/dev/null; then return 0; fi
  local port=${NODE_PORT[$i]} log="$DIR/node-$i.log"
  mkdir -p "$DIR/node-$i"
  say "==> node-$i on 127.0.0.1:$port"
  printf '\n==> %s: scripts/cluster.sh starts node-%s\n' "$(date -u +%FT%TZ)" "$i" >>"$log"
  # Its own working directory, so that no `.env` in the caller's directory changes it; the
  # caller's environment passes through (RUST_LOG and any other knob), ours wins. HAProxy, on
  # loopback, is the trusted proxy whose X-Forwarded-For tells clients apart.
  (
    cd "$DIR/node-$i"
    exec 9>&- # the lock stays with this script
    exec nohup env BIND_ADDR="127.0.0.1:$port" \
      DATABASE_URL="postgres://switchboard@127.0.0.1:$PG_PORT/switchboard" \
      REDIS_URL="redis://127.0.0.1:$REDIS_PORT" NODE_ID="node-$i" JWT_SECRET="$JWT" \
      TRUSTED_PROXIES="${TRUSTED_PROXIES:-127.0.0.1}" NO_COLOR=1 "$BIN" >>"$log" 2>&1 </dev/null
  ) &
  echo $! >"$(node_pidfile "$i")"
}

# deploy/haproxy.cfg with this cluster's nodes between its "nodes" markers.
haproxy_config() {
  local servers="" i
  servers+="    default-server check inter 1s fall 2 rise 2"$'\n'
  for i in $(seq 1 "$NODES"); do
    servers+="    server node-$i 127.0.0.1:${NODE_PORT[$i]}"$'\n'
  done
  SERVERS="$servers" awk '
    /# nodes: scripts\/cluster.sh replaces/ { printf "    # nodes: written by scripts/cluster.sh\n%s", ENVIRON["SERVERS"]; skip = 1; next }
    /# end of nodes/ { skip = 0 }
    !skip { print }
  ' "$REPO/deploy/haproxy.cfg"
}

start_haproxy() {
  _need_packages "/usr/sbin/haproxy:haproxy"
  local config="$DIR/haproxy.cfg" pid
  haproxy_config >"$config.new"
  if pid=$(haproxy_pid); then
    if cmp -s "$config.new" "$config"; then
      rm -f "$config.new"
      return 0
    fi
    say "==> haproxy: the node list changed, restarting it"
    stop_pid "$pid" TERM 5
  fi
  mv "$config.new" "$config"
  export SWITCHBOARD_LB_BIND="127.0.0.1:$LB_PORT" SWITCHBOARD_STATS_BIND="127.0.0.1:$STATS_PORT"
  haproxy -q -c -f "$config" || die "haproxy refuses $config"
  say "==> haproxy on 127.0.0.1:$LB_PORT (stats on $STATS_PORT)"
  printf '\n==> %s: scripts/cluster.sh starts haproxy\n' "$(date -u +%FT%TZ)" >>"$DIR/haproxy.log"
  # In the foreground (-db) so that its log (to stdout) lands in haproxy.log.
  (exec nohup haproxy -db -f "$config" >>"$DIR/haproxy.log" 2>&1 </dev/null 9>&-) &
  echo $! >"$DIR/haproxy.pid"
}

# Node i's process is alive, or still on its way through nohup and env to the binary: right after
# start_node its argv0 is not yet switchboard, which node_pid would take for a dead node.
node_alive() {
  local pid
  pid=$(head -n 1 "$(node_pidfile "$1")" 2>/dev/null | tr -d '[:space:]')
  [ -n "$pid" ] && [ -d "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null
}

# Waits until node i answers /ready with 200 and hears Redis; fails early if it died.
wait_node() {
  local i=$1 deadline=$((SECONDS + 60)) answer=""
  while [ $SECONDS -lt $deadline ]; do
    if ! node_alive "$i"; then
      say "node-$i exited; the end of its log ($DIR/node-$i.log):"
      tail -n 20 "$DIR/node-$i.log" >&2
      return 1
    fi
    answer=$(http_get "http://127.0.0.1:${NODE_PORT[$i]}/ready")
    case "$answer" in "200 "*'"redis":"up"'*) return 0 ;; esac
    sleep 0.1
  done
  say "node-$i not ready within 60 s: ${answer:-no answer}"
  return 1
}

# HAProxy's view of its servers: "node-1 UP" lines, from the stats page's CSV.
haproxy_servers() {
  local answer
  answer=$(http_get "http://127.0.0.1:$STATS_PORT/;csv")
  [ "${answer%% *}" = 200 ] || return 1
  printf '%s\n' "${answer#* }" | awk -F, '$1 == "nodes" && $2 ~ /^node-/ { print $2, $18 }'
}

wait_haproxy() {
  local deadline=$((SECONDS + 20)) servers=""
  while [ $SECONDS -lt $deadline ]; do
    servers=$(haproxy_servers || true)
    if [ -n "$servers" ] && [ "$(grep -c ' UP$' <<<"$servers")" -eq "$NODES" ]; then return 0; fi
    sleep 0.2
  done
  say "haproxy does not see every node up: ${servers:-no answer from its stats page}"
  return 1
}

# --- commands ---------------------------------------------------------------------------------

# One command at a time per state directory. Every process this script starts is started with
# the lock's descriptor closed, or it would hold the lock for as long as it runs.
lock() {
  mkdir -p "$DIR"
  exec 9>"$DIR/.lock"
  flock -w 120 9 || die "another scripts/cluster.sh is working on $DIR"
}

cmd_up() {
  lock
  load_state
  NODES=${WANT_NODES:-${NODES:-3}}
  [[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "--nodes wants a positive number, not '$NODES'"
  for port in $LB_PORT $STATS_PORT $PG_PORT $REDIS_PORT "${NODE_PORT[@]}"; do TAKEN+="$port "; done
  if [ -n "$WANT_PORT" ] && [ "$WANT_PORT" != 0 ]; then LB_PORT=$WANT_PORT; fi
  if [ -n "$WANT_STATS_PORT" ] && [ "$WANT_STATS_PORT" != 0 ]; then STATS_PORT=$WANT_STATS_PORT; fi
  LB_PORT=${LB_PORT:-$(new_port)}
  STATS_PORT=${STATS_PORT:-$(new_port)}
  PG_PORT=${PG_PORT:-$(new_port)}
  REDIS_PORT=${REDIS_PORT:-$(new_port)}
  local i
  for i in $(seq 1 "$NODES"); do
    if [ -n "${CLUSTER_NODE_PORT:-}" ]; then
      NODE_PORT[$i]=$((CLUSTER_NODE_PORT + i - 1))
    elif [ -z "${NODE_PORT[$i]:-}" ]; then
      NODE_PORT[$i]=$(new_port)
    fi
  done
  [ -n "$JWT" ] || JWT=${JWT_SECRET:-$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')}
  binary
  save_state

  # Nodes beyond --nodes (a cluster made smaller) stop first.
  local pidfile n pid
  for pidfile in "$DIR"/node-*.pid; do
    [ -e "$pidfile" ] || continue
    n=${pidfile##*/node-}
    n=${n%.pid}
    if [ "$n" -gt "$NODES" ]; then
      if pid=$(node_pid "$n"); then
        say "==> stopping node-$n (beyond --nodes $NODES)"
        stop_pid "$pid" TERM 10
      fi
      rm -f "$pidfile"
    fi
  done

  start_pg
  start_redis_part
  for i in $(seq 1 "$NODES"); do start_node "$i"; done
  for i in $(seq 1 "$NODES"); do wait_node "$i" || die "node-$i did not become ready"; done
  start_haproxy
  wait_haproxy || die "see $DIR/haproxy.log"

  local staff
  staff=$(JWT_SECRET="$JWT" "$BIN" token --sub staff-1 --role staff --name Staff --ttl 86400)
  cat <<EOF
Switchboard cluster up: $NODES nodes, one PostgreSQL, one Redis, HAProxy in front (state in $DIR)
  balancer   http://127.0.0.1:$LB_PORT/graphql   (ws://127.0.0.1:$LB_PORT/graphql, ws://127.0.0.1:$LB_PORT/ws, http://127.0.0.1:$LB_PORT/graphql/stream)
EOF
  for i in $(seq 1 "$NODES"); do
    printf '  node-%-5s http://127.0.0.1:%s   (pid %s, log %s)\n' "$i" "${NODE_PORT[$i]}" "$(node_pid "$i")" "$DIR/node-$i.log"
  done
  cat <<EOF
  stats      http://127.0.0.1:$STATS_PORT/
  postgres   postgres://switchboard@127.0.0.1:$PG_PORT/switchboard
  redis      redis://127.0.0.1:$REDIS_PORT
  JWT_SECRET=$JWT
  staff token (24 h): $staff
EOF
}

cmd_down() {
  lock
  load_state
  local pid pidfile n
  if pid=$(haproxy_pid); then say "==> stopping haproxy"; stop_pid "$pid" TERM 5; fi
  # Every node at once (each says goodbye to the cluster, then closes its sockets).
  local pids=()
  for pidfile in "$DIR"/node-*.pid; do
    [ -e "$pidfile" ] || continue
    n=${pidfile##*/node-}
    n=${n%.pid}
    if pid=$(node_pid "$n"); then
      say "==> stopping node-$n"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for pid in "${pids[@]}"; do stop_pid "$pid" TERM 10; done
  if pid=$(redis_pid); then say "==> stopping redis"; stop_pid "$pid" TERM 5; fi
  if pg_pid >/dev/null; then say "==> stopping postgres"; stop_postgres "$PG_DIR"; fi
  rm -f "$DIR"/node-*.pid "$DIR/haproxy.pid"
  if [ "$PURGE" = 1 ]; then
    say "==> deleting $DIR"
    case "$PG_DIR" in /tmp/switchboard-cluster-pg.*) rm -rf "$PG_DIR" ;; esac
    exec 9>&-
    rm -rf "$DIR"
  fi
}

cmd_status() {
  [ -f "$STATE" ] || { say "no cluster in $DIR"; exit 3; }
  load_state
  local all=0 pid i answer
  row() { printf '  %-9s %-8s %s\n' "$@"; }
  if pid=$(pg_pid); then row postgres "pid $pid" "postgres://switchboard@127.0.0.1:$PG_PORT/switchboard"; else row postgres stopped ""; all=3; fi
  if pid=$(redis_pid); then row redis "pid $pid" "redis://127.0.0.1:$REDIS_PORT"; else row redis stopped ""; all=3; fi
  for i in $(seq 1 "$NODES"); do
    if pid=$(node_pid "$i"); then
      answer=$(http_get "http://127.0.0.1:${NODE_PORT[$i]}/ready")
      row "node-$i" "pid $pid" "http://127.0.0.1:${NODE_PORT[$i]} /ready: $answer"
    else
      row "node-$i" stopped ""
      all=3
    fi
  done
  if pid=$(haproxy_pid); then
    row haproxy "pid $pid" "http://127.0.0.1:$LB_PORT (stats http://127.0.0.1:$STATS_PORT/)"
    haproxy_servers 2>/dev/null | while read -r server state; do row "" "" "  $server: $state"; done
  else
    row haproxy stopped ""
    all=3
  fi
  exit $all
}

log_file() {
  case "$1" in
    node-*) echo "$DIR/$1.log" ;;
    haproxy) echo "$DIR/haproxy.log" ;;
    redis) echo "$DIR/redis/redis.log" ;;
    postgres) echo "$PG_DIR/server.log" ;;
    *) die "no part called '$1' (node-N, postgres, redis, haproxy)" ;;
  esac
}

cmd_logs() {
  load_state
  local files=()
  if [ -n "$NAME" ]; then
    files=("$(log_file "$NAME")")
  else
    local i
    for i in $(seq 1 "${NODES:-0}"); do files+=("$DIR/node-$i.log"); done
    files+=("$DIR/haproxy.log" "$DIR/redis/redis.log")
    [ -n "$PG_DIR" ] && files+=("$PG_DIR/server.log")
  fi
  if [ "$FOLLOW" = 1 ]; then
    exec tail -n 20 -F "${files[@]}"
  fi
  local f
  for f in "${files[@]}"; do
    [ -f "$f" ] || continue
    printf '==> %s <==\n' "$f"
    tail -n 20 "$f"
  done
}

# kill / stop one part.
cmd_signal() {
  [ -n "$NAME" ] || die "which part? node-N, postgres, redis or haproxy"
  lock
  load_state
  local hard=$1 pid
  case "$NAME" in
    node-*) pid=$(node_pid "${NAME#node-}") || { say "$NAME is not running"; return 0; } ;;
    redis) pid=$(redis_pid) || { say "redis is not running"; return 0; } ;;
    haproxy) pid=$(haproxy_pid) || { say "haproxy is not running"; return 0; } ;;
    postgres)
      [ "$hard" = 1 ] && die "kill postgres is not offered (its data would need recovery); use stop"
      pg_pid >/dev/null && stop_postgres "$PG_DIR"
      return 0
      ;;
    *) die "no part called '$NAME' (node-N, postgres, redis, haproxy)" ;;
  esac
  if [ "$hard" = 1 ]; then
    say "==> kill -9 $NAME (pid $pid)"
    stop_pid "$pid" KILL 5
  else
    say "==> stopping $NAME (pid $pid)"
    stop_pid "$pid" TERM 10
  fi
}

case "$command" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  logs) cmd_logs ;;
  kill) cmd_signal 1 ;;
  stop) cmd_signal 0 ;;
  -h | --help | help) usage 0 ;;
  *) say "unknown command '$command'"; usage 2 ;;
esac
