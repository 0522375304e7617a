#!/usr/bin/env bash
# Idle connections: one node (19,900), and clusters over a dedicated
# Redis: 5 nodes with 19,900 each (99,500; a node may hold 20,000 open
# files, its Redis links and listener included) and 6 nodes with 16,667
# each (100,000). One load worker per node, each from its own source
# address. The load workers share the two cores with the nodes: a client
# may take longer than the default 5 s to send its Hello, so every
# configuration runs with a handshake timeout of 60 s. Results in $OUT as
# JSON.
set -u
B=${B:-target/release}
OUT=${OUT:-/tmp/cluster_connections}
PORT=${PORT:-6391}
ROUNDS=${ROUNDS:-1}
mkdir -p "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  for cfg in one five six; do
    redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1
    redis-server --port "$PORT" --save "" --appendonly no --daemonize yes --logfile "$OUT/redis.log"
    until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done
    RPID=$(redis-cli -p "$PORT" info server | awk -F: '/process_id/{print $2}' | tr -d '\r')
    case $cfg in
      one) args=(--count 19900 --workers 1) ;;
      five) args=(--count 99500 --workers 5 --nodes 5) ;;
      six) args=(--count 100000 --workers 6 --nodes 6) ;;
    esac
    args+=(--apm-arg=--handshake-timeout-ms --apm-arg=60000)
    if [ "$cfg" != one ]; then
      args+=(--count-cpu-of "$RPID" --apm-arg=--cluster --apm-arg="redis://127.0.0.1:$PORT")
    fi
    "$B/apm-load" connections "${args[@]}" --rounds 1 --quiet --json \
      > "$OUT/$cfg-$r.json" 2> "$OUT/$cfg-$r.err"
    redis-cli -p "$PORT" info memory | grep -E '^used_memory:' > "$OUT/$cfg-$r.redis"
  done
done
redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1
echo finished
