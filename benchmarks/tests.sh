#!/usr/bin/env bash
# How long the tests take (docs/benchmarks.md, "Tests"): the unit tests (the inner loop,
# `pytest -m "not integration" -q -n 2`), then the whole suite with its 25 slowest tests
# (`pytest -q -n 2 --durations=25`), each with the load average before and after and its wall time.
#   STEMFORGE_REAL_DATA=$PWD/../shared/realdata bash benchmarks/tests.sh 2>&1 | tee /tmp/tests.log
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
export MPLBACKEND=Agg
load() { uptime | sed 's/.*load average/load average/'; }
timed() {
    echo; echo "=== $* (before: $(load); $(nproc) cores)"
    local start=$(date +%s.%N)
    "$PY" -m pytest "$@"
    local rc=$?
    echo "=== wall $(echo "$(date +%s.%N) - $start" | bc) s, exit $rc (after: $(load))"
}
timed -m "not integration" -q -n 2 -p no:cacheprovider
timed -q -n 2 -p no:cacheprovider --durations=25
