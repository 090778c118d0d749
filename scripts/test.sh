#!/usr/bin/env bash
# Runs the whole exechub test suite:
#   0. the set-up path itself (scripts/test-setup.sh);
#   1. cargo test --workspace: unit tests, and end-to-end tests that start the
#      real hub binary and real redis-server processes on free loopback ports;
#      then the decoders fuzzed for a bounded time (fuzz/, exechub-fuzz);
#      then the OpenAPI document checked against a live hub (schemathesis);
#   2. the browser client: its TypeScript types under `tsc --strict`, and its
#      wasm-bindgen tests in headless Chromium against a real hub;
#   3. the viewer (web demo) in Chromium (playwright-core), against real hubs and
#      Redis: live list, an execution ending, layout stability, keyboard, phone width;
#   4. the npm package as users get it: the packed tarball installed offline
#      into a fresh project, type-checked (tsc --strict, moduleResolution
#      bundler and node16), imported by name in Chromium, and run by a Node
#      worker that publishes to a real hub while that page watches.
# Installs what is missing first (apt packages as root, cargo and npm tools),
# or says exactly what to install.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure.sh

say "set-up scripts (each ensure step with its tool missing)"
scripts/test-setup.sh

ensure_rust
# The end-to-end tests start their own servers on free ports.
# redis-server (Debian bookworm: 7.0) with redis-tools (redis-cli) for the Redis Cluster tests.
ensure_apt redis-server redis-tools nats-server
ensure_browser
ensure_wasm_tools
ensure_node_tools
ensure_schemathesis

say "cargo test (unit and end-to-end)"
# Build once up front and point the end-to-end tests at it, so they do not
# each run a nested cargo build (whose feature set differs from the workspace's).
cargo build --locked -p exechub --bin exechub
export EXECHUB_BIN="$PWD/target/debug/exechub"
cargo test --locked --workspace "$@"

say "OpenAPI conformance: schemathesis against a live hub"
scripts/test-openapi.sh

say "fuzz the decoders (10 s per target, about a minute)"
# Any crash is saved under fuzz/crashes/ and fails the run.
cargo run --locked --release -p exechub-fuzz -- --seconds 10

scripts/build-web.sh
say "tsc --strict on the generated TypeScript types"
tsc -p wasm-client/typecheck

# Hubs for the wasm-bindgen tests, on free ports; stopped on exit. The second
# one's histories expire a second after their last event (a reset to resume across).
hub_pids=()
hub_logs=()
trap 'for p in "${hub_pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -f "${hub_logs[@]}"' EXIT
# start_hub ARGS...: starts a hub, sets hub_url to its address.
start_hub() {
  local log pid
  log=$(mktemp)
  # The test pages are served by wasm-pack from another origin.
  ./target/debug/exechub --listen 127.0.0.1:0 --cors-origin '*' "$@" 2>"$log" &
  pid=$!
  hub_pids+=("$pid")
  hub_logs+=("$log")
  hub_url=""
  for _ in $(seq 1 200); do
    hub_url=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -n 1 | sed 's/listening on //') || true
    [ -n "$hub_url" ] && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "the hub exited" >&2; exit 1; }
    sleep 0.1
  done
  echo "the hub did not report its address" >&2
  exit 1
}
start_hub --event-ttl 1
short_ttl_url="$hub_url"
start_hub

say "wasm-bindgen tests in headless Chromium against $hub_url (and $short_ttl_url, --event-ttl 1)"
(cd wasm-client && EXECHUB_TEST_URL="$hub_url" EXECHUB_TEST_URL_SHORT_TTL="$short_ttl_url" \
  CHROMEDRIVER=/usr/bin/chromedriver \
  wasm-pack test --headless --chrome --chromedriver /usr/bin/chromedriver --mode no-install)

say "web demo in Chromium"
node --test tests/browser/

say "the packed npm package: TypeScript, a page, and a Node worker"
node --test tests/node/
