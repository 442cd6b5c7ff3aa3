#!/usr/bin/env bash
# Runs Autobahn|Testsuite's fuzzingclient (the WebSocket conformance suite) against a WebSocket
# server, prints one line per case and fails when a case failed.
#
#   scripts/autobahn.sh URL [CASES]
#   scripts/autobahn.sh --install        # only install (e.g. a CI step before the server starts)
#
#   URL    ws://HOST:PORT/PATH of a server that echoes every message back, text as text and
#          binary as binary; the suite measures conformance through those echoes.
#   CASES  comma-separated case patterns, default "1.*,2.*,3.*,4.*,5.*,6.*,7.*": framing,
#          pings/pongs, reserved bits, opcodes, fragmentation, UTF-8 handling, closing.
#          (9.* is a performance test and 12.*/13.* need permessage-deflate: not by default.)
#
# Environment:
#   AUTOBAHN_HOME        cache for the interpreter and packages [~/.cache/switchboard-autobahn]
#   AUTOBAHN_REPORT_DIR  where the HTML/JSON report goes [target/autobahn-report in this repo]
#   AUTOBAHN_EXCLUDE     comma-separated case patterns to skip [none]
#   AUTOBAHN_TIMEOUT     seconds the whole run may take before it is stopped [900]
#   AUTOBAHN_WAIT        seconds to wait for the server's port to accept connections [10]
#   AUTOBAHN_VERBOSE=1   stream the suite's own output instead of keeping it in wstest.log
#   AUTOBAHN_PYTHON2     a Python 2.7 interpreter to use instead of the private one below, e.g.
#                        pyenv's 2.7 (scripts/test.sh falls back on it when the private one fails)
#   AUTOBAHN_DEBIAN_MIRROR, AUTOBAHN_DEBIAN_SECURITY_MIRROR
#                        Debian archive URIs; by default the ones this machine's apt already uses
#
# Why it is built like this: Autobahn|Testsuite 0.8.x is Python 2.7 code (it has no Python 3
# port), and Debian 12 no longer ships Python 2.7. So the first run takes Debian 11's python2.7
# packages through apt-get with a private configuration and state under AUTOBAHN_HOME (the
# system's sources, pinning and installed packages are not touched, and nothing is installed
# system-wide), unpacks them there with dpkg-deb, and installs the suite's pinned, hash-checked
# packages from PyPI beside them with pip 20.3.4 (the last pip for 2.7). Later runs reuse all of
# it. Root is needed only when python3 or its pip is missing and has to be installed with apt-get.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/scripts/autobahn"
AUTOBAHN_HOME="${AUTOBAHN_HOME:-$HOME/.cache/switchboard-autobahn}"
REPORT_DIR="${AUTOBAHN_REPORT_DIR:-$ROOT/target/autobahn-report}"
TIMEOUT="${AUTOBAHN_TIMEOUT:-900}"
WAIT="${AUTOBAHN_WAIT:-10}"
AGENT="switchboard"
DEFAULT_CASES="1.*,2.*,3.*,4.*,5.*,6.*,7.*"

PIP_VERSION="20.3.4"
PIP_WHEEL_NAME="pip-$PIP_VERSION-py2.py3-none-any.whl"
PIP_WHEEL_SHA256="217ae5161a0e08c0fb873858806e3478c9775caffce5168b50ec885e358c199d"
# Debian 11's interpreter and the two libraries Debian 12 has only in newer, incompatible sonames.
DEBIAN_SUITE="bullseye"
DEBIAN_PACKAGES=(python2.7-minimal libpython2.7-minimal libpython2.7-stdlib libssl1.1 libffi7)

say() { printf 'autobahn: %s\n' "$*" >&2; }
die() { say "$*"; exit 2; }

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

# --- prerequisites ---------------------------------------------------------------------------

