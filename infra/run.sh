#!/usr/bin/env bash
# The README's run command: the whole service on one port, from a fresh clone, with no
# keys, no Docker and no cloud account. Ctrl-C stops everything this script started.
#
#   PORT (3000)       where the HTTP routes listen (0 picks a free port)
#   MOTO_PORT (4566)  where the AWS emulator listens
#   MODEL_PROVIDERS   (*=local) which provider serves each model
#   WEB               (1) build the web app when its sources changed and serve it at /;
#                     0 serves the API alone (no Node.js needed)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PORT="${PORT:-3000}"
export MOTO_PORT="${MOTO_PORT:-4566}"

"$root/infra/setup.sh"
cargo build --quiet --manifest-path "$root/Cargo.toml" -p local-runner
if [[ "${WEB:-1}" == 1 ]]; then
  if command -v npm >/dev/null 2>&1; then
    "$root/infra/build-web.sh"
    export WEB_DIST="$root/web/dist"
  else
    echo "infra/run.sh: npm is not on the PATH: serving the API without the web app" >&2
  fi
fi

runner=""
cleanup() {
  [[ -n "$runner" ]] && kill "$runner" 2>/dev/null && wait "$runner" 2>/dev/null
  "$root/infra/moto.sh" stop "$MOTO_PORT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$root/infra/moto.sh" start "$MOTO_PORT"

# The emulator takes any credentials; 127.0.0.1 (not localhost) keeps S3 path-style.
export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-local}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-local}"
export AUTH_DEV_LOGIN="${AUTH_DEV_LOGIN:-1}"
export MODEL_PROVIDERS="${MODEL_PROVIDERS:-*=local}"
# Completion webhooks may go to a receiver on this machine (never set when deployed).
export WEBHOOK_ALLOW_LOOPBACK="${WEBHOOK_ALLOW_LOOPBACK:-1}"
# The runner's own origin (it serves the app) and Vite's dev server (`npm run dev`); the
# runner adds its own origin by itself too, whatever port it bound.
own=""
[[ "$PORT" != 0 ]] && own="http://127.0.0.1:$PORT,http://localhost:$PORT,"
export APP_ORIGINS="${APP_ORIGINS:-${own}http://localhost:5173,http://127.0.0.1:5173}"
# A fresh key per run: the emulator forgets everything on restart anyway.
export SESSION_SECRET="${SESSION_SECRET:-$(head -c 48 /dev/urandom | base64 | tr -d '\n')}"
export LOG_FORMAT="${LOG_FORMAT:-pretty}"

"$root/target/debug/local-runner" &
runner=$!
wait "$runner"
