#!/usr/bin/env bash
# The embedded default: on a fresh Debian machine, installs what it needs, builds, starts a
# throwaway PostgreSQL cluster and a Kafka broker (librdkafka's mock cluster: the real
# protocol on 127.0.0.1, reachable by kcat), runs the relay and a producer, shows events
# flowing (counts, lag), kills the relay halfway to force redeliveries, runs a consumer that
# applies each event exactly once through its inbox, then stops everything cleanly and checks
# that nothing was lost and no effect was applied twice.
# Usage: bash scripts/demo.sh [seconds]      (DEMO_RATE=events/s, default 300)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-15}
rate=${DEMO_RATE:-300}

bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target outbox-relay outbox-mock-kafka outbox-demo-producer outbox-demo-consumer

source scripts/lib/throwaway_pg.sh
work=$(mktemp -d /tmp/outbox-demo.XXXXXX)
chmod 755 "$work"
relay_pid="" broker_pid="" producer_pid="" consumer_pid=""
cleanup() {
  [[ -n "$producer_pid" ]] && kill "$producer_pid" 2>/dev/null || true
  [[ -n "$consumer_pid" ]] && kill "$consumer_pid" 2>/dev/null || true
  [[ -n "$relay_pid" ]] && kill "$relay_pid" 2>/dev/null || true
  [[ -n "$broker_pid" ]] && kill "$broker_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  pg_throwaway_stop "$work/pg"
  rm -rf "$work"
}
trap cleanup EXIT

echo "== starting PostgreSQL"
pg_throwaway_start "$work/pg"
echo "   $PG_URL"

echo "== starting the Kafka broker (mock cluster)"
build/tools/outbox-mock-kafka --brokers 1 --bootstrap-file "$work/bootstrap" >"$work/broker.log" 2>&1 &
broker_pid=$!
for _ in $(seq 1 100); do [[ -s "$work/bootstrap" ]] && break; sleep 0.1; done
[[ -s "$work/bootstrap" ]] || { echo "broker did not start" >&2; cat "$work/broker.log" >&2; exit 1; }
brokers=$(cat "$work/bootstrap")
echo "   bootstrap.servers=$brokers   (try: kcat -b $brokers -L)"

export OUTBOX_RELAY_DATABASE_URL="$PG_URL"
export OUTBOX_RELAY_KAFKA_BROKERS="$brokers"
export OUTBOX_RELAY_LOG_FORMAT=text

echo "== outbox-relay migrate"
build/relay/outbox-relay migrate 2>&1 | sed 's/^/   /'

echo "== outbox-relay run"
build/relay/outbox-relay run >"$work/relay.log" 2>&1 &
relay_pid=$!

echo "== outbox-demo-consumer: balances per order, each event applied once through the inbox"
build/tools/outbox-demo-consumer --database-url "$PG_URL" --brokers "$brokers" >"$work/consumer.log" 2>&1 &
consumer_pid=$!

echo "== producer: $rate transactions/s for ${seconds}s, each a business row + its event"
build/tools/outbox-demo-producer --database-url "$PG_URL" --rate "$rate" --duration "$seconds" --aggregates 50 \
  >"$work/producer.log" 2>&1 &
producer_pid=$!

psql_q() { psql -X -A -t -q "$PG_URL" -c "$1"; }
printf "   %5s %10s %10s %8s %12s\n" "t(s)" "produced" "published" "backlog" "oldest(ms)"
t=0
while kill -0 "$producer_pid" 2>/dev/null || [[ $(psql_q "SELECT count(*) FROM outbox_events WHERE published_at IS NULL") != 0 ]]; do
  sleep 1
  t=$((t + 1))
  row=$(psql_q "SELECT count(*), count(published_at), count(*) - count(published_at),
                GREATEST(0, COALESCE((extract(epoch FROM now() - min(created_at) FILTER (WHERE published_at IS NULL)) * 1000)::bigint, 0))
                FROM outbox_events")
  IFS='|' read -r produced published backlog oldest <<<"$row"
  printf "   %5d %10d %10d %8d %12d\n" "$t" "$produced" "$published" "$backlog" "$oldest"
  if ((t == seconds / 2)); then
    # A crash: acknowledged-but-unmarked events are published again after the restart.
    kill -KILL "$relay_pid"; wait "$relay_pid" 2>/dev/null || true
    echo "   -- relay killed with SIGKILL and restarted (at-least-once: expect redeliveries)"
    build/relay/outbox-relay run >>"$work/relay.log" 2>&1 &
    relay_pid=$!
  fi
  if ((t > seconds + 30)); then echo "relay did not catch up" >&2; tail -20 "$work/relay.log" >&2; exit 1; fi
done
wait "$producer_pid"; producer_pid=""

echo "== simulating a relay crash between publishing and marking, for every 10th event"
psql_q "UPDATE outbox_events SET published_at = NULL WHERE seq % 10 = 0" >/dev/null
for _ in $(seq 1 300); do
  [[ $(psql_q "SELECT count(*) FROM outbox_events WHERE published_at IS NULL") == 0 ]] && break
  sleep 0.1
done
echo "   republished: $(psql_q "SELECT count(*) FROM outbox_events WHERE seq % 10 = 0") events went out a second time"

echo "== stopping the relay (SIGTERM)"
kill -TERM "$relay_pid"
relay_rc=0; wait "$relay_pid" || relay_rc=$?; relay_pid=""
echo "   relay exited with $relay_rc"

echo "== waiting for the consumer to apply every event"
for _ in $(seq 1 300); do
  [[ $(psql_q "SELECT count(*) FROM consumer_inbox") == $(psql_q "SELECT count(*) FROM outbox_events") ]] && break
  sleep 0.1
done
kill -TERM "$consumer_pid"
consumer_rc=0; wait "$consumer_pid" || consumer_rc=$?; consumer_pid=""
echo "   consumer: $(tail -1 "$work/consumer.log")"
wrong=$(psql_q "SELECT count(*) FROM demo_orders o FULL JOIN demo_balances b ON b.order_id = o.id
                WHERE b.total IS DISTINCT FROM o.amount OR b.events IS DISTINCT FROM o.version")
echo "   orders whose balance differs from the producer's own ledger: $wrong"

echo "== reading the topic back with kcat"
kcat -b "$brokers" -C -t outbox.event.order -o beginning -e -q -f '%h\n' 2>/dev/null >"$work/consumed" || true
consumed=$(wc -l <"$work/consumed")
distinct=$(grep -o 'id=[0-9a-f-]*' "$work/consumed" | sort -u | wc -l)
produced=$(psql_q "SELECT count(*) FROM outbox_events")
published=$(psql_q "SELECT count(*) FROM outbox_events WHERE published_at IS NOT NULL")
echo "   produced=$produced published=$published consumed=$consumed distinct_event_ids=$distinct"
echo "== relay log (last lines)"
tail -5 "$work/relay.log" | sed 's/^/   /'
echo "   duplicates on the topic: $((consumed - distinct)) (absorbed by the consumer's inbox)"
if [[ $relay_rc -ne 0 || $consumer_rc -ne 0 || $published -ne $produced || $distinct -ne $produced || $wrong -ne 0 ]]; then
  echo "DEMO FAILED: an event was lost or an effect applied twice" >&2
  exit 1
fi
echo "== all $produced events delivered, every effect applied exactly once; stopped cleanly"
