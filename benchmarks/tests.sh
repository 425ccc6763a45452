#!/usr/bin/env bash
# How long the tests take (docs/benchmarks.md, "Tests"): the unit tests (the inner loop,
# `pytest -m "not integration" -q -n 2`), then the whole suite with its 25 slowest tests
# (`pytest -q -n 2 --durations=25`). Each prints the load average before and after, its wall time
# and the CPU time of pytest and its workers: on a shared machine the wall time follows the load,
# and CPU / cores is what the run needs of cores that are free.
#   STEMFORGE_REAL_DATA=$PWD/../shared/realdata bash benchmarks/tests.sh 2>&1 | tee /tmp/tests.log
#   bash benchmarks/tests.sh unit      # the unit tests only
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
export MPLBACKEND=Agg
TIMEFORMAT="=== wall %R s, CPU %U s user + %S s system"
load() { uptime | sed 's/.*load average/load average/'; }
timed() {
    echo; echo "=== pytest $* (before: $(load); $(nproc) cores)"
    time "$PY" -m pytest "$@"
    echo "=== exit $? (after: $(load))"
}
timed -m "not integration" -q -n 2 -p no:cacheprovider
[ "${1:-}" = unit ] || timed -q -n 2 -p no:cacheprovider --durations=25
