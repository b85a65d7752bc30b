#!/usr/bin/env bash
# Regenerate every figure in figures/. (Preliminary: the experiment notebooks come next.)
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_env.sh
for nb in notebooks/*.ipynb; do
    [ -f "$nb" ] || continue
    echo "[run_all] $nb"
    "$PY" -m papermill "$nb" "outputs/$(basename "$nb")" --cwd notebooks
done
