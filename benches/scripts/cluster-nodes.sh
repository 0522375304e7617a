#!/usr/bin/env bash
# Alternating rounds of fan-out, pairs and latency (1,000 subscribers at
# 50 msg/s): apm as one node against one NATS, and apm as a 3-node cluster
# over a dedicated Redis (whose CPU counts as apm's) against a 3-node NATS
# cluster that apm-load starts (routed nats-servers), each pair in the
# same apm-load run. Results in $OUT as JSON.
set -u
B=${B:-target/release}
OUT=${OUT:-/tmp/cluster_nodes}
PORT=${PORT:-6391}
ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-fanout pairs latency}
mkdir -p "$OUT"
redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1
redis-server --port "$PORT" --save "" --appendonly no --daemonize yes --logfile "$OUT/redis.log"
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done
RPID=$(redis-cli -p "$PORT" info server | awk -F: '/process_id/{print $2}' | tr -d '\r')
for scen in $SCENARIOS; do
  for r in $(seq 1 "$ROUNDS"); do
    for cfg in single three; do
      extra=()
      if [ "$cfg" = three ]; then
        extra=(--nodes 3 --nats-nodes 3 --count-cpu-of "$RPID"
          --apm-arg=--cluster --apm-arg="redis://127.0.0.1:$PORT")
      fi
      "$B/apm-load" "$scen" --vs nats --rounds 1 --duration 5s --warmup 2s --quiet --json "${extra[@]}" \
        > "$OUT/$scen-$cfg-$r.json" 2> "$OUT/$scen-$cfg-$r.err"
    done
  done
done
redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1
echo finished
