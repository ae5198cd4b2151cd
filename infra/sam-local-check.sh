#!/usr/bin/env bash
# What `sam local invoke -e events/<file> --env-vars events/env.json` does with every event of
# events/, proven without Docker (issue 17): the functions built, the emulator started with
# the resources env.json names, and each event handed to a fresh process of its function's
# binary behind a loopback Lambda Runtime API, with exactly the environment the pinned SAM
# CLI computes for that function (template-declared variables, env.json's overrides of
# them, nothing else; the Docker host name mapped to the emulator on 127.0.0.1). Each answer
# is held to events/manifest.json. Also: events/ is what `sam local generate-event` makes of
# our routes (infra/samlocal/events.py), and `sam validate --lint` is clean.
#
# Run by infra/test.sh (the README's test command). Starts its own emulator on a free port
# and stops what it started.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
say() { echo "sam-local-check.sh: $*" >&2; }

"$root/infra/setup.sh" --build
py="$root/infra/.venv/bin/python"
export SAM_CLI_TELEMETRY=0

"$py" infra/samlocal/events.py check
# Offline: the template and cfn-lint, through the pinned SAM CLI (region only for the CLI).
"$root/infra/.venv/bin/sam" validate --lint --template template.yaml --region us-east-1 >/dev/null
say "sam validate --lint: template.yaml is a valid SAM template, lint clean"

target="${CARGO_TARGET_DIR:-$root/target}"
cargo build --quiet -p auth -p generate -p webhook -p worker -p bench --bins

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
trap '"$root/infra/moto.sh" stop "$port"' EXIT
"$root/infra/moto.sh" start "$port"

# For the check's own provisioning only: each function gets just what plan.py computed.
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=sam-local-check AWS_SECRET_ACCESS_KEY=sam-local-check
unset AWS_ENDPOINT_URL
out="$target/sam-local"
mkdir -p "$out"
"$py" infra/samlocal/plan.py --emulator "http://127.0.0.1:$port" >"$out/plan.json"
rm -rf "$out/logs"
"$target/debug/sam-local-check" "$out/plan.json" "$target/debug" "$root/events" "$out/logs"
