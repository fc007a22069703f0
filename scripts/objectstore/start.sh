#!/bin/bash
# Start a local S3-compatible object store (OpenStack Swift + s3api) on 127.0.0.1.
#
#   scripts/objectstore/start.sh BASE_DIR [PORT]     # PORT: S3 port, default 9000, 0 = any free
#
# BASE_DIR holds config, rings, data (srv/) and logs (run/*.log). Starting again on the same
# BASE_DIR keeps the data and the ports (the rings record them), so stop.sh + start.sh is an
# outage that loses nothing. Already running and healthy: prints the exports and exits 0.
# On success prints the environment for boto3 / mosaicml-streaming, e.g.
#   eval "$(scripts/objectstore/start.sh /tmp/s3 9000)"
# and writes the same lines to BASE_DIR/env.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 BASE_DIR [PORT]" >&2
  exit 2
fi
mkdir -p "$1"
BASE=$(cd "$1" && pwd)
REQUESTED_PORT=${2:-9000}
PORTS_FILE=$BASE/etc/ports.env
RUN=$BASE/run
STARTUP_TIMEOUT_S=${OBJECTSTORE_STARTUP_TIMEOUT_S:-60}

for cmd in swift-proxy-server swift-ring-builder memcached curl python3; do
  if ! command -v "$cmd" >/dev/null 2>&1; then
    echo "objectstore: '$cmd' not found; run scripts/objectstore/install.sh first" >&2
    exit 1
  fi
done

