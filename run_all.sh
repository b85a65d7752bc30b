#!/usr/bin/env bash
# Regenerate every figure in figures/ by executing the notebooks headlessly with papermill.
#
#   ./run_all.sh [--preset paper|gpu-short|quick|tiny|auto] [--data-root PATH] [--device cuda|cpu]
#                [--only NAME] [--runs-dir DIR] [--quiet]
#
# Without --preset: `paper` on a CUDA machine, `quick` elsewhere. Executed notebooks go to
# outputs/<preset>/ (git-ignored); figures to figures/ (tiny: outputs/tiny/figures, so tests and
# smoke runs never overwrite the committed figures). Runs are kept in runs/: rerunning after an
# interruption resumes, and after completion the figures are redrawn from stored runs in seconds.
# --only NAME runs the notebooks whose file name contains NAME (e.g. theory, 01, k100, mammals).
# Exit codes: 0 done, 1 a notebook failed, 2 invalid arguments, 3 a run diverged (the last lines
# name it and its learning rate). This script only prepares the environment; the work is
# `python -m ccql_utils all` (see `--help`).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_env.sh
export MPLBACKEND=Agg
exec "$PY" -m ccql_utils all "$@"
