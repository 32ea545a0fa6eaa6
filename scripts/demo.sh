#!/usr/bin/env bash
# Sets everything up (including a development CA and certificates in .dev-pki/), then
# runs the clearinghouse (all four services in one process, mutual TLS) and walks through
# the worked examples as the provincial platforms would, each with its own certificate.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
cargo build --bin clearinghouse
CLEARINGHOUSE_TELEMETRY__LOG_FILTER="${CLEARINGHOUSE_TELEMETRY__LOG_FILTER:-warn}" \
  exec target/debug/clearinghouse demo .dev-pki
