#!/usr/bin/env bash
# One GPU job: the runs of one experiment at one preset, trained on a packed class subset, leaving
# under $OUT (default outputs/gpu_job) what a laptop needs to redraw the figure:
#   records.tar.gz   config, metrics, status of every finished or diverged run (no checkpoints)
#   log.txt          the training log;  machine.txt  card, torch version, commit
#
#   scripts/gpu_job.sh EXPERIMENT PACKED.npz [PRESET] [more `python -m ccql_utils run` options]
#   e.g. scripts/gpu_job.sh k25_random .carry/k25.npz gpu-short
#
# The package need not be installed (PYTHONPATH=.). The runs, checkpoints included, go to $RUNS_DIR
# (default $OUT/runs; set it outside $OUT where $OUT is shipped back, as a WRN-28-10 checkpoint is
# ~290 MB): a job cut off by a time limit resumes from them when rerun on the same machine.
# DRY_RUN=1 runs the same steps on the CPU at the tiny preset (tests/test_gpu_job.py does), to
# check a job before spending GPU time. Back home: `python -m ccql_utils import records.tar.gz --runs-dir runs`, then the notebook
# or `./run_all.sh --preset PRESET --only NAME` redraws the figure without training.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; fi
experiment=$1 data=$2 preset=${3:-gpu-short}
shift $(( $# < 3 ? $# : 3 ))
out=${OUT:-outputs/gpu_job}
runs=${RUNS_DIR:-$out/runs}
py=${PY:-python3}
device=cuda extra=()
if [ -n "${DRY_RUN:-}" ]; then preset=tiny device=cpu extra=(--unverified-data); fi
mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1
{ nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  "$py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
  git rev-parse HEAD 2>/dev/null || echo "commit unknown (not a git checkout)"; } > "$out/machine.txt"
set -o pipefail
rc=0
"$py" -m ccql_utils run "$experiment" --preset "$preset" --device "$device" --data-root "$data" \
    --runs-dir "$runs" "${extra[@]}" "$@" 2>&1 | tee "$out/log.txt" || rc=$?
"$py" -m ccql_utils export --runs-dir "$runs" --output "$out/records.tar.gz" || true
exit "$rc"
