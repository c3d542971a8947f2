#!/usr/bin/env bash
# Build and run inboxd locally against a ready database, with a demo account.
# Safe to re-run: keeps an existing .env and the existing demo account.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

source scripts/db.sh

# First run: derive .env from .env.example with a fresh MASTER_KEY.
# Never overwrite an existing .env (it holds the key that wraps stored data keys).
if [[ ! -e .env ]]; then
  key="$(head -c32 /dev/urandom | base64 | tr -d '\n')"
  tmp="$(mktemp .env.XXXXXX)"   # mktemp => mode 0600, the file holds a secret
  if [[ -f .env.example ]]; then
    sed -e "s|^#* *MASTER_KEY=.*|MASTER_KEY=$key|" \
        -e "s|^#* *APP_ENV=.*|APP_ENV=development|" .env.example >"$tmp"
  fi
  grep -q '^MASTER_KEY=' "$tmp" || echo "MASTER_KEY=$key" >>"$tmp"
  grep -q '^APP_ENV=' "$tmp" || echo "APP_ENV=development" >>"$tmp"
  mv "$tmp" .env
  echo "run: created .env with a new MASTER_KEY" >&2
fi

# .env values win, but DATABASE_URL from db.sh survives if .env leaves it unset; it
# is written into .env then, so inboxd's other commands (export, rebuild, digest…)
# find the same database when run by hand later.
set -a
# shellcheck disable=SC1091
source .env
set +a
if ! grep -q '^DATABASE_URL=' .env; then
  echo "DATABASE_URL=$DATABASE_URL" >>.env
  echo "run: wrote DATABASE_URL to .env for inboxd's other commands" >&2
fi

# The same build as scripts/test.sh's (dev profile, dependencies optimized, every
# feature): running the demo first and the tests after, or the other way round, builds
# once. A production deployment builds `cargo build --release -p api --bin inboxd`.
cargo build -p api --bin inboxd --all-features
bin=target/debug/inboxd

"$bin" migrate

# Bootstrap once; the JSON line (with the API token) is printed only at creation.
# Redone when the file is missing (bootstrap with the same e-mail and password then
# makes a second demo account for the same user) or names a user this database
# does not have (a new cluster).
demo=target/demo-account.json
demo_email=demo@example.com
known="$(psql "$DATABASE_URL" -tAc "SELECT 1 FROM user_credentials WHERE email = '$demo_email'" 2>/dev/null || true)"
if [[ ! -s "$demo" || "$known" != 1 ]]; then
  "$bin" bootstrap --account-name "Demo Support" --email "$demo_email" \
    --password demo-password-123 --demo >"$demo.tmp"
  mv "$demo.tmp" "$demo"   # only keep the file if bootstrap succeeded
fi

# bootstrap prints {"account_id": …, "user_id": …, "token": …}
token="$(sed -n 's/.*"token"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$demo" 2>/dev/null | head -n1)"

addr="${LISTEN_ADDR:-127.0.0.1:8080}"
addr="${addr/0.0.0.0/127.0.0.1}"   # a wildcard bind is reached via loopback
cat >&2 <<BANNER

  inboxd  GraphQL: http://$addr/graphql
  demo login:      demo@example.com / demo-password-123
  API token:       ${token:-<see $demo>}

  curl -s http://$addr/graphql -H 'Content-Type: application/json' \\
       -H 'Authorization: Bearer ${token:-TOKEN}' -d '{"query":"{ me { name role } }"}'

  A session instead of the API token (login, then use its token the same way):
  curl -s http://$addr/graphql -H 'Content-Type: application/json' \\
       -d '{"query":"mutation { login(input: {email: \\"demo@example.com\\", password: \\"demo-password-123\\"}) { token } }"}'

BANNER

exec "$bin" serve
