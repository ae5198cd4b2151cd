#!/usr/bin/env bash
# The README's test command: starts its own AWS emulator on a free port, runs every test
# (unit, integration against the emulator, end to end through infra/run.sh), lints the
# template, runs the web app's checks and browser test (infra/test-web.sh), proves what
# `sam local` does with events/ (infra/sam-local-check.sh), and stops what it started.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

"$root/infra/setup.sh"
port="${MOTO_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
trap '"$root/infra/moto.sh" stop "$port"' EXIT
"$root/infra/moto.sh" start "$port"

export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
# Binaries and the web app first: the end-to-end test starts infra/run.sh, whose builds
# are then no-ops.
cargo build --workspace --bins
command -v npm >/dev/null 2>&1 && "$root/infra/build-web.sh"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
"$root/infra/.venv/bin/cfn-lint" template.yaml
echo "cfn-lint: template.yaml clean"
# The template as the SAM transform makes it: releases, rollback alarms, the dashboard.
"$root/infra/.venv/bin/python" -m unittest discover -s tests/template
# The web app's checks and its browser test, once, on a full run (a filter given to the
# Rust tests skips them; WEB_TESTS=0 skips them too).
if [[ $# -eq 0 && "${WEB_TESTS:-1}" == 1 ]]; then
  "$root/infra/test-web.sh"
fi
# What `sam local invoke` does with every event of events/, without Docker (own emulator).
bash "$root/infra/sam-local-check.sh"
