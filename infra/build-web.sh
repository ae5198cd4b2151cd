#!/usr/bin/env bash
# Builds the web app into web/dist when its sources changed since the last build (npm ci
# of the pinned packages, then vite build); prints nothing and does nothing otherwise.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
web="$root/web"

# Everything the build reads: the app, its configuration, its lock, and the contract its
# API types are generated from.
sources_hash() {
  (
    cd "$root"
    find web/src web/public web/index.html web/package.json web/package-lock.json \
      web/vite.config.ts web/tsconfig.json openapi.yaml -type f \
      ! -name '*.gen.ts' ! -name '*.test.ts' -print0 2>/dev/null |
      sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
  )
}

stamp="$web/dist/.sources.sha256"
want="$(sources_hash)"
if [[ -f "$web/dist/index.html" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
"$root/infra/setup-web.sh"
echo "infra/build-web.sh: building the web app (vite build)" >&2
(cd "$web" && npm run --silent build >&2)
echo "$want" >"$stamp"
