#!/usr/bin/env bash
# Run the whole test suite (unit tests + notebooks under nbval at the tiny preset).
# Sets up ./.venv on first use (see scripts/ensure_env.sh). Extra arguments go to pytest.
# Tests that need the real CIFAR-100 read CCQL_DATA_ROOT and are skipped, visibly, without it.
# With pytest-xdist (the test extra) the tests run in CCQL_TEST_WORKERS processes (default 2),
# beside the Ray tests, which start first; CCQL_TEST_WORKERS=1: one process.
set -uo pipefail
cd "$(dirname "$0")"
source scripts/ensure_env.sh || exit 1
echo "[tests] python: $PY; CCQL_DATA_ROOT=${CCQL_DATA_ROOT:-<unset: real-data tests skip>}" >&2
workers="${CCQL_TEST_WORKERS:-2}"
pytest=("$PY" -m pytest -ra --durations=20)  # the 20 slowest, to keep CI within its budget
if [ "$workers" -gt 1 ] && "$PY" -c "import xdist" 2>/dev/null; then
    # The Ray tests first, in the background: their cluster starts on an idle machine (Ray waits
    # a fixed 30 s for a node, which busy test processes on 2 cores can exceed), then it says so
    # in $ready and the other tests start beside them in $workers processes.
    ready="$(mktemp -u)"; ray_log="$(mktemp)"
    CCQL_TESTS=cluster CCQL_RAY_READY="$ready" "${pytest[@]}" "$@" >"$ray_log" 2>&1 &
    ray_pid=$!
    for _ in $(seq 480); do
        { [ -e "$ready" ] || ! kill -0 "$ray_pid" 2>/dev/null; } && break
        sleep 0.5
    done
    # worksteal: an idle worker takes queued tests from a busy one (the slowest take ~2 min).
    # nice: the Ray tests mostly wait on processes and were the last to end; given the CPU
    # whenever they can use it, they end earlier while these tests take what they leave.
    CCQL_TESTS=parallel nice -n 10 "${pytest[@]}" -n "$workers" --dist worksteal "$@"; first=$?
    wait "$ray_pid"; second=$?
    echo "[tests] the Ray tests (run beside the others, started first):" >&2
    cat "$ray_log"; rm -f "$ray_log" "$ready"
    # 5 = nothing collected in that process (e.g. a -k that names no Ray test): fine if the other ran
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
