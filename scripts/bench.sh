#!/usr/bin/env bash
# Run the benchmark (release build): scripts/bench.sh [--quick]
# Prints the table and writes target/bench/report.json. Each case uses its own
# inbox_bench_* database on the PostgreSQL that scripts/db.sh finds or starts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

source scripts/db.sh

# Bench databases are throwaway: without a configured key, each run seals with a fresh one.
if [[ -z "${MASTER_KEY:-}" ]] && ! grep -qs '^MASTER_KEY=' .env; then
  MASTER_KEY="$(head -c32 /dev/urandom | base64)"
  export MASTER_KEY
fi

cargo build --release -p api --bin inboxd --features bench
exec target/release/inboxd bench "$@"
