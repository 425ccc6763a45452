#!/usr/bin/env bash
# Training throughput on one NVIDIA GPU, from a fresh machine (the repository copied there).
#
#   bash benchmarks/gpu.sh                 # everything: venv, torch, data, benchmark (< 8 min)
#   STEPS=500 bash benchmarks/gpu.sh       # longer timing
#   VENV=.venv DEVICE=cpu SONGS=3 SONG_SECONDS=8 STEPS=2 WIDTH=0.25 BATCH=8 bash benchmarks/gpu.sh
#                                          # dry run of the same commands on a CPU machine
#
# What it does, each phase timed:
#   1. prints nvidia-smi (fails early without an NVIDIA driver);
#   2. makes a venv (.venv-gpu; --system-site-packages so that a CUDA torch already installed
#      on the machine is reused), installs torch from PyPI when no CUDA torch is importable
#      (PyPI's Linux x86_64 wheels are CUDA builds), then this package (editable);
#   3. builds a synthetic DataDir: `stemforge synth` (DSD100 layout) + `stemforge ingest dsd100`;
#   4. runs benchmarks/train.py: the full-width U-Net, batch 64, fp32 and bf16, with the train
#      magnitudes resident in GPU memory and streamed from the shards by loader processes, each
#      next to the bare model step on in-memory tensors. Target: >= 15,000 patches/s on one H200
#      (bf16, resident).
#
# Environment: PYTHON (default python3), VENV (default .venv-gpu), WORK (default a temporary
# folder, removed at the end unless KEEP_WORK=1), SONGS (8), SONG_SECONDS (30), STEPS (300),
# PRECISIONS (fp32,bf16), MODES (memory,streaming), WIDTH (1), BATCH (64), WORKERS (loader
# processes; default the trainer's: cores/2, at most 8), TORCH_SPEC (pip requirement for torch,
# default "torch"), DEVICE (cuda; cpu for a dry run without a GPU). A venv that already imports
# torch (a CUDA one unless DEVICE=cpu) and stemforge is used as it is: nothing is installed.
set -euo pipefail

START=$(date +%s)
stamp() { echo "[gpu.sh +$(( $(date +%s) - START ))s] $*" >&2; }
fail() { stamp "FAILED: $*"; exit 1; }

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-gpu}
SONGS=${SONGS:-8}
SONG_SECONDS=${SONG_SECONDS:-30}
STEPS=${STEPS:-300}
PRECISIONS=${PRECISIONS:-fp32,bf16}
MODES=${MODES:-memory,streaming}
TORCH_SPEC=${TORCH_SPEC:-torch}
WIDTH=${WIDTH:-1}
BATCH=${BATCH:-64}
DEVICE=${DEVICE:-cuda}
if [ -n "${WORK:-}" ]; then mkdir -p "$WORK"; else WORK=$(mktemp -d -t stemforge-gpu-XXXXXX); fi
cleanup() { if [ "${KEEP_WORK:-0}" != 1 ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT

# -- 1. the GPU ---------------------------------------------------------------------------------
stamp "repository: $REPO; work folder: $WORK"
if [ "$DEVICE" = cpu ]; then
  stamp "DEVICE=cpu: dry run without a GPU"
else
  command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: no NVIDIA driver on this machine"
  nvidia-smi || fail "nvidia-smi failed"
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || true
fi
echo "CPU cores: $(nproc 2>/dev/null || echo '?')"

# -- 2. Python environment ----------------------------------------------------------------------
command -v "$PYTHON" >/dev/null || fail "$PYTHON not found (set PYTHON=...)"
"$PYTHON" --version
if [ ! -x "$VENV/bin/python" ]; then
  stamp "creating $VENV"
  "$PYTHON" -m venv --system-site-packages "$VENV" || fail "python -m venv failed (install python3-venv)"
fi
case "$VENV" in /*) PY="$VENV/bin/python" ;; *) PY="$REPO/$VENV/bin/python" ;; esac
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ "$DEVICE" = cpu ]; then NEED_CUDA=0; else NEED_CUDA=1; fi
torch_ok() { "$PY" -c "import sys, torch; sys.exit(0 if ($NEED_CUDA == 0 or torch.cuda.is_available()) else 1)" 2>/dev/null; }
if torch_ok; then
  stamp "torch already importable: $("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
else
  stamp "installing $TORCH_SPEC from PyPI (CUDA build; a few minutes)"
  timeout 420 "$PY" -m pip install -q "$TORCH_SPEC" || fail "pip install $TORCH_SPEC failed"
fi
if "$PY" -c "import stemforge.train.loop, stemforge.synth.layouts" 2>/dev/null; then
  stamp "stemforge already importable: $("$PY" -c 'import stemforge; print(stemforge.__file__)')"
else
  stamp "installing stemforge (editable) and its dependencies"
  if ! timeout 300 "$PY" -m pip install -q -e "$REPO"; then
    stamp "pip install -e failed; trying the source tree on PYTHONPATH with the packages already installed"
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
"$PY" - "$DEVICE" <<'PYEOF' || fail "the environment is not usable (see the error above)"
import sys
import torch
import stemforge.train.loop  # noqa: F401
if sys.argv[1] == "cpu":
    print(f"torch {torch.__version__} on the CPU ({torch.get_num_threads()} threads)")
else:
    assert torch.cuda.is_available(), "torch cannot see the GPU (CPU-only build or driver too old)"
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}) on "
          f"{torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
PYEOF

# -- 3. a synthetic DataDir ---------------------------------------------------------------------
CORES=$(nproc 2>/dev/null || echo 2)
INGEST_WORKERS=$(( CORES < 8 ? CORES : 8 ))
stamp "synthesizing $SONGS songs x $SONG_SECONDS s (DSD100 layout)"
"$PY" -m stemforge synth "$WORK/corpus" --layout dsd100 --songs "$SONGS" --seconds "$SONG_SECONDS" --seed 1
stamp "ingesting with $INGEST_WORKERS processes"
"$PY" -m stemforge ingest dsd100 "$WORK/corpus" --out "$WORK/data" --workers "$INGEST_WORKERS"

# -- 4. the benchmark ---------------------------------------------------------------------------
stamp "benchmark: U-Net width $WIDTH, batch $BATCH, $PRECISIONS x $MODES, $STEPS timed steps each, on $DEVICE"
EXTRA=()
if [ -n "${WORKERS:-}" ]; then EXTRA+=(--workers "$WORKERS"); fi
if [ "$DEVICE" = cpu ]; then WARMUP=1; else WARMUP=20; fi
"$PY" "$REPO/benchmarks/train.py" --data "$WORK/data" --device "$DEVICE" --width "$WIDTH" --batch-size "$BATCH" \
  --precision "$PRECISIONS" --modes "$MODES" --steps "$STEPS" --warmup "$WARMUP" ${EXTRA[@]+"${EXTRA[@]}"}
if [ "$DEVICE" != cpu ]; then nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv || true; fi
stamp "done in $(( $(date +%s) - START )) s"
