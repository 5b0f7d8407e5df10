#!/usr/bin/env bash
# The Python OAuth 2.0 and JWT libraries tests/exchange.rs drives (tests/python/requirements.txt),
# installed with pip's own configuration into DIR (default .keyward/python), once.
#   scripts/python-clients.sh [DIR]    prints DIR, for PYTHONPATH
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/.keyward/python}
requirements=$root/tests/python/requirements.txt
stamp=$dir/.installed
if [ -f "$stamp" ] && cmp -s "$stamp" "$requirements"; then
  echo "$dir"
  exit 0
fi
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "python-clients: installing python3-pip" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
fi
rm -rf "$dir.tmp"
echo "python-clients: installing $(grep -v '^#' "$requirements" | tr '\n' ' ')into $dir" >&2
python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
  --target "$dir.tmp" -r "$requirements" >&2
rm -rf "$dir" && mv "$dir.tmp" "$dir"
cp "$requirements" "$stamp"
echo "$dir"
