#!/usr/bin/env bash
# Run the whole workspace test suite against a ready PostgreSQL.
# Extra args go to the test runner, e.g. scripts/test.sh -p tests some_filter
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Exports DATABASE_URL and TEST_DATABASE_URL (tests create their own DBs from it).
source scripts/db.sh
# Exports TEST_REDIS_URL (rate limits shared through Redis are tested against it).
source scripts/redis.sh

# The webhook tests verify signatures with the Standard Webhooks library (PyPI), and
# the web push test checks requests with http_ece and cryptography
# (tests/fakes/web_push_check.py), in a virtualenv of our own under target/ (made once).
VERIFIER="$ROOT/target/pyenv"
if ! "$VERIFIER/bin/python" -c "import standardwebhooks, http_ece, cryptography" 2>/dev/null; then
  python3 -m venv "$VERIFIER" &&
    "$VERIFIER/bin/pip" install --quiet --disable-pip-version-check standardwebhooks http_ece cryptography ||
    echo "test: could not install the Python checkers; the webhook signature and web push tests will fail" >&2
fi
export WEBHOOK_VERIFIER_PYTHON="$VERIFIER/bin/python"

# Tests need a key but must not depend on a developer's .env.
export MASTER_KEY="${MASTER_KEY:-$(head -c32 /dev/urandom | base64 | tr -d '\n')}"
export RUST_BACKTRACE=1

# The house's rules, checked before the tests (their results are reported at the end).
house=0
if ! cargo fmt --all --check >/dev/null; then
  echo "test: cargo fmt --all --check: some files are not formatted (run cargo fmt --all)" >&2
  house=1
fi
if ! cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings; then
  echo "test: cargo clippy --workspace --all-targets --all-features -- -D warnings found warnings" >&2
  house=1
fi

# Integration tests spawn the real binary from target/debug/inboxd; build it first.
# With every feature, so the benchmark's code (off in the product) is tested too.
cargo build -p api --bin inboxd --all-features

# Each test makes its own database (inbox_test_*); drop those of earlier runs, and
# of this one afterwards unless KEEP_TEST_DATABASES=1 (to inspect a failure).
drop_test_databases() {
  psql "$TEST_DATABASE_URL" -v ON_ERROR_STOP=1 -qAt \
    -c "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE);', datname) FROM pg_database WHERE datname LIKE 'inbox\_test\_%'" |
    psql "$TEST_DATABASE_URL" -q >/dev/null || echo "test: could not drop old test databases" >&2
}
drop_test_databases

status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --no-fail-fast "$@" || status=$?
else
  cargo test --workspace --all-features --no-fail-fast "$@" || status=$?
fi
[[ "${KEEP_TEST_DATABASES:-0}" == 1 ]] || drop_test_databases
if [[ "$house" != 0 ]]; then
  echo "test: formatting or lints failed (see above); the schema check is one of the tests" >&2
  [[ "$status" != 0 ]] || status=1
fi
exit "$status"
