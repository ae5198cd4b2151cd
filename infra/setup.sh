#!/usr/bin/env bash
# Creates (or refreshes) the project-local Python environment that runs the AWS emulator.
# Idempotent: re-running with unchanged requirements does nothing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
reqs=("$here/requirements.txt")
[[ "${1:-}" == "--build" ]] && reqs+=("$here/requirements-build.txt")

stamp="$venv/.requirements.sha256"
want="$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "infra/setup.sh: installing ${reqs[*]##*/} into infra/.venv" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
for r in "${reqs[@]}"; do
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$r"
done
echo "$want" > "$stamp"
