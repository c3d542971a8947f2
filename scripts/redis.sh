#!/usr/bin/env bash
# Finds (or starts) a Redis and exports TEST_REDIS_URL, for the tests of what Redis
# serves (rate limits shared by every server process). Meant to be `source`d by
# scripts/test.sh; run directly it prints the URL. Progress goes to stderr as "redis: ...".
#
# Order: (a) a reachable $TEST_REDIS_URL, (b) a server on 127.0.0.1:6379,
# (c) a private redis-server on 127.0.0.1:56379 (installed via apt-get if missing).
set -euo pipefail

_redis_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_redis_dir="$_redis_root/target/redis"
_redis_priv_port="${REDIS_PRIVATE_PORT:-56379}"

_redis_log() { echo "redis: $*" >&2; }
_redis_die() { echo "redis: ERROR: $*" >&2; exit 1; }

# PING over bash's /dev/tcp: no client needed. In a subshell, so the descriptor and
# the silenced stderr stay there.
_redis_ping() {
  local host="$1" port="$2"
  (
    exec 9<>"/dev/tcp/$host/$port" || exit 1
    printf 'PING\r\n' >&9
    IFS= read -r -t 2 reply <&9 || exit 1
    [[ "$reply" == +PONG* ]]
  ) 2>/dev/null
}

_redis_url_ok() {
  local rest="${1#redis://}"
  rest="${rest%%/*}"
  rest="${rest##*@}"
  _redis_ping "${rest%%:*}" "${rest##*:}"
}

if [[ -n "${TEST_REDIS_URL:-}" ]] && _redis_url_ok "$TEST_REDIS_URL"; then
  _redis_log "using TEST_REDIS_URL"
elif _redis_ping 127.0.0.1 6379; then
  TEST_REDIS_URL="redis://127.0.0.1:6379"
  _redis_log "found Redis on 127.0.0.1:6379"
else
  if ! command -v redis-server >/dev/null; then
    [[ $EUID -eq 0 ]] || _redis_die "no Redis reachable and no redis-server; install it (apt-get install redis-server) or set TEST_REDIS_URL"
    _redis_log "installing redis-server via apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  if ! _redis_ping 127.0.0.1 "$_redis_priv_port"; then
    mkdir -p "$_redis_dir"
    _redis_log "starting a private redis-server on 127.0.0.1:$_redis_priv_port (log: $_redis_dir/redis.log)"
    redis-server --port "$_redis_priv_port" --bind 127.0.0.1 --save '' --appendonly no \
      --dir "$_redis_dir" --daemonize yes --logfile "$_redis_dir/redis.log" >/dev/null
    for _ in $(seq 1 50); do _redis_ping 127.0.0.1 "$_redis_priv_port" && break; sleep 0.1; done
    _redis_ping 127.0.0.1 "$_redis_priv_port" || _redis_die "redis-server did not start, see $_redis_dir/redis.log"
  fi
  TEST_REDIS_URL="redis://127.0.0.1:$_redis_priv_port"
fi
export TEST_REDIS_URL

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  echo "$TEST_REDIS_URL"
fi
