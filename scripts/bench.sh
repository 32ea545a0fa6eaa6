#!/usr/bin/env bash
# One benchmark run, every figure a ratio measured in the same run (issue 18): pgbench's
# TPC-B-like load (4 clients) before and after, then the Settle load generator (release
# build, in-process services, the durable broker) closed-loop and open-loop at a fixed rate,
# for the realistic mix and the inpatient mix. Prints a table for the README.
#   scripts/bench.sh [seconds per load, default 30] [open-loop rate, default 2000]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds="${1:-30}"
rate="${2:-2000}"
scripts/setup.sh >/dev/null
cargo build --release --quiet -p clearinghouse-tests --bin clearinghouse-loadgen

pg() { psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
pg -c "SELECT 1 FROM pg_database WHERE datname = 'pgbench'" | grep -q 1 || pg -c "CREATE DATABASE pgbench"
pgbench -h 127.0.0.1 -U postgres -i -s 10 -q pgbench >/dev/null 2>&1
tps() { pgbench -h 127.0.0.1 -U postgres -c 4 -j 2 -T "$seconds" -n pgbench 2>/dev/null | awk '/^tps/ {print int($3)}'; }

before=$(tps)
declare -A out
for mix in realistic inpatient; do
  out[$mix-closed]=$(target/release/clearinghouse-loadgen --mix "$mix" --rate 0 --seconds "$seconds" 2>/dev/null \
    | awk '/^  settled / {gsub(/[()\/s]/, "", $3); rate=$3} /latency ms/ {p99=$6} END {print rate " " p99}')
  out[$mix-open]=$(target/release/clearinghouse-loadgen --mix "$mix" --rate "$rate" --seconds "$seconds" 2>/dev/null \
    | awk '/latency ms/ {print $4 " " $6} /ledger / {for (i = 1; i <= NF; i++) if ($i ~ /s$/ && $i ~ /^\(/) {lag=$i; gsub(/\(/, "", lag)}} END {print lag}' | paste -sd' ')
done
after=$(tps)
pgb=$(( (before + after) / 2 ))

echo "pgbench TPC-B-like, 4 clients: $before TPS before, $after after (mean $pgb)"
echo
echo "| mix | closed loop (settled/s) | ratio to pgbench | p99 ms | open loop at $rate/s p50 ms | p99 ms | ledger caught up after the run |"
echo "|---|---|---|---|---|---|---|"
for mix in realistic inpatient; do
  read -r crate cp99 <<<"${out[$mix-closed]}"
  read -r op50 op99 lag <<<"${out[$mix-open]}"
  ratio=$(awk -v a="$crate" -v b="$pgb" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
  echo "| $mix | $crate | $ratio | $cp99 | $op50 | $op99 | ${lag:-?} |"
done
