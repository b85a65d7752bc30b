#!/usr/bin/env bash
# A GPU lease, one command at a time (docs/gpu.md). The full data set is larger than one command may
# carry, so it travels as a pack in parts (`python -m ccql_utils pack --classes all --output
# .carry/all`), one part per command, into a folder on the GPU machine outside the job's output
# folder; then one command trains the queue's next runs that fit its budget, exporting the records
# of each finished run as it goes, so a command cut short still returns what finished.
#
#   scripts/gpu_lease.sh receive PARTS DEST     copy the parts present in PARTS (the carried pack
#                                               folder) into DEST; says which parts DEST still lacks
#   scripts/gpu_lease.sh train DEST BUDGET_S [more `python -m ccql_utils lease` options]
#                                               trains `plan --budget-s BUDGET_S`; leaves in $OUT:
#                                               records.tar.gz, plan.txt, log.txt, machine.txt
#
# The package need not be installed (PYTHONPATH=.). Runs and checkpoints go to $RUNS_DIR (default
# ~/ccql-runs, outside $OUT: a WRN-28-10 checkpoint is ~290 MB). DRY_RUN=1 trains on the CPU with
# every run shrunk (WRN-10-1, 2 epochs) and the data unverified: tests/test_gpu_lease.py rehearses a
# whole lease that way. Back home: `python -m ccql_utils import records.tar.gz`, then
# `./run_all.sh --preset gpu-short --only 02` redraws the figure from the records.
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
py=${PY:-python3}
export PYTHONPATH=. PYTHONUNBUFFERED=1
case "$1" in
receive)
    [ $# -eq 3 ] || usage
    parts=$2 dest=$3
    [ -f "$parts/manifest.json" ] || { echo "error: $parts/manifest.json is not here: carry it with each part" >&2; exit 1; }
    mkdir -p "$dest"
    for f in "$parts"/manifest.json "$parts"/part-*; do
        [ -f "$f" ] || continue
        cp "$f" "$dest/.$(basename "$f").tmp" && mv "$dest/.$(basename "$f").tmp" "$dest/$(basename "$f")"
        echo "received $(basename "$f") ($(stat -c %s "$f") bytes)"
    done
    # exit 0 once complete and intact; else one line naming the parts still to carry (exit 1)
    "$py" -m ccql_utils verify-pack "$dest"
    ;;
train)
    [ $# -ge 3 ] || usage
    dest=$2 budget=$3
    shift 3
    out=${OUT:-outputs/gpu_lease}
    runs=${RUNS_DIR:-$HOME/ccql-runs}
    extra=() device=()
    if [ -n "${DRY_RUN:-}" ]; then extra=(--dry-run --unverified-data) device=(--device cpu); fi
    mkdir -p "$out"
    { nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
      "$py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
      echo "commit ${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"; } > "$out/machine.txt"
    "$py" -m ccql_utils plan --budget-s "$budget" --data-root "$dest" --runs-dir "$runs" \
        "${extra[@]}" > "$out/plan.txt" 2>&1 || true
    rc=0
    "$py" -m ccql_utils lease --budget-s "$budget" --data-root "$dest" --runs-dir "$runs" \
        --output "$out" "${extra[@]}" "${device[@]}" "$@" 2>&1 | tee "$out/log.txt" || rc=$?
    exit "$rc"
    ;;
*) usage ;;
esac
