#!/usr/bin/env bash
# Installs what the web app's build and browser test need, from the machine's own package
# sources only: Debian's chromium (no browser download by any npm package) and the npm
# packages pinned by web/package-lock.json (npm ci). Idempotent and cheap when done:
#
#   infra/setup-web.sh            node packages (the build needs only these)
#   infra/setup-web.sh --browser  node packages and chromium (the browser test)
#
# Downloaded .debs stay in infra/.cache/apt (git-ignored) so a second machine set-up from
# the same clone installs without fetching them again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
web="$root/web"

need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "infra/setup-web.sh: '$1' is not on the PATH ($2)" >&2
    exit 1
  }
}
need node "Node.js 20 or newer builds the web app"
need npm "npm installs the web app's pinned packages"

# npm ci only when the lock changed since the last install (it deletes node_modules first).
stamp="$web/node_modules/.package-lock.sha256"
want="$(sha256sum "$web/package-lock.json" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "infra/setup-web.sh: npm ci in web/" >&2
  (cd "$web" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi

if [[ "${1:-}" == "--browser" ]] && ! [[ -x /usr/bin/chromium ]]; then
  need apt-get "Debian's chromium package is the browser the tests drive"
  sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  cache="$root/infra/.cache/apt"
  mkdir -p "$cache/partial"
  apt_opts=(-o "Dir::Cache::Archives=$cache" -o Dpkg::Use-Pty=0 -y -q --no-install-recommends)
  echo "infra/setup-web.sh: installing Debian's chromium" >&2
  if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install chromium fonts-wqy-microhei >&2; then
    # A fresh machine has no package lists yet.
    $sudo apt-get -q update >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install chromium fonts-wqy-microhei >&2
  fi
  [[ -x /usr/bin/chromium ]] || { echo "infra/setup-web.sh: chromium did not install" >&2; exit 1; }
fi
