#!/usr/bin/env bash
# Finds (or starts) a PostgreSQL server we are superuser on and exports
#   DATABASE_URL       -> database $DB_NAME (default "inbox"), created if missing
#   TEST_DATABASE_URL  -> same server, database "postgres" (tests create their own DBs)
# Meant to be `source`d by scripts/run.sh and scripts/test.sh; run directly it
# prints DATABASE_URL on stdout. Progress goes to stderr as "db: ...".
#
# Order: (a) a working $DATABASE_URL, (b) a server on 127.0.0.1:5432 that
# trusts user postgres, (c) start the Debian cluster then retry (b),
# (d) a private throw-away cluster in target/pg on port 55432.
#
# Knobs:
#   DB_NAME=inbox        database name for DATABASE_URL in cases b-d
#   DB_FORCE_PRIVATE=1   skip a-c and always use the private cluster (useful to
#                        test path d, or to keep tests off a shared server)
#   DB_PRIVATE_PORT=55432
#
# URLs built here for a server on this machine say sslmode=disable: TLS over
# loopback only costs CPU on both ends. A DATABASE_URL you set is used as given.
set -euo pipefail

_db_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_db_name="${DB_NAME:-inbox}"
_db_pgdir="$_db_root/target/pg"
_db_priv_port="${DB_PRIVATE_PORT:-55432}"
# Fail fast instead of hanging on a blackholed host.
export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-5}"

_db_log() { echo "db: $*" >&2; }
_db_die() { echo "db: ERROR: $*" >&2; exit 1; }

# The name is interpolated into SQL and URLs; keep it boring.
[[ "$_db_name" =~ ^[A-Za-z0-9_]+$ ]] || _db_die "DB_NAME must match [A-Za-z0-9_]+ (got '$_db_name')"

# -X: ignore ~/.psqlrc so output is predictable.
_db_psql() { psql -X -v ON_ERROR_STOP=1 -Atq "$@"; }

# Same server as $1, database "postgres" (keeps user/password/host/port/query).
_db_admin_url() {
  local url="$1" base query=""
  if [[ "$url" == *\?* ]]; then base="${url%%\?*}"; query="?${url#*\?}"; else base="$url"; fi
  local scheme="${base%%://*}" rest="${base#*://}"
  echo "${scheme}://${rest%%/*}/postgres${query}"
}

_db_local5432_ok() {
  pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1 &&
    _db_psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -c 'select 1' >/dev/null 2>&1
}

# Run a command as the postgres system user (initdb/pg_ctl refuse to run as root).
_db_as_pg() {
  if [[ $EUID -ne 0 ]]; then "$@"
  elif command -v runuser >/dev/null; then runuser -u postgres -- "$@"
  else su -s /bin/sh postgres -c "$(printf '%q ' "$@")"
  fi
}

# Directory holding both initdb and pg_ctl (Debian keeps them out of PATH).
_db_find_pgbin() {
  local d
  for d in "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")" \
           $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then echo "$d"; return 0; fi
  done
  return 1
}

