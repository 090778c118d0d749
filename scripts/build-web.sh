#!/usr/bin/env bash
# Builds the client (the npm package in wasm-client/pkg: wasm-pack's web build,
# completed by wasm-client/npm/package.mjs with its Node entry point and
# package.json) and the demo page (web-demo/dist), which the hub serves at /.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure.sh

ensure_rust
ensure_wasm_tools
ensure_node_tools

say "building the exechub-client package (wasm-pack)"
wasm-pack --quiet build wasm-client --mode no-install --target web --profile wasm-release
node wasm-client/npm/package.mjs
say "building the demo (web-demo/dist)"
rm -rf web-demo/dist
mkdir -p web-demo/dist
# Every page, module and stylesheet: plain files, no bundler.
cp web-demo/*.html web-demo/*.js web-demo/*.css web-demo/dist/
cp -r wasm-client/pkg web-demo/dist/pkg
