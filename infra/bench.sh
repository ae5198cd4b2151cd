#!/usr/bin/env bash
# The benchmarks of BENCHMARKS.md: cold start (against a loopback Lambda Runtime API, next to
# the bare and SDK hello-worlds and Node 20 with the v3 SDK), peak memory, AWS calls per
# operation, bootstrap sizes, and local end to end. Starts its own emulator on a free port
# and stops what it started. Prints the tables; never fails on a figure (no thresholds).
#
#   infra/bench.sh           the full run: release builds (in target/bench, its own lock),
#                            the arm64 `cargo lambda` build for the sizes, 20 spawns each,
#                            1,000 invocations each; about 10 minutes once built
#   infra/bench.sh --quick   the CI smoke check: the debug binaries `infra/test.sh` built,
#                            3 spawns, 50 invocations, no release or cross build (< 2 min)
#
#   BENCH_OUT        where the JSON results go (default target/bench-results[-quick].json)
#   BENCH_NICE       niceness of the release builds (default 19: other builds come first)
#   BENCH_ARM64      0 skips the arm64 cross build (sizes then come from the x86_64 build)
#   BENCH_NODE       0 leaves Node out (no `npm ci`, so no registry access: what CI does)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

quick=0
case "${1:-}" in
--quick) quick=1 ;;
"") ;;
*)
  echo "usage: infra/bench.sh [--quick]" >&2
  exit 2
  ;;
esac

target="${CARGO_TARGET_DIR:-$root/target}"
bench_target="$root/target/bench"
nice_level="${BENCH_NICE:-19}"
say() { echo "bench.sh: $*" >&2; }

"$root/infra/setup.sh"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
trap '"$root/infra/moto.sh" stop "$port"' EXIT
"$root/infra/moto.sh" start "$port"
# The emulator takes any credentials; 127.0.0.1 (not localhost) keeps S3 path-style.
export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench

# Node 20 and the v3 SDK (pinned by package-lock.json) for the comparison; skipped, with a
# note in the report, where node or the npm registry is missing.
node_args=()
if [[ "${BENCH_NODE:-1}" == 0 ]]; then
  say "BENCH_NODE=0: Node is left out"
elif command -v node >/dev/null && command -v npm >/dev/null; then
  if (cd infra/bench/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
    node_args=(--node-dir "$root/infra/bench/node")
  else
    say "npm ci failed: Node is left out"
  fi
else
  say "node or npm not found: Node is left out"
fi

if [[ "$quick" == 1 ]]; then
  # The same build as infra/test.sh: a no-op after it.
  cargo build --quiet --workspace --bins
  bins="$target/debug"
  logs="$target/bench-logs"
  mkdir -p "$logs"
  # stdout: the metric lines the in-process services print; the report has its own file.
  "$bins/bench" --quick --bins "$bins" "${node_args[@]}" --logs "$logs" \
    --out "${BENCH_OUT:-$target/bench-results-quick.json}" --report "$logs/report.md" \
    >"$logs/bench-stdout.log"
  cat "$logs/report.md"
  exit 0
fi

# Release binaries in their own target directory (its own lock: other builds go on).
functions=(auth generate webhook worker)
floors=(hello-bare hello-sdk)
packages=()
for f in "${functions[@]}" bench; do packages+=(-p "$f"); done
say "release build (x86_64) into $bench_target"
CARGO_TARGET_DIR="$bench_target" nice -n "$nice_level" cargo build --release --quiet "${packages[@]}"
sizes=(--size "x86_64 release=$bench_target/release")

# The four bootstraps as `sam deploy` ships them: `sam build` (rust-cargolambda, arm64,
# release), timed, into target/bench (the same cargo target directory as the build below,
# which then reuses its artifacts for the functions). Logged to target/bench/sam-build.log.
notes=()
if [[ "${BENCH_ARM64:-1}" != 0 ]]; then
  "$root/infra/setup.sh" --build
  sam_dir="$bench_target/sam-build"
  rm -rf "$sam_dir/build"
  say "sam build (rust-cargolambda, arm64, release) into $sam_dir/build"
  started=$(date +%s.%N)
  if PATH="$root/infra/.venv/bin:$PATH" CARGO_TARGET_DIR="$bench_target" SAM_CLI_TELEMETRY=0 \
    nice -n "$nice_level" "$root/infra/.venv/bin/sam" build --template template.yaml \
    --build-dir "$sam_dir/build" --cache-dir "$sam_dir/cache" --no-cached \
    >"$bench_target/sam-build.log" 2>&1; then
    seconds=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$started" "$(date +%s.%N)")
    # The size table wants <dir>/<binary>/bootstrap: link the logical ids to the binary names.
    mkdir -p "$sam_dir/by-binary"
    for pair in AuthFunction:auth GenerateFunction:generate WebhookFunction:webhook WorkerFunction:worker; do
      mkdir -p "$sam_dir/by-binary/${pair#*:}"
      ln -sf "$sam_dir/build/${pair%%:*}/bootstrap" "$sam_dir/by-binary/${pair#*:}/bootstrap"
    done
    sizes+=(--size "arm64 sam build=$sam_dir/by-binary")
    notes+=(--note "sam build (rust-cargolambda, arm64, release, --no-cached, parallel) made the four bootstraps in ${seconds} s at nice ${nice_level}")
    say "sam build: ${seconds} s"
  else
    say "sam build failed (log: $bench_target/sam-build.log)"
    notes+=(--note "sam build failed: see target/bench/sam-build.log")
  fi
fi

# arm64 bootstraps as deployed: cargo-lambda (zig as the cross linker) from infra/.venv.
bin_args=()
for b in "${functions[@]}" "${floors[@]}"; do bin_args+=(--bin "$b"); done
if [[ "${BENCH_ARM64:-1}" == 0 ]]; then
  say "BENCH_ARM64=0: no arm64 build, x86_64 sizes only"
elif rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu ||
  rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1; then
  "$root/infra/setup.sh" --build
  say "cargo lambda build --release --arm64"
  if PATH="$root/infra/.venv/bin:$PATH" CARGO_TARGET_DIR="$bench_target" nice -n "$nice_level" \
    cargo lambda build --release --arm64 --lambda-dir "$bench_target/lambda-arm64" "${bin_args[@]}" \
    >"$bench_target/lambda-arm64.log" 2>&1; then
    sizes+=(--size "arm64 cargo lambda=$bench_target/lambda-arm64")
  else
    say "the arm64 build failed (log: $bench_target/lambda-arm64.log): x86_64 sizes only"
  fi
else
  say "no aarch64-unknown-linux-gnu target (rustup target add failed): x86_64 sizes only"
fi

logs="$bench_target/logs"
mkdir -p "$logs"
say "running (about 10 minutes)"
"$bench_target/release/bench" --bins "$bench_target/release" "${node_args[@]}" "${sizes[@]}" "${notes[@]}" \
  --logs "$logs" --out "${BENCH_OUT:-$root/target/bench-results.json}" --report "$logs/report.md" \
  >"$logs/bench-stdout.log"
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB;" \
  "$(date -u +%Y-%m-%d); commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!target' 2>/dev/null || echo ' + uncommitted changes')"
echo
cat "$logs/report.md"
