#!/usr/bin/env bash
# Redraw every committed training figure from the committed run records alone (no data, no
# training): the records under results/ are imported into a scratch runs folder, then the
# notebooks run at each preset that has committed figures. A CSV that changes means the code no
# longer draws what the records say; `git diff figures/` shows it.
#
#   scripts/redraw_figures.sh            (uses ./.venv or the active environment)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure_env.sh
runs="$(mktemp -d)"
trap 'rm -rf "$runs"' EXIT
# The committed figures' records. quick_k25_random_10_seeds_h200 is left out: its seeds 0-2 are
# the same runs (same ids) trained again on a GPU, whose numerics differ from the CPU's that drew
# figures/fig1_k25_random_quick; import refuses two different records of one run.
for records in results/quick_3_seeds_records.tar.gz results/fig3_class_draws_quick_records.tar.gz \
               results/k_sweep_quick_records.tar.gz results/loss_zoo_quick_records.tar.gz \
               results/loss_weights_quick_records.tar.gz results/gpu-short-h200-2026-11-27 \
               results/gpu-lease-*.tar.gz; do
    [ -e "$records" ] || continue
    added="$("$PY" -m ccql_utils import "$records" --runs-dir "$runs" 2>&1)" || { echo "$added" >&2; exit 1; }
    echo "$records: ${added%%$'\n'*}"
done
# quick: every training figure with the seeds it was committed with; gpu-short: the figures it has
for nb in 01 02 03 04 05 06; do
    draws=(); [ "$nb" = 03 ] && draws=(--class-seeds 0,1,2)  # Fig 3's control: two more class draws
    "$PY" -m ccql_utils all --preset quick --seeds 0,1,2 --only "$nb" "${draws[@]}" --runs-dir "$runs" --device cpu --quiet
done
for nb in 01 03; do
    "$PY" -m ccql_utils all --preset gpu-short --only "$nb" --runs-dir "$runs" --quiet
done
git status --short figures/
