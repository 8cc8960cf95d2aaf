#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the tests.
#
#   eval "$(bash .ci/postgres.sh)"          # installs it if needed (root + apt), starts it, exports the URL
#   bash .ci/postgres.sh --no-install        # only use binaries already on the machine
#   bash .ci/postgres.sh --stop DATA_DIR     # stop a server this script started
#
# On success it prints shell lines on stdout:
#   export TUNER_TEST_POSTGRES_URL=postgresql+psycopg://tuner:PASSWORD@127.0.0.1:PORT/postgres
#   export TUNER_TEST_POSTGRES_DIR=DATA_DIR
# and everything else on stderr. PostgreSQL refuses to run as root, so as root the server runs as the
# `postgres` OS user (created by Debian's package) or, failing that, a system user `tuner-pg` made here.
# The server listens on 127.0.0.1 only, on a free port, with its socket in its data dir; durability is
# off (fsync=off): it is a test server, thrown away with its data dir.
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }

if [[ "${1:-}" == "--stop" ]]; then
  data="${2:?--stop needs the data dir}"
  bin="$(cat "$data/.bindir" 2>/dev/null || true)"
  owner="$(stat -c %U "$data")"
  if [[ -n "$bin" && -x "$bin/pg_ctl" ]]; then
    if [[ "$(id -u)" == 0 && "$owner" != root ]]; then
      runuser -u "$owner" -- "$bin/pg_ctl" -D "$data/db" -m immediate -w stop >&2 || true
    else
      "$bin/pg_ctl" -D "$data/db" -m immediate -w stop >&2 || true
    fi
  fi
  rm -rf "$data"
  exit 0
fi

install=1
[[ "${1:-}" == "--no-install" ]] && install=0

find_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
      echo "$d"
      return 0
    fi
  done
  if command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"
    return 0
  fi
  return 1
}

t0=$(date +%s)
bindir="$(find_bindir || true)"
if [[ -z "$bindir" ]]; then
  if [[ $install == 0 ]]; then
    log "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found and --no-install given"
    exit 1
  fi
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    log "no PostgreSQL server binaries found, and cannot apt-get install them (need root and apt-get)"
    exit 1
  fi
  log "installing Debian's postgresql package (apt-get)"
  # the package's own cluster is not used (and may fail to start without an init system: ignored)
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends postgresql >&2 || true
  bindir="$(find_bindir || true)"
  if [[ -z "$bindir" ]]; then
    log "apt-get install postgresql did not give initdb/pg_ctl/postgres"
    exit 1
  fi
fi
log "using $bindir"

data="$(mktemp -d "${TUNER_PG_TMP:-/tmp}/tuner-pg.XXXXXX")"  # not $TMPDIR: the server user must reach it
echo "$bindir" > "$data/.bindir"
runas=()
if [[ "$(id -u)" == 0 ]]; then
  user=postgres
  if ! id -u "$user" >/dev/null 2>&1; then
    user=tuner-pg
    id -u "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
  fi
  chown "$user" "$data"
  chmod 700 "$data"
  runas=(runuser -u "$user" --)
fi

password="tuner-test-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$password" > "$data/.pw"
[[ ${#runas[@]} -gt 0 ]] && chown "${runas[2]}" "$data/.pw"
"${runas[@]}" "$bindir/initdb" -D "$data/db" -U tuner --pwfile="$data/.pw" \
  --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$data/initdb.log" 2>&1 || {
  cat "$data/initdb.log" >&2
  log "initdb failed"
  exit 1
}
rm -f "$data/.pw"

port="$(python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
EOF
)"
opts="-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$data -c fsync=off"
opts="$opts -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
if ! "${runas[@]}" "$bindir/pg_ctl" -D "$data/db" -o "$opts" -l "$data/server.log" -w -t 60 start >&2; then
  cat "$data/server.log" >&2 || true
  log "the server did not start"
  exit 1
fi
t1=$(date +%s)
log "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data $data), ready in $((t1 - t0)) s"
echo "export TUNER_TEST_POSTGRES_URL='postgresql+psycopg://tuner:$password@127.0.0.1:$port/postgres'"
echo "export TUNER_TEST_POSTGRES_DIR='$data'"
