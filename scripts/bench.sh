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
source scripts/bench-lib.sh

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
  read -r crate _ cp99 _ _ _ _ <<<"${out[$mix-closed]}"
  read -r _ op50 op99 lag50 lag99 cpu _ <<<"${out[$mix-open]}"
  echo "| $mix | $crate | $(ratio "$crate" "$pgb") | $cp99 | $op50 | $op99 | $lag50 | $lag99 | $cpu |"
done
echo
echo "CPU per process (open loop): see the 'CPU ms per settled claim' lines in /tmp/bench-*-open.txt"