free_ports() {  # print N distinct free loopback ports (all bound at once, so no duplicates)
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

print_env() {
  cat <<EOV
export S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export AWS_ACCESS_KEY_ID=test:tester
export AWS_SECRET_ACCESS_KEY=testing
export AWS_DEFAULT_REGION=us-east-1
EOV
}

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

http_ok() { curl -sf -o /dev/null --max-time 2 "$1"; }

auth_round_trip() {  # proxy -> tempauth (memcached) -> account server
  local token
  token=$(curl -sf --max-time 2 -D - -o /dev/null -H 'X-Auth-User: test:tester' \
            -H 'X-Auth-Key: testing' "http://127.0.0.1:$S3_PORT/auth/v1.0" \
          | tr -d '\r' | awk -F': ' 'tolower($1)=="x-auth-token" {print $2}')
  [ -n "$token" ] && curl -sf -o /dev/null --max-time 2 -I -H "X-Auth-Token: $token" \
                          "http://127.0.0.1:$S3_PORT/v1/AUTH_test"
}

healthy() {
  http_ok "http://127.0.0.1:$S3_PORT/healthcheck" &&
  http_ok "http://127.0.0.1:$OBJECT_PORT/healthcheck" &&
  http_ok "http://127.0.0.1:$CONTAINER_PORT/healthcheck" &&
  http_ok "http://127.0.0.1:$ACCOUNT_PORT/healthcheck" &&
  auth_round_trip
}

SERVICES="memcached object container account proxy"

# Ports: fixed once per BASE_DIR (the rings hold the backend ports).
if [ -f "$PORTS_FILE" ]; then
  # shellcheck source=/dev/null
  . "$PORTS_FILE"
  if [ $# -eq 2 ] && [ "$REQUESTED_PORT" != 0 ] && [ "$REQUESTED_PORT" != "$S3_PORT" ]; then
    echo "objectstore: $BASE was set up for port $S3_PORT, not $REQUESTED_PORT" >&2
    exit 1
  fi
else
  read -r OBJECT_PORT CONTAINER_PORT ACCOUNT_PORT MEMCACHED_PORT FREE_S3_PORT <<<"$(free_ports 5)"
  S3_PORT=$REQUESTED_PORT
  [ "$S3_PORT" = 0 ] && S3_PORT=$FREE_S3_PORT
fi

running=0
for s in $SERVICES; do alive "$s" && running=$((running + 1)); done
if [ "$running" = 5 ] && healthy; then
  print_env
  exit 0
fi
if [ "$running" != 0 ]; then
  echo "objectstore: $BASE is partly running; run scripts/objectstore/stop.sh $BASE first" >&2
  exit 1
fi

mkdir -p "$BASE/etc" "$BASE/srv/d1" "$RUN"
if [ ! -f "$PORTS_FILE" ]; then
  cat >"$PORTS_FILE" <<EOP
S3_PORT=$S3_PORT
OBJECT_PORT=$OBJECT_PORT
CONTAINER_PORT=$CONTAINER_PORT
ACCOUNT_PORT=$ACCOUNT_PORT
MEMCACHED_PORT=$MEMCACHED_PORT
EOP
fi

render() {  # render TEMPLATE KIND PORT -> etc/KIND-server.conf
  sed -e "s|@BASE@|$BASE|g" -e "s|@USER@|$(id -un)|g" -e "s|@KIND@|$2|g" \
      -e "s|@PORT@|$3|g" -e "s|@MEMCACHED_PORT@|$MEMCACHED_PORT|g" \
      "$HERE/conf/$1" >"$BASE/etc/$2-server.conf"
}
render backend-server.conf.in object "$OBJECT_PORT"
render backend-server.conf.in container "$CONTAINER_PORT"
render backend-server.conf.in account "$ACCOUNT_PORT"
render proxy-server.conf.in proxy "$S3_PORT"
# Swift refuses to start without a hash suffix; it must stay fixed for the data's lifetime.
[ -f "$BASE/etc/swift.conf" ] || printf '[swift-hash]\nswift_hash_path_suffix = llmtrain-%s\n' \
  "$(python3 -c 'import uuid; print(uuid.uuid4().hex)')" >"$BASE/etc/swift.conf"

# One ring per server kind: 2^6 partitions, 1 replica, 1 device. Built once, kept with the data.
for kind in object container account; do
  ring=$BASE/etc/$kind.ring.gz
  [ -f "$ring" ] && continue
  port_var=${kind^^}_PORT
  builder=$BASE/etc/$kind.builder
  rm -f "$builder"
  swift-ring-builder "$builder" create 6 1 1 >/dev/null
  swift-ring-builder "$builder" add "r1z1-127.0.0.1:${!port_var}/d1" 100 >/dev/null
  swift-ring-builder "$builder" rebalance >/dev/null
done

launch() {  # launch NAME CMD...: detached from our session, logs in run/NAME.log
  local name=$1; shift
  setsid "$@" </dev/null >>"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}
# -v keeps Swift's log on stderr (there is no syslog here); memcached's -P marks its cmdline
# with BASE so stop.sh can tell our process from a reused pid.
launch memcached memcached -u "$(id -un)" -l 127.0.0.1 -p "$MEMCACHED_PORT" -m 64 -U 0 \
  -P "$RUN/memcached.pidfile"
for kind in object container account; do
  launch "$kind" "swift-$kind-server" "$BASE/etc/$kind-server.conf" -v
done
launch proxy swift-proxy-server "$BASE/etc/proxy-server.conf" -v

deadline=$((SECONDS + STARTUP_TIMEOUT_S))
until healthy; do
  for s in $SERVICES; do
    if ! alive "$s"; then
      echo "objectstore: $s exited during startup; its log ($RUN/$s.log):" >&2
      tail -n 20 "$RUN/$s.log" >&2
      "$HERE/stop.sh" "$BASE" >/dev/null 2>&1 || true
      exit 1
    fi
  done
  if [ $SECONDS -ge $deadline ]; then
    echo "objectstore: not healthy after ${STARTUP_TIMEOUT_S}s; logs in $RUN" >&2
    "$HERE/stop.sh" "$BASE" >/dev/null 2>&1 || true
    exit 1
  fi
  sleep 0.1
done
print_env | tee "$BASE/env"
