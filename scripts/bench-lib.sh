# Shared by bench.sh and bench-month.sh: set-up, pgbench and reading the load generator's
# report. Sourced, not run.
scripts/setup.sh >/dev/null
cargo build --release --quiet -p clearinghouse-tests -p clearinghouse-filing -p clearinghouse-settlement -p clearinghouse-fund-ledger \
  --bin clearinghouse-loadgen --bin clearinghouse-seed \
  --bin clearinghouse-filing --bin clearinghouse-settlement --bin clearinghouse-fund-ledger

pg() { psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
pg -c "SELECT 1 FROM pg_database WHERE datname = 'pgbench'" | grep -q 1 || pg -c "CREATE DATABASE pgbench"
pgbench -h 127.0.0.1 -U postgres -i -s 10 -q pgbench >/dev/null 2>&1
# pgbench's TPC-B-like load, 4 clients, for $seconds: its TPS.
tps() { pgbench -h 127.0.0.1 -U postgres -c 4 -j 2 -T "$seconds" -n pgbench 2>/dev/null | awk '/^tps/ {print int($3)}'; }

# From one load generator report: settled/s, p50, p99, ledger lag p50 and p99, CPU ms/claim,
# bytes per stored claim.
figures() {
  awk '/^  settled / {gsub(/[()\/s]/, "", $3); rate=$3}
       /latency ms/ {p50=$4; p99=$6}
       /ledger lag/ {lag50=$4; lag99=$7}
       /CPU ms per settled claim/ {cpu=$NF; gsub(/\)/, "", cpu)}
       /bytes per stored claim/ {for (i = 1; i <= NF; i++) if ($i == "(tables") {bytes=$(i+3); gsub(/\)/, "", bytes); gsub(/;/, "", bytes)}}
       END {print rate, p50, p99, lag50, lag99, cpu, bytes}'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
