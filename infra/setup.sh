#!/usr/bin/env bash
# Creates (or refreshes) the project-local Python environment that runs the AWS emulator.
# Idempotent: re-running with unchanged requirements does nothing. `--build` adds the
# build tools (cargo-lambda, the SAM CLI); a plain run after it keeps them.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
reqs=("$here/requirements.txt")
[[ "${1:-}" == "--build" ]] && reqs+=("$here/requirements-build.txt")

# One line per requirements file installed (its hash): a file counts as installed while
# its hash is listed; a change to requirements.txt reinstalls everything.
stamp="$venv/.requirements.sha256"
hash_of() { sha256sum "$1" | cut -d' ' -f1; }
base="$(hash_of "$here/requirements.txt")"
missing=()
for r in "${reqs[@]}"; do
  if [[ ! -x "$venv/bin/python" || ! -f "$stamp" ]] || ! grep -qx "$(hash_of "$r")" "$stamp" ||
    ! grep -qx "$base" "$stamp"; then
    missing+=("$r")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ ! -f "$stamp" ]] || ! grep -qx "$base" "$stamp"; then
  missing=("${reqs[@]}")
  rm -f "$stamp"
fi
echo "infra/setup.sh: installing ${missing[*]##*/} into infra/.venv" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
for r in "${missing[@]}"; do
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$r"
  hash_of "$r" >>"$stamp"
done
