"""--mask-power and --wiener-iterations of `separate`, `evaluate` and `serve`: each reaches the
Separator (the files equal the library's), the defaults (ratio mask at power 1.5, no Wiener
filter), and the usage errors. A two-net checkpoint of Spleeter's geometry with random weights:
what is checked is the plumbing, not the quality (docs/benchmarks.md, "Real music: MUSDB18")."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from stemforge.cli.main import app
from stemforge.core import audio
from stemforge.core.config import SpectrogramConfig
from stemforge.separate.separator import Separator

PLAIN = dataclasses.replace(SpectrogramConfig.preset("fullband"), normalization="none")
runner = CliRunner()


def _run(args: list) -> object:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def two_nets(tmp_path_factory) -> Path:
    from stemforge.model import UNet, UNetConfig
    from stemforge.model.checkpoint import save_nets_checkpoint

    nets = {
        t: UNet(UNetConfig.preset("spleeter", width=0.125, target=t, first_bin=0), generator=torch.Generator().manual_seed(i)).eval()
        for i, t in enumerate(("vocals", "accompaniment"))
    }
    return save_nets_checkpoint(tmp_path_factory.mktemp("model") / "two.pt", nets, PLAIN)


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    """refs/Song/{mixture,vocals,accompaniment}.wav: 3 s of 44.1 kHz stereo noise."""
    rng = np.random.default_rng(2)
    folder = tmp_path_factory.mktemp("refs") / "Song"
    folder.mkdir()
    n = 44100 * 3
    v = (0.3 * rng.standard_normal((n, 2)) * np.sin(np.linspace(0, 9, n))[:, None]).astype(np.float32)
    a = (0.2 * rng.standard_normal((n, 2))).astype(np.float32)
    for name, x in (("vocals", v), ("accompaniment", a), ("mixture", v + a)):
        sf.write(folder / f"{name}.wav", x, 44100, subtype="FLOAT")
    return folder / "mixture.wav"


def _separate(two_nets: Path, song: Path, out: Path, *options) -> tuple[np.ndarray, str]:
    r = _run(["separate", two_nets, song, "-o", out, "--device", "cpu", "--filename", "{stem}.{ext}", *options])
    assert r.exit_code == 0, r.output
    return audio.load(out / "vocals.wav")[0], r.output


def _library(two_nets: Path, song: Path, out: Path, **options) -> np.ndarray:
    sep = Separator.from_checkpoint(two_nets, device="cpu", **options)
    sep.separate_file(song, {"vocals": out / "lib_vocals.wav", "accompaniment": out / "lib_acc.wav"})
    return audio.load(out / "lib_vocals.wav")[0]


def test_separate_passes_mask_power_and_wiener_iterations_to_the_separator(two_nets, song, tmp_path):
    default, text = _separate(two_nets, song, tmp_path / "d")
    assert "mask: ratio mask of the two nets (power 1.5)" in text
    p2, text = _separate(two_nets, song, tmp_path / "p2", "--mask-power", "2")
    assert "(power 2)" in text
    w1, text = _separate(two_nets, song, tmp_path / "w1", "--wiener-iterations", "1")
    assert "(power 1), multichannel Wiener filter (1 EM iteration, 300-frame blocks)" in text
    np.testing.assert_array_equal(default, _library(two_nets, song, tmp_path, mask_power=1.5))
    np.testing.assert_array_equal(p2, _library(two_nets, song, tmp_path, mask_power=2.0))
    np.testing.assert_array_equal(w1, _library(two_nets, song, tmp_path, wiener_iterations=1))
    for a, b in ((default, p2), (default, w1), (p2, w1)):
        assert np.abs(a - b).max() > 1e-3  # each option changes the stems


@pytest.mark.parametrize(
    "options, message",
    [
        (["--hard-mask", "--wiener-iterations", "1"], "not with --hard-mask"),
        (["--mask-power", "0"], "above 0"),
        (["--mask-power", "20"], "at most 16"),
        (["--wiener-iterations", "-1"], "--wiener-iterations"),
    ],
)
def test_separate_refuses_bad_post_filter_options(two_nets, song, tmp_path, options, message):
    r = _run(["separate", two_nets, song, "-o", tmp_path / "x", "--device", "cpu", *options])
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert not (tmp_path / "x").exists()


def test_evaluate_scores_the_model_with_the_options_as_separate_writes_them(two_nets, song, tmp_path):
    refs = song.parent.parent
    est = tmp_path / "est"
    r = _run(["separate", two_nets, song, "-o", est, "--device", "cpu", "--wiener-iterations", "1"])
    assert r.exit_code == 0, r.output
    r = _run(["evaluate", two_nets, "--reference-dir", refs, "--estimates", est, "--compare", "-o", tmp_path / "e" / "r.csv",
              "--device", "cpu", "--wiener-iterations", "1"])
    assert r.exit_code == 0, r.output
    t = pd.read_csv(tmp_path / "e" / "r.csv").set_index(["method", "stem"])["sdr_frames"]
    np.testing.assert_allclose(t.loc["two"].sort_index().to_numpy(), t.loc["est"].sort_index().to_numpy(), atol=1e-3)
    r = _run(["evaluate", two_nets, "--reference-dir", refs, "-o", tmp_path / "d" / "r.csv", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    d = pd.read_csv(tmp_path / "d" / "r.csv").set_index(["method", "stem"])["sdr_frames"]
    assert np.abs(d.loc["two"].sort_index().to_numpy() - t.loc["two"].sort_index().to_numpy()).max() > 1e-3
    r = _run(["evaluate", two_nets, "--reference-dir", refs, "-o", tmp_path / "h" / "r.csv", "--hard-mask", "--wiener-iterations", "2"])
    assert r.exit_code == 2 and "not with --hard-mask" in r.output


def test_serve_builds_its_separator_with_the_options(two_nets, monkeypatch):
    import stemforge.serve as serve_pkg

    seen = {}

    class Stop(Exception):
        pass

    def fake_create_app(separator, settings, model_info=None):
        seen["separator"], seen["info"] = separator, model_info
        raise Stop

    monkeypatch.setattr(serve_pkg, "create_app", fake_create_app)
    r = _run(["serve", two_nets, "--port", "0", "--mask-power", "2.5", "--wiener-iterations", "2"])
    assert isinstance(r.exception, Stop), r.output
    sep = seen["separator"]
    assert sep.mask_power == 2.5 and sep.wiener_iterations == 2 and sep.batch_size == 1
    assert seen["info"]["post_filter"] == sep.post_filter
    r = _run(["serve", two_nets, "--port", "0"])
    assert isinstance(r.exception, Stop), r.output
    assert seen["separator"].mask_power == 1.5 and seen["separator"].wiener_iterations == 0
    r = _run(["serve", two_nets, "--mask-power", "-1"])
    assert r.exit_code == 2 and "--mask-power" in r.output