apt_install() {
  [ "$(id -u)" = 0 ] || die "missing $*; install it (apt-get install $*) or run this as root"
  say "installing $* with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# python3 with pip: fetches the pip wheel for 2.7, writes the spec, summarises the report.
ensure_python3() {
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-pip
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
}

# A usable 2.7: the modules the suite and pip need load (they are the ones with shared libraries).
py2_works() {
  "$1" -c 'import sys, ssl, ctypes, zlib, pyexpat, hashlib
sys.exit(sys.version_info[:2] != (2, 7))' >/dev/null 2>&1
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# --- a private Python 2.7 from Debian 11 -------------------------------------------------------

# The Debian archive this machine's apt already reads, so no host is hard-wired here.
debian_mirror() { # LABEL (Debian | Debian-Security)
  # shellcheck disable=SC2016 # $(...) is apt's own field syntax, not the shell's
  apt-get indextargets --format '$(LABEL) $(REPO_URI)' 'Created-By: Packages' 2>/dev/null |
    awk -v l="$1" '$1 == l { print $2; exit }'
}

# apt-get with its own configuration, sources, lists, cache and (empty) dpkg status under
# AUTOBAHN_HOME/apt: it downloads Debian 11 packages without adding a source or a pin to the
# system's apt, and without running the system's apt hooks. APT_CONFIG is read before the
# system's apt.conf.d, which the file then replaces with an empty directory.
private_apt() {
  local d="$AUTOBAHN_HOME/apt"
  local proxy
  proxy="$(apt-config dump Acquire::http::Proxy 2>/dev/null | sed -n 's/^Acquire::http::Proxy "\(.*\)";$/\1/p')"
  {
    echo "Dir::Etc::Main \"$d/empty/apt.conf\"; Dir::Etc::Parts \"$d/empty\";"
    echo "Dir::Etc::SourceList \"$d/sources.list\"; Dir::Etc::SourceParts \"$d/empty\";"
    echo "Dir::Etc::Preferences \"$d/empty/preferences\"; Dir::Etc::PreferencesParts \"$d/empty\";"
    echo "Dir::State \"$d/state\"; Dir::State::status \"$d/status\"; Dir::Cache \"$d/cache\";"
    echo "Acquire::Languages \"none\";"
    # A proxy from the system's apt configuration still applies (nothing else of it does).
    [ -z "$proxy" ] || echo "Acquire::http::Proxy \"$proxy\";"
    # As root apt downloads as the user _apt, who may not write into a private home directory.
    [ "$(id -u)" != 0 ] || echo "APT::Sandbox::User \"root\";"
  } >"$d/apt.conf"
  APT_CONFIG="$d/apt.conf" apt-get -q "$@"
}

install_python27() {
  local prefix="$AUTOBAHN_HOME/python2.7" wrapper="$AUTOBAHN_HOME/bin/python2.7"
  if [ -x "$wrapper" ] && py2_works "$wrapper"; then
    return 0
  fi
  { command -v apt-get && command -v dpkg-deb; } >/dev/null ||
    die "no apt-get/dpkg-deb here to fetch Debian's python2.7; set AUTOBAHN_PYTHON2 to a Python 2.7"
  [ "$(dpkg --print-architecture)" = amd64 ] ||
    die "the pinned wheels are for x86_64 only (this is $(dpkg --print-architecture))"

  local main security keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  main="${AUTOBAHN_DEBIAN_MIRROR:-$(debian_mirror Debian)}"
  if [ -z "$main" ] && [ -z "${AUTOBAHN_DEBIAN_MIRROR:-}" ] && [ "$(id -u)" = 0 ]; then
    apt-get update -qq # the machine's lists were never fetched: they name the mirror
    main="$(debian_mirror Debian)"
  fi
  [ -n "$main" ] || die "cannot tell which Debian archive apt uses; set AUTOBAHN_DEBIAN_MIRROR"
  security="${AUTOBAHN_DEBIAN_SECURITY_MIRROR:-$(debian_mirror Debian-Security)}"
  [ -r "$keyring" ] || die "$keyring is missing (package debian-archive-keyring)"

  say "fetching Debian $DEBIAN_SUITE's python2.7 into $prefix"
  local d="$AUTOBAHN_HOME/apt"
  mkdir -p "$d/empty" "$d/state/lists/partial" "$d/cache/archives/partial" "$d/debs"
  : >"$d/status"
  {
    echo "deb [signed-by=$keyring] ${main%/} $DEBIAN_SUITE main"
    [ -z "$security" ] || echo "deb [signed-by=$keyring] ${security%/} $DEBIAN_SUITE-security main"
  } >"$d/sources.list"
  private_apt update >"$d/update.log" 2>&1 || { cat "$d/update.log" >&2; die "apt-get update (private) failed"; }
  rm -f "$d/debs/"*.deb
  (cd "$d/debs" && private_apt download "${DEBIAN_PACKAGES[@]}") >"$d/download.log" 2>&1 ||
    { cat "$d/download.log" >&2; die "apt-get download failed"; }

  rm -rf "$prefix.new"
  mkdir -p "$prefix.new"
  local deb
  for deb in "$d/debs/"*.deb; do dpkg-deb -x "$deb" "$prefix.new"; done
  rm -rf "$prefix"
  mv "$prefix.new" "$prefix"
  rm -rf "$d/state" "$d/cache" "$d/debs" # 30 MB not needed once unpacked

  # The interpreter finds its standard library next to itself; the wrapper adds the two old
  # shared libraries (libssl1.1, libffi7) for it alone.
  mkdir -p "$(dirname "$wrapper")"
  cat >"$wrapper" <<EOF
#!/bin/sh
# Debian $DEBIAN_SUITE's python2.7, unpacked by scripts/autobahn.sh.
LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$prefix/usr/bin/python2.7" "\$@"
EOF
  chmod +x "$wrapper"
  if ! py2_works "$wrapper"; then
    "$wrapper" -c 'import ssl, ctypes, zlib, pyexpat, hashlib' >&2 || true
    die "the unpacked python2.7 does not load its modules (a shared library missing?)"
  fi
}

# --- the suite and its packages ----------------------------------------------------------------

install_suite() { # PY2
  local py2="$1" abi site stamp want
  abi="$("$py2" -c 'import sys; print("cp27mu" if sys.maxunicode > 0xffff else "cp27m")')"
  site="$AUTOBAHN_HOME/site-$abi"
  stamp="$site/.installed"
  want="$(cat "$HERE/requirements-py27-build.txt" "$HERE/requirements-py27.txt" | sha256sum | cut -d' ' -f1) $py2"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    SITE="$site"
    return 0
  fi

  ensure_python3
  local wheel="$AUTOBAHN_HOME/$PIP_WHEEL_NAME"
  if [ ! -f "$wheel" ] || [ "$(sha256_of "$wheel")" != "$PIP_WHEEL_SHA256" ]; then
    say "fetching pip $PIP_VERSION (the last pip for Python 2.7)"
    rm -f "$wheel"
    python3 -m pip download -q --disable-pip-version-check --python-version 27 \
      --only-binary=:all: --no-deps -d "$AUTOBAHN_HOME" "pip==$PIP_VERSION"
    [ "$(sha256_of "$wheel")" = "$PIP_WHEEL_SHA256" ] || die "$wheel: unexpected sha256"
  fi

  say "installing Autobahn|Testsuite and its pinned packages into $site"
  local build="$AUTOBAHN_HOME/build-tools"
  pip27() { # PYTHONPATH ARGS...
    local path=(-u PYTHONPATH)
    [ -z "$1" ] || path=("PYTHONPATH=$1")
    shift
    env -u PYTHONHOME "${path[@]}" PYTHONNOUSERSITE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
      PIP_NO_PYTHON_VERSION_WARNING=1 "$py2" "$wheel/pip" install -q --no-deps --require-hashes "$@"
  }
  rm -rf "$build" "$site.new"
  pip27 "" --target "$build" -r "$HERE/requirements-py27-build.txt"
  # autobahn and txaio are sources: built here with the setuptools and wheel just installed.
  pip27 "$build" --no-build-isolation --target "$site.new" -r "$HERE/requirements-py27.txt"
  rm -rf "$build" "$site"
  mv "$site.new" "$site"
  echo "$want" >"$stamp"
  SITE="$site"
}

install_all() {
  mkdir -p "$AUTOBAHN_HOME"
  AUTOBAHN_HOME="$(cd "$AUTOBAHN_HOME" && pwd)" # the python2.7 wrapper holds absolute paths
  # One install at a time per cache, even with two runs started together.
  exec 9>"$AUTOBAHN_HOME/.lock"
  flock 9
  local t0=$SECONDS
  if [ -n "${AUTOBAHN_PYTHON2:-}" ]; then
    PY2="$AUTOBAHN_PYTHON2"
    py2_works "$PY2" || die "AUTOBAHN_PYTHON2=$PY2 is not a working Python 2.7 (with ssl, ctypes, zlib, pyexpat)"
  else
    install_python27
    PY2="$AUTOBAHN_HOME/bin/python2.7"
  fi
  install_suite "$PY2"
  ensure_python3
  flock -u 9
  [ $((SECONDS - t0)) -lt 2 ] || say "installed in $((SECONDS - t0)) s"
}

# --- the run -----------------------------------------------------------------------------------

# Polls the server's port until it accepts a TCP connection, for at most AUTOBAHN_WAIT seconds.
wait_for_port() { # URL
  python3 - "$1" "$WAIT" <<'EOF'
import socket, sys, time
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
port = u.port or 80
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        socket.create_connection((u.hostname, port), timeout=1).close()
        sys.exit(0)
    except OSError as e:
        if time.monotonic() >= deadline:
            print(f"autobahn: nothing accepts connections at {u.hostname}:{port} ({e})")
            sys.exit(1)
        time.sleep(0.1)
EOF
}

write_spec() { # SPEC_FILE URL CASES EXCLUDE
  python3 - "$@" "$REPORT_DIR" "$AGENT" <<'EOF'
import json, sys
spec, url, cases, exclude, outdir, agent = sys.argv[1:]
patterns = lambda s: [p.strip() for p in s.split(",") if p.strip()]
with open(spec, "w") as f:
    json.dump({
        "outdir": outdir,
        "servers": [{"agent": agent, "url": url}],
        "cases": patterns(cases),
        "exclude-cases": patterns(exclude),
        "exclude-agent-cases": {},
    }, f, indent=2)
EOF
}

main() {
  [ $# -ge 1 ] || usage
  case "$1" in
    -h | --help) usage ;;
    --install) install_all; say "ready: $PY2 with $SITE"; exit 0 ;;
    ws://*) ;;
    *) die "URL must start with ws:// (got $1)" ;;
  esac
  local url="$1" cases="${2:-$DEFAULT_CASES}"
  install_all

  mkdir -p "$REPORT_DIR"
  REPORT_DIR="$(cd "$REPORT_DIR" && pwd)"
  # Only what the suite writes, so a report directory given by mistake loses nothing else.
  rm -f "$REPORT_DIR/index.html" "$REPORT_DIR/index.json" "$REPORT_DIR/${AGENT}_case_"*.html \
    "$REPORT_DIR/${AGENT}_case_"*.json "$REPORT_DIR/wstest.log" "$REPORT_DIR/fuzzingclient.json"
  local spec="$REPORT_DIR/fuzzingclient.json" log="$REPORT_DIR/wstest.log"
  write_spec "$spec" "$url" "$cases" "${AUTOBAHN_EXCLUDE:-}"
  wait_for_port "$url" >&2 || exit 2

  say "running cases $cases against $url (report: $REPORT_DIR)"
  local t0=$SECONDS rc=0
  local wstest=(env -u PYTHONPATH -u PYTHONHOME PYTHONNOUSERSITE=1 timeout -k 10 "$TIMEOUT"
    "$PY2" -W ignore -c '
import site, sys
packages = sys.argv.pop(1)
sys.path.insert(0, packages)
site.addsitedir(packages)  # runs the .pth files that make zope.* importable
from autobahntestsuite.wstest import run
sys.argv[0] = "wstest"
run()' "$SITE" --mode fuzzingclient --spec "$spec")
  if [ "${AUTOBAHN_VERBOSE:-}" = 1 ]; then
    (cd "$REPORT_DIR" && "${wstest[@]}") 2>&1 | tee "$log" || rc=$?
  else
    (cd "$REPORT_DIR" && "${wstest[@]}") >"$log" 2>&1 || rc=$?
  fi
  if [ "$rc" != 0 ]; then
    tail -n 30 "$log" >&2
    [ "$rc" = 124 ] && die "the suite did not finish within AUTOBAHN_TIMEOUT=$TIMEOUT s"
    die "the suite exited with status $rc (log: $log)"
  fi
  say "suite finished in $((SECONDS - t0)) s"

  rc=0
  python3 "$HERE/summarize.py" "$REPORT_DIR/index.json" "$AGENT" "$log" || rc=$?
  say "report: $REPORT_DIR/index.html"
  exit "$rc"
}

main "$@"
