#!/usr/bin/env bash
# Sets everything up, then runs every check and every test: formatting, clippy with
# -D warnings, the domain's table and property tests, and the end-to-end tests against the
# real PostgreSQL and the real Kafka broker.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
