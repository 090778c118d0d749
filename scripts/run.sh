#!/usr/bin/env bash
# Builds the browser client and the demo page, then runs the hub on
# http://127.0.0.1:8080 with the embedded store; the demo is served at /.
# Extra arguments go to the hub (see `--help`), e.g. scripts/run.sh --listen 0.0.0.0:8080
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure.sh

ensure_rust
scripts/build-web.sh
exec cargo run --locked --release -p exechub --bin exechub -- "$@"
