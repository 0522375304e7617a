#!/usr/bin/env bash
# Alternating rounds: apm single node vs apm as a 1-node cluster over a
# dedicated Redis, each against NATS in the same run.
set -u
B=${B:-target/release}
OUT=${OUT:-/tmp/cluster_bench}
mkdir -p $OUT
redis-cli -p 6390 shutdown nosave >/dev/null 2>&1
redis-server --port 6390 --save "" --appendonly no --daemonize yes --logfile /tmp/redis6390.log
until redis-cli -p 6390 ping >/dev/null 2>&1; do sleep 0.1; done
RPID=$(redis-cli -p 6390 info server | awk -F: '/process_id/{print $2}' | tr -d '\r')
ticks() { awk '{print $14+$15}' /proc/$RPID/stat; }
for scen in fanout pairs; do
  for r in 1 2 3; do
    for cfg in plain cluster; do
      extra=()
      [ $cfg = cluster ] && extra=(--apm-arg=--cluster --apm-arg=redis://127.0.0.1:6390)
      t0=$(ticks)
      $B/apm-load $scen --vs nats --rounds 1 --duration 5s --warmup 2s --quiet --json "${extra[@]}" > $OUT/$scen-$cfg-$r.json 2>$OUT/$scen-$cfg-$r.err
      t1=$(ticks)
      echo "$scen $cfg $r redis_ticks=$((t1-t0))" >> $OUT/ticks.txt
    done
  done
done
redis-cli -p 6390 shutdown nosave >/dev/null 2>&1
echo finished
