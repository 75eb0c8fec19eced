#!/usr/bin/env bash
# Execute notebooks in place (from their own folder, as nbdev_test does) so that their saved outputs,
# figures included, are what the docs site shows; then clean each one. Usage: tools/execute_nbs.sh nbs/00_config.ipynb ...
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
for nb in "$@"; do
  dir=$(dirname "$nb"); name=$(basename "$nb")
  echo "executing $nb"
  (cd "$dir" && MPLBACKEND=module://matplotlib_inline.backend_inline "$root/.venv/bin/exec_nb" --exc_stop "$name" --dest "$name")
  "$root/.venv/bin/nbdev_clean" --fname "$nb"
done
