"""Spleeter's imported 2-stem U-Nets on a real excerpt ($STEMFORGE_REAL_DATA): the imported forward
pass equals the reference port's. The import on random patches and its refusals:
tests/unit/model/test_spleeter.py."""

from __future__ import annotations

import pytest
import torch

from stemforge.model.spleeter import SPLEETER_SPECTROGRAM

from support.spleeter import N_BINS, PATCH_FRAMES, TOLERANCE, _compare, needs_port


@needs_port
@pytest.mark.realdata
def test_forward_equals_the_reference_port_on_a_real_excerpt(ours, reference, real_data) -> None:
    """Inside Spleeter's 11 kHz band (its 1024 lowest bins of a 4096-point STFT at 44.1 kHz),
    on the patches the port itself cuts from a real mixture."""
    from stemforge.core import audio

    excerpts = sorted((real_data / "musdb18-excerpts").glob("*/mixture.mp3"))
    if not excerpts:
        pytest.skip(f"no musdb18-excerpts/*/mixture.mp3 under {real_data}")
    waveform, rate = audio.load(excerpts[0])
    assert rate == SPLEETER_SPECTROGRAM.sample_rate and waveform.shape[0] == 2
    # The port's features: torch.stft (Hann 4096, hop 1024, centred, zero padded), |.|, the lowest
    # 1024 bins, cut into 512-frame patches (zero-padded at the end) laid out [B, 2, T, F].
    spec = torch.stft(
        torch.from_numpy(waveform), n_fft=4096, hop_length=1024, window=torch.hann_window(4096),
        center=True, pad_mode="constant", return_complex=True,
    ).abs()[:, :N_BINS]
    n_frames = spec.shape[-1]
    spec = torch.nn.functional.pad(spec, (0, (-n_frames) % PATCH_FRAMES))
    patches = torch.stack(torch.split(spec, PATCH_FRAMES, dim=-1)).transpose(2, 3).contiguous()
    assert patches.shape[1:] == (2, PATCH_FRAMES, N_BINS) and patches.shape[0] >= 2
    worst = _compare(ours, reference, patches)
    assert max(worst.values()) < TOLERANCE, worst

