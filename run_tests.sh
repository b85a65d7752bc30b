#!/usr/bin/env bash
# Run the whole test suite (unit tests + notebooks under nbval at the tiny preset).
# Sets up ./.venv on first use (see scripts/ensure_env.sh). Extra arguments go to pytest.
# Tests that need the real CIFAR-100 read CCQL_DATA_ROOT and are skipped, visibly, without it.
set -uo pipefail
cd "$(dirname "$0")"
source scripts/ensure_env.sh || exit 1
echo "[tests] python: $PY; CCQL_DATA_ROOT=${CCQL_DATA_ROOT:-<unset: real-data tests skip>}" >&2
"$PY" -m pytest -ra --durations=20 "$@"  # the 20 slowest, to keep CI within its budget
status=$?
if [ "$status" -eq 5 ]; then
    echo "[tests] pytest collected no tests: failing on purpose" >&2
    exit 1
fi
exit "$status"