_db_private_cluster() {
  local pgbin data="$_db_pgdir/data"
  if ! pgbin="$(_db_find_pgbin)"; then
    [[ $EUID -eq 0 ]] || _db_die "no initdb/pg_ctl found and not root; install PostgreSQL server binaries (e.g. apt-get install postgresql) or set DATABASE_URL"
    _db_log "installing postgresql via apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    pgbin="$(_db_find_pgbin)" || _db_die "postgresql installed but initdb/pg_ctl still not found"
  fi
  command -v psql >/dev/null || PATH="$pgbin:$PATH"

  mkdir -p "$_db_pgdir"
  if [[ $EUID -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --user-group --home-dir "$_db_pgdir" --shell /bin/sh postgres
    chown -R postgres: "$_db_pgdir"
    runuser -u postgres -- test -w "$_db_pgdir" 2>/dev/null ||
      _db_die "user postgres cannot write $_db_pgdir (a parent directory is not traversable?)"
  fi

  # cd: the postgres user may not be able to read the caller's cwd.
  if [[ ! -f "$data/PG_VERSION" ]]; then
    _db_log "initdb private cluster in $data ($pgbin)"
    (cd "$_db_pgdir" && _db_as_pg "$pgbin/initdb" -D "$data" --auth=trust -U postgres \
        --encoding=UTF8 --locale=C >"$_db_pgdir/initdb.log" 2>&1) ||
      _db_die "initdb failed, see $_db_pgdir/initdb.log"
  fi

  if pg_isready -q -h 127.0.0.1 -p "$_db_priv_port" >/dev/null 2>&1; then
    _db_log "private cluster already running on 127.0.0.1:$_db_priv_port"
  else
    _db_log "starting private cluster on 127.0.0.1:$_db_priv_port (log: $_db_pgdir/log)"
    # Socket in target/pg so we never collide with the system's /var/run/postgresql.
    (cd "$_db_pgdir" && _db_as_pg "$pgbin/pg_ctl" -D "$data" -l "$_db_pgdir/log" -w -t 30 \
        -o "-c port=$_db_priv_port -c listen_addresses=127.0.0.1 -c unix_socket_directories='$_db_pgdir'" \
        start >/dev/null) || _db_die "pg_ctl start failed, see $_db_pgdir/log"
  fi
  DATABASE_URL="postgres://postgres@127.0.0.1:$_db_priv_port/$_db_name?sslmode=disable"
}

_db_need_create=1
if [[ "${DB_FORCE_PRIVATE:-0}" == 1 ]]; then
  _db_log "DB_FORCE_PRIVATE=1: using private cluster"
  _db_private_cluster
# (a) caller's URL works: trust it as-is (database already exists).
elif [[ -n "${DATABASE_URL:-}" ]] && _db_psql "$DATABASE_URL" -c 'select 1' >/dev/null 2>&1; then
  _db_log "using existing DATABASE_URL"
  _db_need_create=0
else
  [[ -z "${DATABASE_URL:-}" ]] || _db_log "DATABASE_URL set but not reachable; looking for a server"
  # (b) a local server that trusts postgres on TCP.
  if _db_local5432_ok; then
    _db_log "found PostgreSQL on 127.0.0.1:5432"
    DATABASE_URL="postgres://postgres@127.0.0.1:5432/$_db_name?sslmode=disable"
  else
    # (c) installed-but-stopped Debian cluster (typical in containers: no systemd).
    _db_found=0
    if [[ $EUID -eq 0 ]] && command -v pg_ctlcluster >/dev/null && ls -d /etc/postgresql/*/main >/dev/null 2>&1; then
      for _db_conf in $(ls -d /etc/postgresql/*/main | sort -rV); do
        _db_ver="$(basename "$(dirname "$_db_conf")")"
        _db_log "starting Debian cluster $_db_ver/main"
        pg_ctlcluster --skip-systemctl-redirect "$_db_ver" main start >&2 || true  # fails if already running
      done
      for _ in $(seq 30); do
        if _db_local5432_ok; then _db_found=1; break; fi
        sleep 1
      done
      if [[ $_db_found == 1 ]]; then
        _db_log "Debian cluster up on 127.0.0.1:5432"
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/$_db_name?sslmode=disable"
      else
        _db_log "Debian cluster not usable on 127.0.0.1:5432 as postgres without password; falling back"
      fi
    fi
    # (d) private cluster.
    [[ $_db_found == 1 ]] || _db_private_cluster
  fi
fi
export DATABASE_URL

_db_admin="$(_db_admin_url "$DATABASE_URL")"

# (e) create the database; tolerate a concurrent creator winning the race.
if [[ $_db_need_create == 1 ]]; then
  if [[ -z "$(_db_psql "$_db_admin" -c "select 1 from pg_database where datname='$_db_name'")" ]]; then
    _db_log "creating database $_db_name"
    _db_psql "$_db_admin" -c "CREATE DATABASE \"$_db_name\"" >/dev/null 2>&1 ||
      [[ -n "$(_db_psql "$_db_admin" -c "select 1 from pg_database where datname='$_db_name'")" ]] ||
      _db_die "could not create database $_db_name"
  fi
fi

export TEST_DATABASE_URL="${TEST_DATABASE_URL:-$_db_admin}"
_db_log "DATABASE_URL=$(sed 's#//\([^:/@]*\):[^@]*@#//\1:***@#' <<<"$DATABASE_URL")"  # hide password

# Executed directly (not sourced): print the URL for shell use, e.g. psql "$(scripts/db.sh)".
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  echo "$DATABASE_URL"
fi
