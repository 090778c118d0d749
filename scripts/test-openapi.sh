#!/usr/bin/env bash
# OpenAPI conformance: schemathesis (every check) against a live hub, with
# the document the hub serves at /openapi.json. The hub runs with tokens
# required, a development token and a static directory, so every route has
# something to answer; requests carry a token that allows everything, and
# schemathesis also checks that requests without it are refused.
# Not covered here: GET /ws (switches protocols), GET …/stream (streams
# until closed) and GET …/result (a long poll of up to 60 s): a fuzzer can
# only time out on them; the end-to-end tests cover them. Needs the debug hub built and $SCHEMATHESIS (ensure.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure.sh
[ -n "${SCHEMATHESIS:-}" ] || ensure_schemathesis
hub=./target/debug/exechub
secret=openapi-conformance-secret
static=$(mktemp -d)
log=$(mktemp)
printf '<!doctype html><title>status</title>\n' >"$static/status.html"
"$hub" --listen 127.0.0.1:0 --jwt-secret "$secret" --dev-token --static-dir "$static" \
  --publish-rate 0 >/dev/null 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$static" "$log"' EXIT
url=""
for _ in $(seq 1 200); do
  url=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -n 1 | sed 's/listening on //') || true
  [ -n "$url" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "the hub exited"; }
  sleep 0.1
done
[ -n "$url" ] || die "the hub did not report its address"
token=$("$hub" token --secret "$secret" --scope publish --scope subscribe)
# ASCII strings: execution ids are limited in bytes, which JSON Schema's
# maxLength (characters) cannot say. One worker: hypothesis is not thread-safe
# on every Python. Run from the temporary directory: schemathesis and
# hypothesis leave their caches in the working directory.
cd "$static"
"$SCHEMATHESIS" run "$url/openapi.json" --checks all --max-examples "${OPENAPI_EXAMPLES:-50}" \
  --generation-codec ascii --workers 1 --request-timeout 5 --no-color \
  --exclude-path /ws --exclude-path '/api/v1/executions/{execution_id}/stream' \
  --exclude-path '/api/v1/executions/{execution_id}/result' \
  -H "Authorization: Bearer $token"
