#!/usr/bin/env bash
# moto.sh start|stop [PORT]: starts the emulator in the background (pid in infra/.run) or
# stops the one this script started on that port. Never touches processes it did not start.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cmd="${1:?usage: moto.sh start|stop [PORT]}"
port="${2:-${MOTO_PORT:-4566}}"
run="$here/.run"
pidfile="$run/moto-$port.pid"
mkdir -p "$run"

case "$cmd" in
start)
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "moto already running on 127.0.0.1:$port (pid $(cat "$pidfile"))" >&2
    exit 0
  fi
  "$here/setup.sh"
  # MOTO_HOST=0.0.0.0 lets a Docker container reach it (`sam local` on Linux; README).
  "$here/.venv/bin/python" "$here/moto_server.py" --host "${MOTO_HOST:-127.0.0.1}" --port "$port" \
    >"$run/moto-$port.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    if curl -sf "http://127.0.0.1:$port/moto-api/data.json" >/dev/null 2>&1; then
      echo "moto listening on http://127.0.0.1:$port (pid $(cat "$pidfile"))" >&2
      exit 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "moto failed to start; log:" >&2
      cat "$run/moto-$port.log" >&2
      rm -f "$pidfile"
      exit 1
    fi
    sleep 0.1
  done
  echo "moto did not answer on port $port within 10 s" >&2
  exit 1
  ;;
stop)
  if [[ -f "$pidfile" ]]; then
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  fi
  ;;
*)
  echo "usage: moto.sh start|stop [PORT]" >&2
  exit 2
  ;;
esac
