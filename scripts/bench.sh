#!/usr/bin/env bash
# One benchmark run, every figure a ratio measured in the same run (issue 18): pgbench's
# TPC-B-like load (4 clients) before and after, then the Settle load generator — a client
# process of its own over mutual TLS, the services as their release binaries, the durable
# broker — closed-loop and open-loop at a fixed rate, for the realistic mix and the
# inpatient mix. Prints a table for the README.
#   scripts/bench.sh [seconds per load, default 30] [open-loop rate, default 2000]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds="${1:-30}"
rate="${2:-2000}"
scripts/setup.sh >/dev/null
cargo build --release --quiet -p clearinghouse-tests -p clearinghouse-filing -p clearinghouse-settlement -p clearinghouse-fund-ledger --bin clearinghouse-loadgen \
  --bin clearinghouse-filing --bin clearinghouse-settlement --bin clearinghouse-fund-ledger

pg() { psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
pg -c "SELECT 1 FROM pg_database WHERE datname = 'pgbench'" | grep -q 1 || pg -c "CREATE DATABASE pgbench"
pgbench -h 127.0.0.1 -U postgres -i -s 10 -q pgbench >/dev/null 2>&1
tps() { pgbench -h 127.0.0.1 -U postgres -c 4 -j 2 -T "$seconds" -n pgbench 2>/dev/null | awk '/^tps/ {print int($3)}'; }

# From one load generator report: settled/s, p50, p99, ledger lag p50 and p99, CPU ms/claim.
figures() {
  awk '/^  settled / {gsub(/[()\/s]/, "", $3); rate=$3}
       /latency ms/ {p50=$4; p99=$6}
       /ledger lag/ {lag50=$4; lag99=$7}
       /CPU ms per settled claim/ {cpu=$NF; gsub(/\)/, "", cpu)}
       END {print rate, p50, p99, lag50, lag99, cpu}'
}

before=$(tps)
declare -A out
for mix in realistic inpatient; do
  out[$mix-closed]=$(target/release/clearinghouse-loadgen --mix "$mix" --rate 0 --seconds "$seconds" 2>/dev/null | tee "/tmp/bench-$mix-closed.txt" | figures)
  out[$mix-open]=$(target/release/clearinghouse-loadgen --mix "$mix" --rate "$rate" --seconds "$seconds" 2>/dev/null | tee "/tmp/bench-$mix-open.txt" | figures)
done
after=$(tps)
pgb=$(( (before + after) / 2 ))

echo "pgbench TPC-B-like, 4 clients: $before TPS before, $after after (mean $pgb)"
echo
echo "| mix | closed loop settled/s | ratio to pgbench | closed p99 ms | open loop at $rate/s: p50 ms | p99 ms | ledger lag p50 ms | p99 ms | CPU ms per claim (all processes) |"
echo "|---|---|---|---|---|---|---|---|---|"
for mix in realistic inpatient; do
  read -r crate _ cp99 _ _ _ <<<"${out[$mix-closed]}"
  read -r _ op50 op99 lag50 lag99 cpu <<<"${out[$mix-open]}"
  ratio=$(awk -v a="$crate" -v b="$pgb" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
  echo "| $mix | $crate | $ratio | $cp99 | $op50 | $op99 | $lag50 | $lag99 | $cpu |"
done
echo
echo "CPU per process (open loop): see the 'CPU ms per settled claim' lines in /tmp/bench-*-open.txt"
