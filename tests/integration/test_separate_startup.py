"""`stemforge separate` started as a real process imports only what it needs (no scipy.signal,
librosa, matplotlib, pandas, h5py or the web server's libraries), and ``import stemforge`` in a
fresh process loads neither torch nor h5py until an export is used. The Separator itself:
tests/unit/separate/test_separate.py."""

from __future__ import annotations


from stemforge.core import audio

from support.separate import _checkpoint


def test_the_separate_command_imports_only_what_it_needs(tmp_path, song44):
    """`stemforge separate` start-up: no scipy.signal (3 s of a 10 s run once), librosa,
    matplotlib, pandas, h5py or the web server's libraries."""
    import subprocess
    import sys

    ck = _checkpoint(tmp_path / "model.pt")
    song = audio.write(tmp_path / "song.wav", song44[0][:, :44100], 44100)
    code = (
        "import atexit, sys\n"
        "heavy = ('scipy.signal', 'librosa', 'matplotlib', 'pandas', 'h5py', 'fastapi', 'uvicorn', 'PIL', 'sklearn', 'numba')\n"
        "atexit.register(lambda: print('LOADED', sorted(m for m in heavy if m in sys.modules)))\n"
        "from stemforge.cli.main import main\n"
        f"sys.argv = ['stemforge', 'separate', {str(ck)!r}, {str(song)!r}, '-o', {str(tmp_path / 'out')!r}, '--device', 'cpu']\n"
        "main()\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert len(list((tmp_path / "out").rglob("vocals.wav"))) == 1
    assert "LOADED []" in res.stdout, res.stdout


def test_package_exports_are_lazy():
    """A fresh interpreter (a process: this process has torch loaded already)."""
    import subprocess
    import sys

    code = (
        "import sys, stemforge; assert 'torch' not in sys.modules and 'h5py' not in sys.modules; "
        "from stemforge import DataDir, Separator, SpectrogramConfig, TrainConfig; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
