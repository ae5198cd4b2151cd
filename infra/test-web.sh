#!/usr/bin/env bash
# The web app's tests: type check against the types generated from openapi.yaml, ESLint
# and Prettier, Vitest, then the browser test (Debian's chromium driven by playwright-core)
# against the README's run command. infra/test.sh runs this after the Rust tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/infra/setup-web.sh" --browser
cd "$root/web"
npm run --silent typecheck
npm run --silent lint
npx vitest run
"$root/infra/build-web.sh"
node e2e/run.mjs
