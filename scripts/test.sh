#!/usr/bin/env bash
# Runs the whole exechub test suite: unit tests, then end-to-end tests that
# start the real hub binary (and the servers they need) on free loopback ports.
# Installs what is missing first, or says exactly what to install.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure.sh

ensure_rust
# The Redis tests start their own redis-server processes on free ports.
ensure_apt redis-server
# The provider tests start their own nats-server processes on free ports.
ensure_apt nats-server
# Build once up front so the end-to-end tests find the hub binary ready.
cargo build --locked -p exechub --bin exechub
cargo test --locked --workspace "$@"
