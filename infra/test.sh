#!/usr/bin/env bash
# The README's test command: starts its own AWS emulator on a free port, runs every test
# (unit, integration against the emulator, end to end through infra/run.sh), lints the
# template, and stops what it started.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

"$root/infra/setup.sh"
port="${MOTO_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
trap '"$root/infra/moto.sh" stop "$port"' EXIT
"$root/infra/moto.sh" start "$port"

export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
# Binaries first: the end-to-end test starts infra/run.sh, whose build is then a no-op.
cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
"$root/infra/.venv/bin/cfn-lint" template.yaml
echo "cfn-lint: template.yaml clean"
