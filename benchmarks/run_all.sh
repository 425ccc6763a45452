#!/usr/bin/env bash
# Runs every CPU benchmark one after the other (the figures in docs/benchmarks.md), printing the
# load average before each so that a noisy run can be told apart. ~15 minutes on 2 cores.
#   bash benchmarks/run_all.sh 2>&1 | tee /tmp/benchmarks.log
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
run() { echo; echo "=== $* ($(uptime | sed 's/.*load average/load average/'))"; "$PY" "$@"; }
run benchmarks/ingest.py --songs 4 --seconds 180
run benchmarks/recipes.py --songs 3 --seconds 60 --rounds 2
run benchmarks/synth.py --repeats 5
run benchmarks/pairs.py --minutes 4 --repeat 5
run benchmarks/augment.py --songs 8 --seconds 60 --remix-hours 1 --workers 2
run benchmarks/loader.py --seconds 4
run benchmarks/train.py --device cpu --width 0.25 --batch-size 64 --steps 10 --rounds 3 --threads 1 --workers 1
run benchmarks/separate.py
run benchmarks/separate.py --memory --minutes 30
run benchmarks/serve_load.py --uploads 20 --jobs 2 --seconds 5
