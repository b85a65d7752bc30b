#!/usr/bin/env bash
# Regenerate every figure in figures/ by executing the notebooks headlessly with papermill.
#
#   ./run_all.sh [--preset paper|quick|tiny] [--data-root PATH] [--device cuda|cpu] [--only NAME]
#
# Without --preset: `paper` on a CUDA machine, `quick` elsewhere. Executed notebooks go to
# outputs/<preset>/ (git-ignored); figures to figures/ (tiny: outputs/tiny/figures, so tests and
# smoke runs never overwrite the committed figures). Runs are kept in runs/: rerunning after an
# interruption resumes, and after completion the figures are redrawn from stored runs in seconds.
# --only NAME runs the notebooks whose file name contains NAME (e.g. theory, 01, k100, mammals).
set -euo pipefail
cd "$(dirname "$0")"

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
preset="" data_root="" device="auto" only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --preset) preset="${2:?--preset needs a value}"; shift 2 ;;
        --data-root) data_root="${2:?--data-root needs a value}"; shift 2 ;;
        --device) device="${2:?--device needs a value}"; shift 2 ;;
        --only) only="${2:?--only needs a value}"; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "run_all.sh: unknown argument '$1'" >&2; usage 2 ;;
    esac
done
case "$preset" in ""|paper|quick|tiny) ;; *) echo "run_all.sh: --preset must be paper, quick or tiny" >&2; exit 2 ;; esac
case "$device" in auto|cpu|cuda|cuda:*) ;; *) echo "run_all.sh: --device must be cpu or cuda" >&2; exit 2 ;; esac

source scripts/ensure_env.sh
export MPLBACKEND=Agg

if [ -z "$preset" ]; then
    if [ "$device" != "cpu" ] && "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        preset=paper; echo "[run_all] CUDA GPU found: using --preset paper (WRN-28-10, 200 epochs)"
    else
        preset=quick; echo "[run_all] no CUDA GPU: using --preset quick (CPU-sized; figures say so)"
    fi
fi
# The notebooks run in notebooks/, so relative data paths are made absolute here.
if [ -n "$data_root" ]; then
    data_root="$(cd "$data_root" && pwd)" || { echo "run_all.sh: --data-root $data_root does not exist" >&2; exit 2; }
elif [ -n "${CCQL_DATA_ROOT:-}" ]; then
    CCQL_DATA_ROOT="$(cd "$CCQL_DATA_ROOT" && pwd)" || { echo "run_all.sh: CCQL_DATA_ROOT=$CCQL_DATA_ROOT does not exist" >&2; exit 2; }
    export CCQL_DATA_ROOT
fi

figures_dir="$PWD/figures"
[ "$preset" = tiny ] && figures_dir="$PWD/outputs/tiny/figures"
out_dir="outputs/$preset"
mkdir -p "$out_dir" "$figures_dir"

start=$(date +%s)
ran=0
for nb in notebooks/*.ipynb; do
    name="$(basename "$nb")"
    if [ -n "$only" ] && [[ "$name" != *"$only"* ]]; then continue; fi
    params=(-p figures_dir "$figures_dir")
    if [[ "$name" != 00_* ]]; then   # the experiment notebooks
        params+=(-p preset "$preset" -p device "$device" -p runs_dir "$PWD/runs")
        [ -n "$data_root" ] && params+=(-p data_root "$data_root")
    fi
    echo "[run_all] $(date +%H:%M:%S) $name (preset $preset) -> $out_dir/$name"
    t0=$(date +%s)
    if ! "$PY" -m ccql_utils notebook "$nb" --output "$out_dir/$name" "${params[@]}"; then
        echo "[run_all] FAILED: $name. The failing cell and its traceback are above; the executed copy is $out_dir/$name" >&2
        exit 1
    fi
    echo "[run_all] $name done in $(( $(date +%s) - t0 )) s"
    ran=$((ran + 1))
done
if [ "$ran" -eq 0 ]; then echo "run_all.sh: no notebook matches --only '$only'" >&2; exit 2; fi

echo
echo "[run_all] finished $ran notebook(s) in $(( $(date +%s) - start )) s (preset $preset). Figures:"
"$PY" -m ccql_utils summary --figures-dir "$figures_dir" --runs-dir runs
