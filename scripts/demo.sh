#!/usr/bin/env bash
# Sets everything up, then runs the clearinghouse (all four services in one process) and
# walks through worked examples 1 and 2 as a provincial platform would.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
cargo build --bin clearinghouse
CLEARINGHOUSE_TELEMETRY__LOG_FILTER="${CLEARINGHOUSE_TELEMETRY__LOG_FILTER:-warn}" \
  exec target/debug/clearinghouse demo
