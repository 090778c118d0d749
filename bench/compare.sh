#!/usr/bin/env bash
# Compares hub builds on one exechub-bench scenario, interleaved: in each of
# RUNS rounds every binary gets a fresh redis-server and a fresh hub, then the
# scenario. The report is the median (and range) of each figure per binary.
# Single runs on a shared 2-core VM vary by ±30%; interleaved rounds and
# medians are what make two builds comparable.
#
#   bench/compare.sh RUNS HUB_BINARY [HUB_BINARY…] -- <exechub-bench arguments>
#   bench/compare.sh 5 /tmp/exechub-old target/release/exechub -- publish --requests 150000 --connections 32 --executions 100
#   bench/compare.sh 4 /tmp/exechub-old target/release/exechub -- fanout
#
# Needs redis-server, redis-cli, curl, awk and a release build of
# exechub-bench (cargo build --release -p exechub-bench). Uses ports 6399
# (Redis) and 8099 (hub).
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 3 ] || usage
runs=$1
shift
hubs=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  hubs+=("$1")
  shift
done
[ "${1:-}" = "--" ] || usage
shift
bench_args=("$@")
root=$(cd "$(dirname "$0")/.." && pwd)
bench=${EXECHUB_BENCH:-$root/target/release/exechub-bench}
[ -x "$bench" ] || { echo "no $bench: cargo build --release -p exechub-bench" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

wait_for() { # command…: retried for up to 10 s
  for _ in $(seq 200); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "not ready: $*" >&2
  return 1
}

one_run() { # index binary
  redis-server --port 6399 --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
  local redis=$!
  wait_for redis-cli -p 6399 ping
  "$2" --listen 127.0.0.1:8099 --redis-url redis://127.0.0.1:6399 --publish-rate 0 \
    >"$out/hub.log" 2>&1 &
  local hub=$!
  wait_for curl -sf http://127.0.0.1:8099/health
  if ! "$bench" "${bench_args[@]}" --hub-pid "$hub" --redis-pid "$redis" 2>&1 \
    | grep '^{' >>"$out/$1.json"; then
    echo "run failed: $2" >&2
  fi
  kill "$hub" "$redis"
  wait "$hub" "$redis" 2>/dev/null || true
}

for round in $(seq "$runs"); do
  for i in "${!hubs[@]}"; do
    echo "round $round/$runs: ${hubs[$i]}" >&2
    one_run "$i" "${hubs[$i]}"
  done
done

# One number per line for `field` of every run in file $1 (the latency's
# percentiles are read from its own object, not the publish round trip's).
values() {
  case $2 in
    p50_ms | p99_ms)
      grep -o '"latency":{[^}]*}' "$1" | grep -o "\"$2\":[0-9.e+-]*" | cut -d: -f2 ;;
    *) grep -o "\"$2\":[0-9.e+-]*" "$1" | cut -d: -f2 ;;
  esac
}

summary() { # file field → "median (min–max)"
  values "$1" "$2" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "-"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%g (%g–%g)\n", m, v[1], v[NR] }'
}

case ${bench_args[0]:-} in
  fanout) fields="hub_us_per_delivery redis_us_per_delivery deliveries_per_cpu_s p50_ms p99_ms bytes_per_connection_subscribed lost duplicated out_of_order" ;;
  *) fields="hub_us_per_event redis_us_per_event events_per_cpu_s p50_ms p99_ms" ;;
esac
for i in "${!hubs[@]}"; do
  echo "${hubs[$i]} ($(wc -l <"$out/$i.json") runs)"
  for field in $fields; do
    printf '  %-34s %s\n' "$field" "$(summary "$out/$i.json" "$field")"
  done
done
