#!/usr/bin/env bash
# Sets up everything the clearinghouse needs on a Debian machine that has only the Rust
# toolchain: build dependencies, PostgreSQL (installed and started if missing) and a Kafka
# broker (nisshi, durable on PostgreSQL, started on 127.0.0.1:9092 unless
# KAFKA_BOOTSTRAP_SERVERS names one).
# Safe to run again: each step checks first and does only what is missing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/clearinghouse"
state="$here/.local"
mkdir -p "$cache" "$state"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1; fi
}

apt_updated=""
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- build dependencies (librdkafka is built from source by rdkafka-sys; protoc is vendored)
apt_install ca-certificates curl gcc g++ make pkg-config libssl-dev zlib1g-dev python3 python3-pip unzip
# Prometheus (and promtool) check the dashboards and alert rules of deploy/ in the tests.
apt_install prometheus
# docker-compose validates deploy/compose.yaml in the tests (no Docker engine is needed).
if ! docker compose version >/dev/null 2>&1; then apt_install docker-compose; fi

# --- PostgreSQL
if ! command -v pg_ctlcluster >/dev/null; then
  apt_install postgresql
  fresh_postgres=1
fi
version=$(ls /etc/postgresql | sort -V | tail -n1)
if [ "${fresh_postgres:-}" = 1 ]; then
  # A development server on loopback only: trust local connections, as on our CI machines.
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  as_root sed -ri 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/; s/^(local\s+all\s+all\s+)\S+/\1trust/' "$hba"
fi
if ! pg_lsclusters -h | awk '$4 == "online"' | grep -q .; then
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi
[ "${fresh_postgres:-}" = 1 ] && as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 && break
  sleep 1
done
pg_isready -q -h 127.0.0.1 -p 5432 || { log "PostgreSQL does not answer on 127.0.0.1:5432"; exit 1; }

# --- Kafka
# The durable local broker: nisshi 0.8.1 (Tansu renamed), a Kafka-protocol broker in Rust,
# keeping its data in a PostgreSQL database of its own (`nisshi`), so that a broker restart
# loses nothing it acknowledged. Built once with cargo (about 20 CPU-minutes) and cached per
# user; started on 127.0.0.1:9092. KAFKA_BOOTSTRAP_SERVERS selects an existing cluster.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
nisshi_root="$cache/nisshi-0.8.1"
nisshi="$nisshi_root/bin/nisshi"
broker_db="${CLEARINGHOUSE_BROKER_DATABASE:-nisshi}"
broker_pid="$cache/broker.pid"
if [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  log "using the Kafka cluster at $KAFKA_BOOTSTRAP_SERVERS (no broker started)"
else
  if [ ! -x "$nisshi" ]; then
    log "building the nisshi broker 0.8.1 (once; about 20 CPU-minutes)"
    cargo install nisshi --version 0.8.1 --locked --ignore-rust-version --no-default-features \
      --features postgres --root "$nisshi_root" >"$state/nisshi-build.log" 2>&1 \
      || { log "building nisshi failed; see .local/nisshi-build.log"; exit 1; }
  fi
  # A broker this set-up started before that is not the durable one (the memory Tansu of
  # earlier versions) is stopped, by its recorded pid.
  for old in "$state/tansu.pid" "$cache/tansu.pid"; do
    if [ -f "$old" ]; then
      pid=$(cat "$old")
      if kill -0 "$pid" 2>/dev/null && grep -q tansu "/proc/$pid/cmdline" 2>/dev/null; then
        log "stopping the memory broker started earlier (pid $pid)"
        kill "$pid" || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      fi
      rm -f "$old"
    fi
  done
  if port_open 127.0.0.1 9092; then
    log "a Kafka broker already answers on 127.0.0.1:9092"
  else
    psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$broker_db'" | grep -q 1 \
      || psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE \"$broker_db\""
    log "starting nisshi on 127.0.0.1:9092 (storage: PostgreSQL database $broker_db; log in .local/nisshi.log)"
    setsid nohup "$nisshi" broker \
      --storage-engine "postgres://postgres@127.0.0.1:5432/$broker_db?sslmode=disable" \
      --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
      --group-initial-rebalance-delay 0s </dev/null >"$state/nisshi.log" 2>&1 &
    echo $! >"$broker_pid"
    for _ in $(seq 1 100); do port_open 127.0.0.1 9092 && break; sleep 0.2; done
    port_open 127.0.0.1 9092 || { log "nisshi did not start; see .local/nisshi.log"; exit 1; }
  fi
fi
log "ready: PostgreSQL on 127.0.0.1:5432, Kafka on ${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}"

# --- Rust components the checks use
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
fi

# --- A development CA and certificates for mutual TLS (private keys stay out of git).
# Tests make their own; this set is for the demo, local runs and grpcurl.
if [ ! -f "$here/.dev-pki/ca.pem" ]; then
  log "creating a development CA and certificates in .dev-pki/ (services, national, operator, 31 provinces)"
  (cd "$here" && cargo run --quiet --bin clearinghouse -- dev-certs .dev-pki)
fi
