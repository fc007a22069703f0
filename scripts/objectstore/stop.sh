#!/bin/bash
# Stop the object store started by start.sh on BASE_DIR. Keeps its data; safe to run twice.
#   scripts/objectstore/stop.sh BASE_DIR
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 BASE_DIR" >&2
  exit 2
fi
[ -d "$1" ] || exit 0
BASE=$(cd "$1" && pwd)
RUN=$BASE/run

ours() {  # the pid is still one of our processes (not a reused pid): its cmdline names BASE
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "$BASE/"
}

pids=()
for pidfile in "$RUN"/*.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
  fi
  rm -f "$pidfile"
done

# Wait for them to exit so the ports are free for a restart; SIGKILL stragglers after 10 s.
for _ in $(seq 100); do
  left=()
  for pid in "${pids[@]}"; do ours "$pid" && left+=("$pid"); done
  [ ${#left[@]} = 0 ] && exit 0
  sleep 0.1
done
kill -KILL "${left[@]}" 2>/dev/null || true
