#!/usr/bin/env bash
# One Redis vs a 3-master Redis Cluster, two hub nodes each: the same fan-out
# and publish runs, with Redis CPU per server, and per cluster node what it
# carried (its executions, SPUBLISH calls, shard channels, bytes sent). Then
# what a classic PUBLISH would cost a cluster: every node receives it.
#
#   cargo build --release -p exechub -p exechub-bench && bench/cluster.sh
#
# Uses ports 6399, 7101-7103 (+ bus 17101-17103) and 8101-8102 on 127.0.0.1.
# Persistence is off and the cluster has no replicas, so both sides measure
# the same work. FANOUT and PUBLISH override the runs' flags.
set -euo pipefail
cd "$(dirname "$0")/.."
B=./target/release/exechub-bench
H=./target/release/exechub
FANOUT=${FANOUT:---subscribers 1000 --executions 30 --rate 300 --duration 10 --payload 100}
# One subscriber per execution: what receiving one pub/sub message costs a node.
SPREAD=${SPREAD:---subscribers 3000 --executions 3000 --rate 3000 --duration 10 --payload 100}
# …and one on each node: what a second subscribed node costs Redis.
SPREAD2=${SPREAD2:---subscribers 6000 --executions 3000 --rate 3000 --duration 10 --payload 100}
PUBLISH=${PUBLISH:---requests 20000 --connections 32 --executions 99}
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 20000

redis() { # port [args…]: a redis-server without persistence, in the background
  local port=$1; shift
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    --dbfilename "dump-$port.rdb" "$@" >"$work/redis-$port.log" 2>&1 &
  pids+=($!)
  until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
}

hubs() { # store flags…: two hub nodes on 8101 and 8102; sets HUB1 HUB2
  "$H" --listen 127.0.0.1:8101 "$@" >"$work/hub1.log" 2>&1 & HUB1=$!
  "$H" --listen 127.0.0.1:8102 "$@" >"$work/hub2.log" 2>&1 & HUB2=$!
  pids+=("$HUB1" "$HUB2")
  for port in 8101 8102; do
    until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.05; done
  done
}

stop_hubs() {
  kill "$HUB1" "$HUB2"
  wait "$HUB1" "$HUB2" 2>/dev/null || true
}

runs() { # redis pids (comma-separated)
  echo "--- fanout: subscribers on node 1, publishers on node 2 ($FANOUT)"
  # shellcheck disable=SC2086
  $B fanout --url http://127.0.0.1:8101 --publish-url http://127.0.0.1:8102 \
    --hub-pid "$HUB1,$HUB2" --redis-pid "$1" $FANOUT
  echo "--- fanout, one subscriber per execution ($SPREAD)"
  # shellcheck disable=SC2086
  $B fanout --url http://127.0.0.1:8101 --publish-url http://127.0.0.1:8102 \
    --hub-pid "$HUB1,$HUB2" --redis-pid "$1" $SPREAD
  echo "--- fanout, one subscriber per execution on each node, publishers on node 2 ($SPREAD2)"
  # shellcheck disable=SC2086
  $B fanout --url http://127.0.0.1:8101 --subscribe-url http://127.0.0.1:8102 \
    --publish-url http://127.0.0.1:8102 --hub-pid "$HUB1,$HUB2" --redis-pid "$1" $SPREAD2
  echo "--- publish: through node 2 ($PUBLISH)"
  # shellcheck disable=SC2086
  $B publish --url http://127.0.0.1:8102 --hub-pid "$HUB2" --redis-pid "$1" $PUBLISH
}

stat() { # port section field
  redis-cli -p "$1" info "$2" | tr -d '\r' | awk -F'[:=,]' -v f="$3" '$1 == f { print $2 == "calls" ? $3 : $2 }'
}

echo "=== one Redis"
redis 6399
single=${pids[-1]}
hubs --redis-url redis://127.0.0.1:6399
runs "$single"
stop_hubs

echo "=== Redis Cluster, 3 masters"
nodes=(7101 7102 7103)
for port in "${nodes[@]}"; do
  redis "$port" --cluster-enabled yes --cluster-config-file "$work/nodes-$port.conf"
done
cluster_pids=$(IFS=,; echo "${pids[*]: -3}")
redis-cli --cluster create "${nodes[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >/dev/null
for port in "${nodes[@]}"; do
  until redis-cli -p "$port" cluster info | grep -q cluster_state:ok; do sleep 0.05; done
done
hubs --redis-cluster "$(printf 'redis://127.0.0.1:%s,' "${nodes[@]}" | sed 's/,$//')"
declare -A spub bytes
for port in "${nodes[@]}"; do
  spub[$port]=$(stat "$port" commandstats cmdstat_spublish); spub[$port]=${spub[$port]:-0}
  bytes[$port]=$(stat "$port" stats total_net_output_bytes)
done
runs "$cluster_pids"
echo "--- per cluster node (pid order: $cluster_pids)"
for port in "${nodes[@]}"; do
  executions=$(redis-cli -p "$port" --scan --pattern 'execution:bench-*:events' | wc -l)
  calls=$(stat "$port" commandstats cmdstat_spublish)
  sent=$(stat "$port" stats total_net_output_bytes)
  echo "node $port: $executions executions, $((${calls:-0} - ${spub[$port]})) SPUBLISH, $(stat "$port" stats pubsubshard_channels) shard channels now, $(((sent - ${bytes[$port]}) / 1024)) KiB sent"
done
stop_hubs

echo "--- classic PUBLISH on the cluster: 10,000 messages to node 7101, no subscribers"
for port in "${nodes[@]}"; do
  before[$port]=$(redis-cli -p "$port" cluster info | tr -d '\r' | awk -F: '$1 == "cluster_stats_messages_publish_received" { print $2 }')
done
for i in $(seq 10000); do echo "PUBLISH classic $i"; done | redis-cli -p 7101 >/dev/null
for port in "${nodes[@]}"; do
  after=$(redis-cli -p "$port" cluster info | tr -d '\r' | awk -F: '$1 == "cluster_stats_messages_publish_received" { print $2 }')
  echo "node $port: $((${after:-0} - ${before[$port]:-0})) publish messages received over the cluster bus"
done
