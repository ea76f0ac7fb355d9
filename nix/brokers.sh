# virtufin-brokers: the local NATS (JetStream), Redis and PostgreSQL servers the live path and
# the tests use, on the same addresses as CI, with their data under one folder.
#
# Usage: virtufin-brokers start|stop|status
# Environment: VIRTUFIN_BROKERS_DIR (default ./.virtufin/brokers), VIRTUFIN_BROKERS (which
# to run, default "nats redis postgres"), VIRTUFIN_NATS_PORT (4222), VIRTUFIN_REDIS_PORT (6379),
# VIRTUFIN_POSTGRES_PORT (5432). `start` then creates the JetStream streams of
# $VIRTUFIN_NATS_STREAMS_DIR with virtufin-nats-streams. A port already answering is left
# alone (the CI servers, or a previous start).
set -euo pipefail

base=${VIRTUFIN_BROKERS_DIR:-$PWD/.virtufin/brokers}
nats_port=${VIRTUFIN_NATS_PORT:-4222}
redis_port=${VIRTUFIN_REDIS_PORT:-6379}
pg_port=${VIRTUFIN_POSTGRES_PORT:-5432}
wanted=" ${VIRTUFIN_BROKERS:-nats redis postgres} "

wants() { [[ "$wanted" == *" $1 "* ]]; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port
  for _ in $(seq 1 100); do
    if port_open "$2"; then
      echo "virtufin-brokers: $1 is up on 127.0.0.1:$2"
      return 0
    fi
    sleep 0.1
  done
  echo "virtufin-brokers: $1 did not come up on 127.0.0.1:$2 (logs in $base)" >&2
  return 1
}

start() {
  mkdir -p "$base/nats" "$base/redis"
  if ! wants nats; then
    :
  elif port_open "$nats_port"; then
    echo "virtufin-brokers: port $nats_port answers already, NATS left as it is"
  else
    nohup nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$base/nats" \
      -P "$base/nats.pid" -l "$base/nats.log" >/dev/null 2>&1 &
    wait_port NATS "$nats_port"
  fi
  if ! wants redis; then
    :
  elif port_open "$redis_port"; then
    echo "virtufin-brokers: port $redis_port answers already, Redis left as it is"
  else
    redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --save "" \
      --appendonly no --dir "$base/redis" --pidfile "$base/redis.pid" \
      --logfile "$base/redis.log"
    wait_port Redis "$redis_port"
  fi
  if ! wants postgres; then
    :
  elif port_open "$pg_port"; then
    echo "virtufin-brokers: port $pg_port answers already, PostgreSQL left as it is"
  else
    if [ ! -f "$base/postgres/PG_VERSION" ]; then
      initdb -D "$base/postgres" -U postgres --auth=trust >"$base/initdb.log" 2>&1
    fi
    pg_ctl -D "$base/postgres" -l "$base/postgres.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $base" start >/dev/null
    wait_port PostgreSQL "$pg_port"
    for db in test root; do
      createdb -h 127.0.0.1 -p "$pg_port" -U postgres "$db" 2>/dev/null || true
    done
  fi
  if wants nats; then
    NATS_URL="nats://127.0.0.1:$nats_port" virtufin-nats-streams
  fi
}

stop() {
  if [ -f "$base/postgres/postmaster.pid" ]; then
    pg_ctl -D "$base/postgres" -m fast -w stop >/dev/null || true
  fi
  for name in redis nats; do
    if [ -f "$base/$name.pid" ]; then
      kill "$(cat "$base/$name.pid")" 2>/dev/null || true
      rm -f "$base/$name.pid"
    fi
  done
  echo "virtufin-brokers: stopped the servers started from $base"
}

status() {
  local code=0 name port
  for entry in "nats:NATS:$nats_port" "redis:Redis:$redis_port" "postgres:PostgreSQL:$pg_port"; do
    wants "${entry%%:*}" || continue
    name=${entry#*:}
    port=${name#*:}
    name=${name%%:*}
    if port_open "$port"; then
      echo "$name up on 127.0.0.1:$port"
    else
      echo "$name down (127.0.0.1:$port)"
      code=1
    fi
  done
  return "$code"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *)
    echo "usage: virtufin-brokers start|stop|status" >&2
    exit 2
    ;;
esac
