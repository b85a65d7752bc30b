# Sourced by run_all.sh and run_tests.sh: puts the Python to use in $PY.
# - Inside an active conda or virtual environment: use it (installing this package into it,
#   editable, if it is missing).
# - Otherwise: create ./.venv once with `pip install -e .[test,notebooks,cluster]`, and reuse it;
#   it is reinstalled when pyproject.toml changes.
# - Either way: registers the Jupyter kernel `ccql` ("Python (ccql)", this Python) in the
#   environment (ipykernel install --sys-prefix), the kernel the notebooks name, so that
#   `jupyter lab` from this environment opens them with it (so do plain `papermill` and the
#   nbval tests, which read the notebook's kernel; run_all.sh and `python -m ccql_utils
#   notebook` ask for kernel_name="python3" and work without it).
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_stamp_of() { sha256sum "$_root/pyproject.toml" | cut -d' ' -f1; }

if [ -n "${VIRTUAL_ENV:-}" ] || { [ -n "${CONDA_PREFIX:-}" ] && [ "${CONDA_DEFAULT_ENV:-base}" != "base" ]; }; then
    PY="$(command -v python)"
    if ! "$PY" -c "import ccql_utils, papermill, pytest" >/dev/null 2>&1; then
        echo "[env] installing ccql_utils into the active environment ($PY)" >&2
        "$PY" -m pip install -q -e "$_root[test,notebooks,cluster]" >&2 || return 1
    fi
else
    _venv="$_root/.venv"
    PY="$_venv/bin/python"
    if [ ! -x "$PY" ] || [ "$(cat "$_venv/.ccql-installed" 2>/dev/null)" != "$(_stamp_of)" ]; then
        echo "[env] setting up $_venv (pip install -e .[test,notebooks,cluster]; torch takes a few minutes the first time)" >&2
        # A venv cut off while being created (no pip yet) is made again rather than trusted.
        if [ ! -x "$PY" ] || ! "$PY" -m pip --version >/dev/null 2>&1; then
            python3 -m venv --clear "$_venv" || { echo "[env] python3 -m venv failed" >&2; return 1; }
        fi
        "$PY" -m pip install -q --upgrade pip >&2 || return 1
        # --no-compile: byte-compiling all of site-packages takes minutes, mostly for modules that
        # are never imported; Python compiles the modules actually imported on first use instead (below).
        "$PY" -m pip install -q --no-compile -e "$_root[test,notebooks,cluster]" >&2 || return 1
        _stamp_of > "$_venv/.ccql-installed"
    fi
    # The .venv is ours, so Python may keep the bytecode it compiles there. With
    # PYTHONDONTWRITEBYTECODE set (as CI environments often do) every process would compile torch
    # and the rest again (about twice the CPU time of `import torch` with bytecode kept),
    # and the tests and run_all.sh start dozens of Python processes (kernels, CLI runs, Ray workers).
    unset PYTHONDONTWRITEBYTECODE
fi
_kernel="$("$PY" -c 'import sys; print(sys.prefix)')/share/jupyter/kernels/ccql/kernel.json"
if ! grep -qF "\"$PY\"" "$_kernel" 2>/dev/null; then
    echo "[env] registering the Jupyter kernel 'ccql' (Python (ccql)) for $PY" >&2
    "$PY" -m ipykernel install --sys-prefix --name ccql --display-name "Python (ccql)" >/dev/null \
        || { echo "[env] ipykernel install failed (is ipykernel installed in $PY?)" >&2; return 1; }
fi
export PY
