"""Issue 16 item 1: every decode is bounded by samples, channels and rate, whatever the header says.

Fault classes (inputs made at test time, a few kB to a few MB each):

* a header that claims a huge length (a FLAC whose STREAMINFO says a day of audio at 16 kHz),
* an absurd rate: 1 Hz (a day of it is 86,400 samples and 1.4 billion once resampled to 16 kHz),
  655,350 Hz (FLAC's highest), or a legal but extreme 384 kHz,
* too many channels (a 16-channel WAV),
* a header that does not know its length (FLAC ``total_samples = 0``): decoded as a stream,
  within the same bounds, through ingest, separate and serve.

Each fails its own file in one line (ingest and separate go on with the rest of the batch and keep
what was stored before; serve answers 422 or fails the job), and a fresh process's peak RSS (VmHWM)
grows by less than 1 GB for each. Peak memory measured in fresh processes:
tests/integration/test_reliability_decode_memory.py."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from stemforge.cli.main import app
from stemforge.core import audio
from stemforge.core.errors import DecodeLimitError, StemforgeError
from stemforge.store.datadir import DataDir

from support.reliability_decode import hostile_files, set_total_samples, write_flac


# --------------------------------------------------------------------------- inputs


# --------------------------------------------------------------------------- the audio layer
def test_unknown_length_flac_decodes_as_a_stream(tmp_path):
    """libsndfile reads total_samples = 0 as 2**63 - 1 frames ('array is too big', 'psf_fseek()
    failed'); the audio layer decodes it through PyAV and every entry point gives the samples."""
    good = write_flac(tmp_path / "good.flac", 3.0, 44100, channels=2)
    unknown = set_total_samples(write_flac(tmp_path / "unknown.flac", 3.0, 44100, channels=2), 0)
    assert sf.info(str(unknown)).frames >= 1 << 62  # libsndfile's nonsense, checked
    inf = audio.info(unknown)
    assert (inf.sample_rate, inf.channels, inf.n_samples, inf.duration_s) == (44100, 2, 0, 0.0)
    ref, _ = audio.load(good)
    x, sr = audio.load(unknown)
    assert sr == 44100 and np.array_equal(x, ref)
    y, sr, ch = audio.load_mono(unknown)
    assert ch == 2 and np.allclose(y, ref.mean(axis=0), atol=1e-6)
    blocks = list(audio.decode_blocks(unknown, 1 << 14))
    assert np.array_equal(np.concatenate(blocks, axis=1), ref)
    # Within the same bounds: a stream is stopped by the counter, not by the header.
    with pytest.raises(DecodeLimitError, match="more than 1 s") as info:
        audio.load(unknown, limits=audio.DecodeLimits(max_seconds=1.0))
    assert info.value.bound == "seconds" and str(unknown) in str(info.value)


def test_limits_check_the_header_before_decoding(tmp_path):
    files = hostile_files(tmp_path)
    for name, (path, reason) in files.items():
        for decode in (audio.load, audio.load_mono, lambda p: list(audio.decode_blocks(p))):
            with pytest.raises(DecodeLimitError) as info:
                decode(path)
            text = str(info.value)
            assert reason in text and str(path) in text and "\n" not in text, (name, text)
    # The samples bound: what a whole decode allocates at the file's own rate.
    ok = write_flac(tmp_path / "ok.flac", 2.0, 48000, channels=2)
    with pytest.raises(DecodeLimitError, match="at most 100,000 are accepted") as info:
        audio.load(ok, limits=audio.DecodeLimits(max_values=100_000))
    assert info.value.bound == "samples"
    assert audio.load(ok)[0].shape == (2, 96000)
    with pytest.raises(StemforgeError):
        audio.DecodeLimits(min_rate=50_000, max_rate=48_000)


def test_header_that_understates_the_length_is_stopped_while_decoding(tmp_path):
    """A FLAC whose STREAMINFO says 1 s and whose frames hold 4: libsndfile stops at the header's
    count; PyAV-routed and blockwise decodes count what they decode (the meter)."""
    path = set_total_samples(write_flac(tmp_path / "lies.flac", 4.0, 16000), 0)
    limits = audio.DecodeLimits(max_seconds=2.0)
    got = []
    with pytest.raises(DecodeLimitError, match="more than 2 s"):
        for block in audio.decode_blocks(path, 4096, limits=limits):
            got.append(block.shape[1])
    assert 2 * 16000 - 4096 <= sum(got) <= 2 * 16000 + 4096


# --------------------------------------------------------------------------- ingest
def _csv(folder: Path, rows: list[tuple[Path, Path]]) -> Path:
    lst = folder / "songs.csv"
    lst.write_text("vocals,accompaniment\n" + "".join(f"{v},{a}\n" for v, a in rows))
    return lst


def test_ingest_fails_hostile_files_in_one_line_and_keeps_the_rest(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    good = [(write_flac(src / f"v{i}.flac", 2.0, 44100, freq=300 + 50 * i), write_flac(src / f"a{i}.flac", 2.0, 44100, freq=90)) for i in range(2)]
    data = tmp_path / "data"
    runner = CliRunner()
    first = runner.invoke(app, ["ingest", "csv", str(_csv(src, good[:1])), "--out", str(data), "--workers", "1"])
    assert first.exit_code == 0, first.output
    stored_before = DataDir.open(data).manifest.copy()
    files = hostile_files(tmp_path / "hostile")
    # Each hostile file as the vocals of its own track, next to a good accompaniment; plus a
    # track whose two files have an unknown length (decoded as streams, stored).
    unknown = [set_total_samples(write_flac(src / f"u{r}.flac", 2.0, 44100, freq=f), 0) for r, f in (("v", 500), ("a", 120))]
    rows = good + [(path, good[0][1]) for path, _ in files.values()] + [tuple(unknown)]
    result = runner.invoke(app, ["ingest", "csv", str(_csv(src, rows)), "--out", str(data), "--workers", "1"])
    assert result.exit_code == 1, result.output
    failed = [line for line in result.output.splitlines() if line.startswith("failed: ")]
    assert len(failed) == len(files), result.output
    for name, (path, reason) in files.items():
        assert [line for line in failed if path.name in line and reason in line], (name, failed)
    manifest = DataDir.open(data).manifest
    assert len(manifest) == 3  # the two good tracks and the unknown-length one
    assert set(stored_before["uid"]) <= set(manifest["uid"])
    row = manifest[manifest["source_path"].astype(str).str.contains("uv.flac")].iloc[0]
    assert abs(float(row["duration_s"]) - 2.0) < 0.01  # the duration from what was decoded
    assert int(row["source_sample_rate"]) == 44100


# --------------------------------------------------------------------------- separate
@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    import torch

    from stemforge.core.config import SpectrogramConfig
    from stemforge.model.checkpoint import save_checkpoint
    from stemforge.model import UNet, UNetConfig

    cfg = UNetConfig(width=0.125)
    model = UNet(cfg, generator=torch.Generator().manual_seed(1))
    return Path(save_checkpoint(tmp_path / "model.pt", model, cfg, SpectrogramConfig(), "vocals", 0))


def test_separate_fails_hostile_files_in_one_line_and_separates_the_rest(tmp_path, tiny_checkpoint):
    files = hostile_files(tmp_path / "hostile")
    good = write_flac(tmp_path / "good.flac", 2.0, 22050, channels=2)
    unknown = set_total_samples(write_flac(tmp_path / "unknown.flac", 2.0, 22050, channels=2), 0)
    inputs = [good, *(p for p, _ in files.values()), unknown]
    out = tmp_path / "sep"
    result = CliRunner().invoke(app, ["separate", str(tiny_checkpoint), *map(str, inputs), "-o", str(out)])
    assert result.exit_code == 1, result.output
    failed = [line for line in result.output.splitlines() if line.startswith("failed: ")]
    assert len(failed) == len(files), result.output
    for name, (path, reason) in files.items():
        assert [line for line in failed if path.name in line and reason in line], (name, failed)
        assert not (out / path.stem).exists() or not any((out / path.stem).iterdir())
    for song in (good, unknown):
        for stem in ("vocals", "accompaniment"):
            stem_path = next((out / song.stem).glob(f"{stem}.*"))
            i = sf.info(str(stem_path))
            assert (i.samplerate, i.channels, i.frames) == (22050, 2, 44100), (song, stem)


def test_separate_file_stops_a_stream_over_its_limits_and_leaves_nothing(tmp_path, tiny_checkpoint):
    from stemforge.separate.separator import Separator

    path = set_total_samples(write_flac(tmp_path / "long.flac", 6.0, 16000), 0)
    sep = Separator.from_checkpoint(tiny_checkpoint)
    outs = {"vocals": tmp_path / "o" / "v.wav", "accompaniment": tmp_path / "o" / "a.wav"}
    with pytest.raises(DecodeLimitError, match="more than 3 s"):
        sep.separate_file(path, outs, limits=audio.DecodeLimits(max_seconds=3.0))
    assert not any(p.exists() for p in outs.values())
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# --------------------------------------------------------------------------- serve
class StandIn:
    """vocals = 0.25 x mixture, accompaniment = 0.75 x mixture; records the rates it saw."""

    def __init__(self):
        self.rates: list[int] = []

    def separate(self, audio_: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        self.rates.append(sample_rate)
        return {"vocals": 0.25 * audio_, "accompaniment": 0.75 * audio_}


def _wait(client: TestClient, job_id: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = client.get(f"/api/jobs/{job_id}").json()
        if status["state"] in ("done", "failed"):
            return status
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def test_serve_refuses_hostile_uploads_and_bounds_the_rest(tmp_path):
    from stemforge.serve import ServeSettings, create_app

    files = hostile_files(tmp_path / "hostile")
    stand_in = StandIn()
    settings = ServeSettings(max_upload_mb=20, max_seconds=5.0, max_rate=48_000, max_channels=2, work_dir=tmp_path / "work")
    with TestClient(create_app(stand_in, settings, render_png=None), base_url="http://127.0.0.1") as client:
        info = client.get("/api/info").json()
        assert info["max_samples"] == 5 * 48_000 * 2 and info["max_rate"] == 48_000
        for name, (path, reason) in files.items():
            r = client.post("/api/jobs", files={"file": (path.name, path.read_bytes(), "audio/flac")})
            assert r.status_code == 422, (name, r.status_code, r.text)
            detail = r.json()["detail"]
            assert ("lasts" in detail or reason in detail) and "\n" not in detail and str(tmp_path) not in detail, detail
        # A legal song at 384 kHz: resampled to 48 kHz block by block while decoded.
        fast = write_flac(tmp_path / "fast.flac", 2.0, 384_000, channels=2)
        r = client.post("/api/jobs", files={"file": ("fast.flac", fast.read_bytes(), "audio/flac")})
        assert r.status_code == 202, r.text
        status = _wait(client, r.json()["id"])
        assert status["state"] == "done" and status["sample_rate"] == 48_000, status
        assert abs(status["duration_s"] - 2.0) < 1e-3
        wav = client.get(f"/api/jobs/{status['id']}/vocals.wav")
        path = tmp_path / "v.wav"
        path.write_bytes(wav.content)
        assert (sf.info(str(path)).samplerate, sf.info(str(path)).frames) == (48_000, 96_000)
        # Unknown length: decoded as a stream; within the limit it is separated, beyond it the
        # job fails in one line.
        for seconds, state in ((3.0, "done"), (8.0, "failed")):
            f = set_total_samples(write_flac(tmp_path / f"unknown{seconds:g}.flac", seconds, 16000), 0)
            r = client.post("/api/jobs", files={"file": (f.name, f.read_bytes(), "audio/flac")})
            assert r.status_code == 202, r.text
            status = _wait(client, r.json()["id"])
            assert status["state"] == state, status
            if state == "done":
                assert abs(status["duration_s"] - seconds) < 1e-3 and status["sample_rate"] == 16000
            else:
                assert status["error"] == "the song lasts more than 5 s, the most this server accepts", status
    assert 384_000 not in stand_in.rates


# --------------------------------------------------------------------------- memory
