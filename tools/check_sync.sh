#!/usr/bin/env bash
# Fail when nbdev_clean or nbdev_export would change tracked files: the notebooks are the source, so the
# committed library must be exactly what they export, and the notebooks must be committed clean.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
dirty=$(git status --porcelain --untracked-files=no)
if [ -n "$dirty" ]; then
  echo "note: tracked files already differ from HEAD; checking against the working tree as it is"
fi
snap=$(mktemp -d)
git ls-files -z nbs show_attend_tell | xargs -0 -I{} cp --parents {} "$snap"
"$bin/nbdev_clean" >/dev/null || { echo "error: nbdev_clean failed"; exit 1; }
"$bin/nbdev_export" >/dev/null || { echo "error: nbdev_export failed"; exit 1; }
changed=()
while IFS= read -r -d '' f; do
  cmp -s "$f" "$snap/$f" || changed+=("$f")
done < <(git ls-files -z nbs show_attend_tell)
# New exported files that git does not track yet count as out of sync too.
while IFS= read -r f; do changed+=("$f (untracked, new)"); done < <(git ls-files --others --exclude-standard show_attend_tell)
rm -rf "$snap"
if [ ${#changed[@]} -gt 0 ]; then
  echo "error: notebooks and library are out of sync; these files change under nbdev_clean/nbdev_export:"
  printf '  %s\n' "${changed[@]}"
  echo "fix: nbdev_clean/nbdev_export have now rewritten them in your working tree: review with 'git diff' and commit"
  exit 1
fi
echo "notebooks clean and library in sync with nbs/"
