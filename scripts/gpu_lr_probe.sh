#!/usr/bin/env bash
# An LR probe on a GPU: short runs over a grid of initial LRs per loss, on a packed subset, leaving
# under $OUT what the choice of a preset's LRs needs:
#   probe.csv        one row per (loss, LR): final test / train accuracy, loss, diverged epoch
#   records.tar.gz   config, metrics, status of every run (each epoch; no checkpoints)
#   log.txt, machine.txt
#
#   scripts/gpu_lr_probe.sh PACKED.npz "LOSS:LR,LR,... [LOSS:LR,...]" [more `sweep-lr` options]
#   e.g. scripts/gpu_lr_probe.sh .carry/k100_40.npz "ql:0.005,0.01,0.02 ccql:0.005,0.01" \
#            --classes all --train-per-class 40 --test-per-class 10 --epochs 15
#
# The model is TrainConfig's default (the paper's WRN-28-10) unless options say otherwise. Runs and
# checkpoints go to $RUNS_DIR (default $OUT/probe_runs). DRY_RUN=1: the same steps on the CPU with
# WRN-10-1 and one epoch (tests/test_gpu_job.py).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2; fi
data=$1 grid=$2
shift 2
out=${OUT:-outputs/gpu_lr_probe}
runs=${RUNS_DIR:-$out/probe_runs}
py=${PY:-python3}
device=(--device cuda) extra=()
if [ -n "${DRY_RUN:-}" ]; then device=(--device cpu) extra=(--depth 10 --width 1 --unverified-data); fi
mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1
{ nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  "$py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
  git rev-parse HEAD 2>/dev/null || echo "commit unknown (not a git checkout)"; } > "$out/machine.txt"
rc=0 tables=()
for item in $grid; do
  loss=${item%%:*} lrs=${item#*:}
  "$py" -m ccql_utils sweep-lr --loss "$loss" --lrs "$lrs" "${device[@]}" --data-root "$data" \
      --runs-dir "$runs" --output "$out/probe_$loss.csv" "$@" "${extra[@]}" 2>&1 \
      | tee -a "$out/log.txt" || rc=$?
  tables+=("$out/probe_$loss.csv")
done
"$py" - "$out/probe.csv" "${tables[@]}" <<'PY' || rc=$?
import sys, pandas as pd
from pathlib import Path
frames = [pd.read_csv(p) for p in sys.argv[2:] if Path(p).exists()]
if frames:
    pd.concat(frames, ignore_index=True).to_csv(sys.argv[1], index=False)
PY
"$py" -m ccql_utils export --runs-dir "$runs" --output "$out/records.tar.gz" || true
exit "$rc"
