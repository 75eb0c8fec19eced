#!/usr/bin/env bash
# Execute notebooks in place (from their own folder, as nbdev_test does) so that their saved outputs,
# figures included, are what the docs site shows; then clean each one. Figures are saved as plain PNG
# (execnb's default is retina, which doubles every image's size in the repo). Cells marked `#| eval: false`
# are skipped, as nbdev does, and so are `#| gpu` cells (they need CUDA; tools/gpu_check.sh runs them on a GPU). Every
# cell it runs has its saved output cleared first, so a warning or figure a cell no longer produces does not stay behind.
# Usage: tools/execute_nbs.sh nbs/01_config.ipynb ...
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
for nb in "$@"; do
  dir=$(dirname "$nb"); name=$(basename "$nb")
  echo "executing $nb"
  (cd "$dir" && "$root/.venv/bin/python" -c "
import re, sys
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
nb = read_nb(sys.argv[1])
no_eval = lambda c: c.cell_type == 'code' and re.search(r'^#\|\s*(eval:\s*false|gpu\b)', c.source, re.M) is not None
for c in nb.cells:                      # execnb keeps a cell's old outputs when the new run prints nothing
    if c.cell_type == 'code' and not no_eval(c): c.outputs, c.execution_count = [], None
CaptureShell(mpl_format='png').run_all(nb, exc_stop=True, preproc=no_eval)
write_nb(nb, sys.argv[1])" "$name")
  "$root/.venv/bin/nbdev_clean" --fname "$nb"
done
