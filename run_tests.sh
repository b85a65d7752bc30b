#!/usr/bin/env bash
# Run the whole test suite (unit tests + notebooks under nbval at the tiny preset).
# Sets up ./.venv on first use (see scripts/ensure_env.sh). Extra arguments go to pytest.
# Tests that need the real CIFAR-100 read CCQL_DATA_ROOT and are skipped, visibly, without it.
# With pytest-xdist (the test extra) the tests run in CCQL_TEST_WORKERS processes (default 2),
# then the Ray tests alone (tests/conftest.py says why); CCQL_TEST_WORKERS=1: one process.
set -uo pipefail
cd "$(dirname "$0")"
source scripts/ensure_env.sh || exit 1
echo "[tests] python: $PY; CCQL_DATA_ROOT=${CCQL_DATA_ROOT:-<unset: real-data tests skip>}" >&2
workers="${CCQL_TEST_WORKERS:-2}"
pytest=("$PY" -m pytest -ra --durations=20)  # the 20 slowest, to keep CI within its budget
if [ "$workers" -gt 1 ] && "$PY" -c "import xdist" 2>/dev/null; then
    CCQL_TESTS=parallel "${pytest[@]}" -n "$workers" "$@"; first=$?
    echo "[tests] the Ray tests, alone" >&2
    CCQL_TESTS=cluster "${pytest[@]}" "$@"; second=$?
    # 5 = nothing collected in that phase (e.g. a -k that names no Ray test): fine if the other ran
    if [ "$first" -eq 5 ] && [ "$second" -eq 5 ]; then status=5
    elif [ "$first" -ne 0 ] && [ "$first" -ne 5 ]; then status=$first
    elif [ "$second" -ne 0 ] && [ "$second" -ne 5 ]; then status=$second
    else status=0; fi
else
    "${pytest[@]}" "$@"; status=$?
fi
if [ "$status" -eq 5 ]; then
    echo "[tests] pytest collected no tests: failing on purpose" >&2
    exit 1
fi
exit "$status"
