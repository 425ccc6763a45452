"""Issue 16 item 1 in fresh processes: hostile decodes keep the peak memory of a process bounded,
and a server job on a 384 kHz upload keeps memory and files bounded. The bounds themselves:
tests/unit/core/test_reliability_decode.py."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import soundfile as sf


from support.reliability_decode import hostile_files, set_total_samples, write_flac


GB = 1 << 30


def peak_rss_growth(code: str, *args: str) -> tuple[float, str]:
    """Run ``code`` in a fresh interpreter (after its imports have settled, see ``BASE``); the
    growth of its peak RSS (VmHWM) in bytes, and its stdout."""
    script = (
        "import sys, gc\n"
        "def hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            return int(line.split()[1]) * 1024\n"
        "import numpy, soundfile, av, soxr\n"
        "from stemforge.core import audio\n"
        "from stemforge.serve.decode import decode_limited\n"
        "BASE = hwm()\n"
        f"{code}\n"
        "print('PEAK_GROWTH', hwm() - BASE)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    growth = [line for line in proc.stdout.splitlines() if line.startswith("PEAK_GROWTH")][-1]
    return float(growth.split()[1]), proc.stdout


def test_hostile_decodes_keep_peak_memory_bounded(tmp_path):
    """Every hostile file through every decode entry point, and streams stopped by the bounds,
    in a fresh process: its peak RSS grows by less than 1 GB (measured: a few MB)."""
    files = [str(p) for p, _ in hostile_files(tmp_path).values()]
    lying = str(set_total_samples(write_flac(tmp_path / "long_unknown.flac", 30.0, 384_000, channels=2), 0))
    code = (
        "from stemforge.core.errors import StemforgeError\n"
        "small = audio.DecodeLimits(max_seconds=5.0)\n"
        "for path in sys.argv[1:]:\n"
        "    for call in (lambda: audio.load(path), lambda: audio.load_mono(path),\n"
        "                 lambda: list(audio.decode_blocks(path)), lambda: audio.load(path, limits=small),\n"
        "                 lambda: decode_limited(path, 5.0)):\n"
        "        try:\n"
        "            call()\n"
        "            print('DECODED', path)\n"
        "        except StemforgeError as exc:\n"
        "            print('REFUSED', str(exc).splitlines()[0])\n"
    )
    growth, out = peak_rss_growth(code, *files, lying)
    refused = [line for line in out.splitlines() if line.startswith("REFUSED")]
    # every hostile file is refused by all five; the long stream by the two 5-second ones
    assert len(refused) == 5 * len(files) + 2, out
    assert growth < GB, growth
    print(f"peak RSS growth: {growth / 2**20:.1f} MB")


def test_serve_job_on_a_384khz_upload_keeps_memory_and_files_bounded(tmp_path):
    """The issue's upload: a small FLAC at 384 kHz stereo within the duration limit. Before, the job
    worked at 384 kHz (92 million samples per array for these 120 s, several arrays: GBs). Now it
    is resampled to the server's max_rate while decoded: the job's peak RSS grows by less than
    1 GB and its result files hold at most max_seconds x max_rate x channels samples."""
    path = tmp_path / "fast.flac"
    with sf.SoundFile(path, "w", 384_000, 2, "PCM_16") as f:  # 120 s, a click every 1000 samples
        block = np.zeros((384_000 * 10, 2), np.float32)
        block[::1000] = 0.01
        for _ in range(12):
            f.write(block)
    assert path.stat().st_size < 10 * 2**20
    code = (
        "from stemforge.serve.jobs import JobStore\n"
        "import time, json\n"
        "class StandIn:\n"
        "    def separate(self, a, sr):\n"
        "        return {'vocals': 0.25 * a, 'accompaniment': 0.75 * a}\n"
        "store = JobStore(sys.argv[2], StandIn(), max_seconds=900.0, max_rate=48000, max_channels=2)\n"
        "store.start()\n"
        "job_id, folder = store.reserve()\n"
        "import shutil; shutil.copy(sys.argv[1], folder / 'input.flac')\n"
        "store.submit(job_id, folder / 'input.flac', 'fast.flac')\n"
        "while store.get(job_id).state.value not in ('done', 'failed'): time.sleep(0.05)\n"
        "j = store.get(job_id)\n"
        "print('JOB', json.dumps({'state': j.state.value, 'rate': j.sample_rate, 'error': j.error,\n"
        "      'bytes': sum(p.stat().st_size for p in folder.iterdir())}))\n"
        "store.close()\n"
    )
    growth, out = peak_rss_growth(code, str(path), str(tmp_path / "work"))
    job = json.loads([line for line in out.splitlines() if line.startswith("JOB")][0][4:])
    assert job["state"] == "done" and job["rate"] == 48_000, job
    # three 16-bit WAVs of 120 s at 48 kHz stereo (the bound: max_seconds x 48 kHz x 2 x 2 bytes x 3)
    assert job["bytes"] < 3 * 120 * 48_000 * 2 * 2 + 3 * 4096, job
    assert growth < GB, growth
    print(f"job peak RSS growth: {growth / 2**20:.1f} MB, result files {job['bytes'] / 2**20:.1f} MB")
