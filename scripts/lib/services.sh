# Private PostgreSQL and Redis servers for tests and the local cluster, on loopback, in a
# directory of their own; sourced by scripts/test.sh and scripts/cluster.sh.
#
#   start_postgres DIR PORT   # sets PG_URL (postgres://switchboard@127.0.0.1:PORT/switchboard)
#   stop_postgres DIR
#   start_redis DIR PORT      # sets REDIS_URL
#   stop_redis DIR
#
# Debian's packages are installed when missing. PostgreSQL refuses to run as root: as root the
# server runs as the `postgres` user the package creates.

_as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

_need_packages() {
  local missing=()
  for pair in "$@"; do
    local bin=${pair%%:*} pkg=${pair##*:}
    if ! compgen -G "$bin" >/dev/null; then missing+=("$pkg"); fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "==> installing ${missing[*]} (Debian packages)" >&2
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

pg_bindir() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

start_postgres() {
  local dir=$1 port=$2
  _need_packages "/usr/lib/postgresql/*/bin/initdb:postgresql"
  local bin
  bin=$(pg_bindir)
  mkdir -p "$dir"
  chmod 755 "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    _as_pg "$bin/initdb" -D "$dir/data" -U switchboard --auth=trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2
      return 1
    }
  fi
  # Loopback only; the socket directory is ours. max_connections leaves room for a test run's pools.
  _as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 ${PG_EXTRA_OPTS:-}" start >/dev/null || {
    cat "$dir/server.log" >&2
    return 1
  }
  _as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U switchboard switchboard 2>/dev/null || true
  PG_URL="postgres://switchboard@127.0.0.1:$port/switchboard"
  export PG_URL
}

stop_postgres() {
  local dir=$1
  [ -f "$dir/data/postmaster.pid" ] || return 0
  _as_pg "$(pg_bindir)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}

start_redis() {
  local dir=$1 port=$2
  _need_packages "/usr/bin/redis-server:redis-server"
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir" >/dev/null
  for _ in $(seq 1 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.05
  done
  REDIS_URL="redis://127.0.0.1:$port"
  export REDIS_URL
}

stop_redis() {
  local dir=$1
  [ -f "$dir/redis.pid" ] && kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
}

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
