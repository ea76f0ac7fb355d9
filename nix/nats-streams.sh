# virtufin-nats-streams: create or update the NATS JetStream streams defined by the *.json
# files (JetStream StreamConfig, rendered by `virtufin deploy render` into infra/nats/streams)
# in a folder. Dapr's pubsub.jetstream component needs the streams to exist beforehand.
#
# Usage: virtufin-nats-streams [DIR]        DIR defaults to $VIRTUFIN_NATS_STREAMS_DIR
# Environment: NATS_URL (default nats://127.0.0.1:4222); VIRTUFIN_NATS_WAIT_SECONDS (default
# 60) is how long to wait for the server to answer with JetStream enabled.
set -euo pipefail

dir=${1:-${VIRTUFIN_NATS_STREAMS_DIR:-}}
if [ -z "$dir" ] || [ ! -d "$dir" ]; then
  echo "virtufin-nats-streams: no stream folder (got '$dir')" >&2
  exit 2
fi
server=${NATS_URL:-nats://127.0.0.1:4222}
wait_seconds=${VIRTUFIN_NATS_WAIT_SECONDS:-60}

waited=0
until nats --server "$server" account info >/dev/null 2>&1; do
  if [ "$waited" -ge "$wait_seconds" ]; then
    echo "virtufin-nats-streams: no JetStream answer from $server within ${wait_seconds}s" >&2
    exit 1
  fi
  sleep 1
  waited=$((waited + 1))
done

shopt -s nullglob
files=("$dir"/*.json)
if [ "${#files[@]}" -eq 0 ]; then
  echo "virtufin-nats-streams: no *.json stream definitions in $dir" >&2
  exit 2
fi
for file in "${files[@]}"; do
  name=${file##*/}
  name=${name%.json}
  if nats --server "$server" stream info "$name" >/dev/null 2>&1; then
    nats --server "$server" stream edit "$name" --config "$file" --force >/dev/null
    echo "virtufin-nats-streams: updated $name"
  else
    nats --server "$server" stream add "$name" --config "$file" >/dev/null
    echo "virtufin-nats-streams: created $name"
  fi
done
