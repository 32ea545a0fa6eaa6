#!/usr/bin/env bash
# The benchmark again with a month of data in the tables (issue 18): the realistic mix on
# empty tables (closed loop, then open loop at a fixed rate), then `clearinghouse-seed`
# bulk-loads a month of claims (10 million by default) with their accumulators, ledger
# entries, audit records and bookkeeping, then the same two loads on the full tables.
# pgbench before and after, every figure from the one run. Prints a table for the README.
#   scripts/bench-month.sh [claims, default 10000000] [seconds per load, default 30] [open-loop rate, default 2000]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
claims="${1:-10000000}"
seconds="${2:-30}"
rate="${3:-2000}"
source scripts/bench-lib.sh

before=$(tps)
load() { target/release/clearinghouse-loadgen --mix realistic --seconds "$seconds" "$@" 2>/dev/null; }
empty_closed=$(load --rate 0 | tee /tmp/bench-month-empty-closed.txt | figures)
empty_open=$(load --rate "$rate" | tee /tmp/bench-month-empty-open.txt | figures)
target/release/clearinghouse-seed --claims "$claims" | tee /tmp/bench-month-seed.txt
# The bulk load leaves PostgreSQL work to do (a checkpoint of gigabytes, autovacuum of the
# new partitions); measured at once, the loads paid for it (pgbench after them at 0.68 x).
# Wait for it first, at most 15 minutes, and say how long it took. (Where PostgreSQL runs
# with autovacuum off, as on the CI machines here, no worker runs and this waits only for
# the checkpoint; the seeder's own VACUUM ANALYZE has settled the tables.)
settle_started=$(date +%s)
pg -c CHECKPOINT
for _ in $(seq 1 180); do
  busy=$(pg -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")
  [ "$busy" = 0 ] && break
  sleep 5
done
echo "the database settled after the seeding in $(( $(date +%s) - settle_started )) s (autovacuum workers still busy: $busy)" | tee -a /tmp/bench-month-seed.txt
full_closed=$(load --reuse-database --rate 0 | tee /tmp/bench-month-full-closed.txt | figures)
full_open=$(load --reuse-database --rate "$rate" | tee /tmp/bench-month-full-open.txt | figures)
after=$(tps)
pgb=$(( (before + after) / 2 ))

echo "pgbench TPC-B-like, 4 clients: $before TPS before, $after after (mean $pgb)"
echo
echo "| realistic mix | closed loop settled/s | ratio to pgbench | open loop at $rate/s: p50 ms | p99 ms | ledger lag p99 ms | bytes per stored claim (tables and indexes) |"
echo "|---|---|---|---|---|---|---|"
read -r ec _ _ _ _ _ _ <<<"$empty_closed"
read -r _ ep50 ep99 _ elag _ ebytes <<<"$empty_open"
read -r fc _ _ _ _ _ _ <<<"$full_closed"
read -r _ fp50 fp99 _ flag _ fbytes <<<"$full_open"
stored=$(grep -o 'bytes per stored claim ([0-9]* stored)' /tmp/bench-month-full-open.txt | grep -o '[0-9]*' | head -1)
echo "| empty tables | $ec | $(ratio "$ec" "$pgb") | $ep50 | $ep99 | $elag | $ebytes |"
echo "| $stored claims stored | $fc | $(ratio "$fc" "$pgb") | $fp50 | $fp99 | $flag | $fbytes |"
echo "| full / empty | $(ratio "$fc" "$ec") | | $(ratio "$fp50" "$ep50") | $(ratio "$fp99" "$ep99") | $(ratio "$flag" "$elag") | |"
echo
echo "Bytes by table: /tmp/bench-month-full-open.txt; seeding: /tmp/bench-month-seed.txt"
