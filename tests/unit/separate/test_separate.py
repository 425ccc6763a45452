"""Separator: full-band output, the seed's 16 kHz path, windows without seams, streaming, CLI. What the
command imports, in a real process: tests/integration/test_separate_startup.py."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from stemforge.core import audio, dsp
from stemforge.core.errors import AudioError, CheckpointError, StemforgeError
from stemforge.separate.mapping import MaskMapper, ModelMask, output_stft_size
from stemforge.separate.masker import StreamingMasker
from stemforge.separate.separator import Separator
from stemforge.separate.windows import plan_windows, window_weights
from stemforge.synth.songs import synthesize_song
from stemforge.model import UNet, pad_frames

from support.separate import CFG, _checkpoint, tiny_model


@pytest.fixture(scope="module")
def song16():
    """20 s synthetic mono song at 16 kHz."""
    s = synthesize_song(np.random.default_rng(11), 20.0, 16000, stereo=False)
    return s.mixture[0], s.vocals[0], (s.drums + s.bass + s.other)[0]


def energy_db(diff: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(diff.astype(np.float64) ** 2) / np.sum(ref.astype(np.float64) ** 2)))


def seed_output(model: UNet, mono16: np.ndarray, hard: bool = False) -> np.ndarray:
    """The seed's method written out directly: librosa STFT, max normalization, whole-song U-Net
    pass, DC mask 0, mask * STFT with the mixture phase, librosa iSTFT."""
    spec = dsp.stft(mono16, CFG)
    mag = np.abs(spec)
    x = torch.from_numpy((mag[:, 1:] / mag.max()).T.copy())[None, None]
    with torch.no_grad():
        m = model.eval()(pad_frames(x))[0, 0, :, : mag.shape[0]].numpy().T
    mask = np.zeros_like(mag)
    mask[:, 1:] = m
    if hard:
        mask = (mask > 0.5).astype(np.float32)
    return dsp.istft(mask * spec, CFG, length=len(mono16))


def test_fullband_stereo_keeps_rate_channels_and_sums_to_input(song44):
    mix, _, _ = song44
    seen: list[float] = []
    out = Separator(tiny_model(), CFG, device="cpu").separate(mix, 44100, progress=seen.append)
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    assert out["vocals"].shape == mix.shape == out["accompaniment"].shape
    assert out["vocals"].dtype == np.float32
    # vocals + accompaniment == input within -60 dB (in practice float rounding, about -140 dB)
    assert energy_db(out["vocals"] + out["accompaniment"] - mix, mix) < -60
    # ... and the split is not trivial: both stems carry real energy, neither is the input
    for stem in ("vocals", "accompaniment"):
        assert -30 < energy_db(out[stem], mix) < 0
    # full band: the vocals keep content above 8 kHz (the mask is extended there)
    spec = np.abs(np.fft.rfft(out["vocals"][0]))
    freqs = np.fft.rfftfreq(out["vocals"].shape[1], 1 / 44100)
    mix_spec = np.abs(np.fft.rfft(mix[0]))
    assert spec[freqs > 9000].sum() > 0.01 * mix_spec[freqs > 9000].sum()


def test_16k_mono_reproduces_the_seed(song44):
    mix, _, _ = song44
    model = tiny_model()
    mono16 = audio.resample(audio.to_mono(mix), 44100, 16000)
    for hard in (False, True):
        sep = Separator(model, CFG, device="cpu", hard_mask=hard)
        out = sep.separate(mix, 44100, output_sample_rate=16000, mono=True)
        assert out["vocals"].shape == (1, len(mono16))
        ref = seed_output(model, mono16, hard)
        assert np.max(np.abs(out["vocals"][0] - ref)) < 1e-5 * np.max(np.abs(ref)) + 1e-7
        assert np.allclose(out["vocals"][0] + out["accompaniment"][0], mono16, atol=1e-6)
    # 1-D input gives 1-D output
    one = Separator(model, CFG, device="cpu").separate(mono16, 16000)
    assert one["vocals"].ndim == 1 and np.allclose(one["vocals"], seed_output(model, mono16), atol=1e-5)


def test_accompaniment_checkpoint_gives_one_minus_its_mask(song16):
    mix = song16[0][: 16000 * 5]
    m_voc = Separator(tiny_model("vocals", 3), CFG, "vocals", "cpu").estimate_mask(mix)
    acc_model = tiny_model("accompaniment", 3)  # same weights, other target
    m_acc = Separator(acc_model, CFG, "accompaniment", "cpu").estimate_mask(mix)
    assert np.all(m_voc[:, 0] == 0) and np.all(m_acc[:, 0] == 0)  # DC to the accompaniment
    assert np.allclose(m_acc[:, 1:], 1.0 - m_voc[:, 1:], atol=1e-6)


def test_windows_cover_with_weights_summing_to_one():
    for n, window, overlap in [(1000, 192, 64), (626, 192, 64), (100, 128, 64), (5000, 2048, 256), (2049, 2048, 256)]:
        wins = plan_windows(n, window, overlap)
        assert all(s % 64 == 0 for s, _ in wins) and wins[-1][1] >= n
        total = np.zeros(wins[-1][1])
        for (s, e), w in zip(wins, window_weights(wins, overlap if len(wins) > 1 else 0)):
            assert len(w) == e - s
            total[s:e] += w
        assert np.allclose(total, 1.0)
    assert plan_windows(300, None, 0) == [(0, 320)]


def test_windowed_mask_has_no_seams(song16):
    mix = song16[0]
    model = tiny_model()
    windowed = Separator(model, CFG, device="cpu", window_frames=192, overlap_frames=64)
    whole = Separator(model, CFG, device="cpu", window_frames=None)
    assert len(plan_windows(CFG.n_frames(len(mix)), 192, 64)) >= 4
    a, b = windowed.separate(mix, 16000), whole.separate(mix, 16000)
    mid = slice(16000, len(mix) - 16000)
    assert energy_db(a["vocals"][mid] - b["vocals"][mid], b["vocals"][mid]) < -50
    # a different model of the windows changes the output: the comparison can fail
    other = Separator(tiny_model(seed=2), CFG, device="cpu", window_frames=None).separate(mix, 16000)
    assert energy_db(other["vocals"][mid] - b["vocals"][mid], b["vocals"][mid]) > -30


def test_blockwise_fullband_equals_librosa_istft(song44):
    mix, _, _ = song44
    x = mix[0]
    rng = np.random.default_rng(0)
    n16 = CFG.n_frames(audio.resample(x, 44100, 16000).shape[0])
    values = rng.uniform(0, 1, size=(n16, CFG.n_bins + 1)).astype(np.float32)
    n_fft, hop = output_stft_size(44100, CFG)
    assert (n_fft, hop) == (4096, 1024)
    mapper = MaskMapper(ModelMask(values, CFG, 1.0), 44100, n_fft, hop)
    outs = []
    for block in (997, 50000, len(x)):
        sm = StreamingMasker(mapper, 1)
        parts = [sm.push(x[None, i : i + block])[1] for i in range(0, len(x), block)]
        parts.append(sm.finish()[1])
        outs.append(np.concatenate(parts, axis=1)[0])
    assert all(len(o) == len(x) for o in outs)
    assert np.max(np.abs(outs[0] - outs[2])) < 1e-6 and np.max(np.abs(outs[1] - outs[2])) < 1e-6
    import librosa

    spec = librosa.stft(x, n_fft=n_fft, hop_length=hop)
    ref = librosa.istft(mapper.rows(0, spec.shape[1]).T * spec, n_fft=n_fft, hop_length=hop, length=len(x))
    assert np.max(np.abs(outs[2] - ref)) < 1e-5


def test_mask_mapping_interpolates_and_extends_the_top_band():
    n16 = 40
    values = np.zeros((n16, CFG.n_bins + 1), dtype=np.float32)
    values[:, :-1] = np.linspace(0, 1, CFG.n_bins)[None, :]  # mask rises with frequency
    values[:, -1] = 0.25  # top-band value
    mapper = MaskMapper(ModelMask(values, CFG, 1.0), 44100, 4096, 1024)
    rows = mapper.rows(0, 10)
    freqs = np.arange(rows.shape[1]) * 44100 / 4096
    low = freqs <= 7400
    assert np.allclose(rows[:, low], (freqs[low] / 8000)[None, :], atol=1e-4)  # bilinear below 7.5 kHz
    assert np.allclose(rows[:, freqs >= 8000], 0.25)  # extended above the model's band
    mid = (freqs > 7500) & (freqs < 8000)
    assert np.all((rows[:, mid] <= 0.94) & (rows[:, mid] >= 0.25))  # joined linearly in between
    # constant masks stay constant whatever the grid; hard masks are binary
    values[:] = 0.7
    for rate in (8000, 22050, 44100, 48000):
        n_fft, hop = output_stft_size(rate, CFG)
        assert np.allclose(MaskMapper(ModelMask(values, CFG, 1.0), rate, n_fft, hop).rows(0, 50), 0.7)
    hard = MaskMapper(ModelMask(values, CFG, 1.0), 44100, 4096, 1024, hard_mask=True).rows(0, 5)
    assert set(np.unique(hard)) == {1.0}


def test_oracle_mask_fullband_matches_16k(song44):
    mix, voc, acc = song44
    v16 = audio.resample(audio.to_mono(voc), 44100, 16000)
    a16 = audio.resample(audio.to_mono(acc), 44100, 16000)
    V, A = np.abs(dsp.stft(v16, CFG)), np.abs(dsp.stft(a16, CFG))
    irm = V / np.maximum(V + A, 1e-12)
    sep = Separator.from_mask_fn(lambda _x: irm, CFG)
    full = sep.separate(mix, 44100)
    low = sep.separate(audio.resample(audio.to_mono(mix), 44100, 16000), 16000)
    full16 = audio.resample(audio.to_mono(full["vocals"]), 44100, 16000)
    snr_full = -energy_db(full16 - v16, v16)
    snr_low = -energy_db(low["vocals"] - v16, v16)
    assert snr_low > 10  # the oracle separates
    assert abs(snr_full - snr_low) < 1.0


def test_silence_and_bad_input():
    sep = Separator(tiny_model(), CFG, device="cpu")
    out = sep.separate(np.zeros((2, 44100), np.float32), 44100)
    assert not np.any(out["vocals"]) and not np.any(out["accompaniment"])
    with pytest.raises(StemforgeError):
        sep.separate(np.full(1000, np.nan, np.float32), 16000)
    with pytest.raises(StemforgeError):
        sep.separate(np.zeros((1, 2, 100), np.float32), 16000)
    with pytest.raises(StemforgeError):
        sep.separate(np.zeros(100, np.int16), 16000)
    with pytest.raises(StemforgeError):
        sep.separate(np.zeros(100, np.float32), 0)
    with pytest.raises(StemforgeError):
        Separator(tiny_model(), CFG, device="cpu", window_frames=100)
    with pytest.raises(StemforgeError):
        Separator(tiny_model(), CFG, device="cpu", window_frames=128, overlap_frames=128)
    with pytest.raises(StemforgeError):
        Separator.from_mask_fn(lambda x: np.zeros((3, 3)), CFG).separate(np.ones(16000, np.float32), 16000)


def test_separate_file_streams_like_in_memory(tmp_path, song44):
    mix, _, _ = song44
    src = audio.write(tmp_path / "song.wav", mix, 44100)
    sep = Separator(tiny_model(), CFG, device="cpu")
    outs = {"vocals": tmp_path / "o" / "vocals.wav", "accompaniment": tmp_path / "o" / "accompaniment.wav"}
    seen = []
    res = sep.separate_file(src, outs, block_samples=10007, progress=seen.append)
    assert res.sample_rate == 44100 and res.channels == 2 and res.n_samples == mix.shape[1]
    assert seen[-1] == 1.0 and res.speed > 0
    v, sr = audio.load(outs["vocals"])
    a, _ = audio.load(outs["accompaniment"])
    ref = sep.separate(mix, 44100)
    assert sr == 44100 and v.shape == mix.shape
    assert np.max(np.abs(v - ref["vocals"])) < 1e-5
    assert energy_db(v + a - mix, mix) < -60
    assert not list((tmp_path / "o").glob(".*tmp"))  # no temporary files left
    # the seed's output from a file, and flac
    res16 = sep.separate_file(src, {"vocals": tmp_path / "v16.flac"}, output_sample_rate=16000, mono=True)
    info = sf.info(str(tmp_path / "v16.flac"))
    assert (info.samplerate, info.channels, res16.channels) == (16000, 1, 1)
    with pytest.raises(AudioError):
        sep.separate_file(tmp_path / "missing.wav", outs)
    with pytest.raises(AudioError):
        sep.separate_file(src, {"vocals": tmp_path / "v.mp3"})


def test_from_checkpoint(tmp_path, song44):
    ck = _checkpoint(tmp_path / "model.pt", "accompaniment")
    sep = Separator.from_checkpoint(ck, device="cpu", hard_mask=True)
    assert sep.target == "accompaniment" and sep.hard_mask and str(sep.device) == "cpu"
    assert sep.checkpoint.step == 0
    out = sep.separate(song44[0][:, :44100], 44100)
    assert energy_db(out["vocals"] + out["accompaniment"] - song44[0][:, :44100], song44[0][:, :44100]) < -60
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        Separator.from_checkpoint(tmp_path / "bad.pt", device="cpu")


def test_cli_separate(tmp_path, song44):
    from stemforge.cli.main import app

    runner = CliRunner()
    ck = _checkpoint(tmp_path / "model.pt")
    one = audio.write(tmp_path / "one.wav", song44[0][:, : 44100 * 2], 44100)
    two = audio.write(tmp_path / "two.flac", song44[0][:, 44100 : 44100 * 3] * 0.5, 44100)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    outdir = tmp_path / "sep"
    args = ["separate", str(ck), str(one), str(bad), str(two), "-o", str(outdir), "--device", "cpu"]
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    assert "broken.wav" in r.output and "failed" in r.output
    for track in ("one", "two"):
        for stem in ("vocals", "accompaniment"):
            assert (outdir / track / f"{stem}.wav").is_file()
    assert "separated 2 of 3 files" in r.output
    # no overwriting without --force
    r = runner.invoke(app, ["separate", str(ck), str(one), "-o", str(outdir), "--device", "cpu"])
    assert r.exit_code == 1 and "exists" in r.output
    r = runner.invoke(
        app,
        ["separate", str(ck), str(one), "-o", str(outdir), "--device", "cpu", "--force", "--sample-rate", "16000", "--mono",
         "--format", "flac", "--filename", "{stem}-{track}.{ext}"],
    )
    assert r.exit_code == 0, r.output
    info = sf.info(str(outdir / "vocals-one.flac"))
    assert (info.samplerate, info.channels) == (16000, 1)
    # a template without {stem} is a usage error; a bad checkpoint is fatal (exit 3)
    r = runner.invoke(app, ["separate", str(ck), str(one), "--filename", "{track}.{ext}"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["separate", str(tmp_path / "nope.pt"), str(one), "-o", str(outdir)])
    assert r.exit_code == 3 and "nope.pt" in r.output
    assert "Example: stemforge separate" in runner.invoke(app, ["separate", "--help"]).output


def test_separator_and_page_pictures_use_the_one_stft(monkeypatch, tmp_path, song44):
    """Every frame the Separator (mask features, full band) and the page's spectrogram compute
    comes from dsp.stft_frames: no framing of their own."""
    from stemforge.separate import masker, separator
    from stemforge.serve import jobs, outputs

    calls: list[int] = []
    real = dsp.stft_frames

    def counting(x, start, stop, n_fft, *args, **kwargs):
        calls.append(n_fft)
        return real(x, start, stop, n_fft, *args, **kwargs)

    monkeypatch.setattr(dsp, "stft_frames", counting)
    Separator(tiny_model(), CFG, device="cpu").separate(song44[0][:, :44100 * 2], 44100)
    assert 1024 in calls and 4096 in calls  # the model's STFT and the 44.1 kHz output STFT
    calls.clear()
    outputs.spectrogram_png(song44[0][0, :44100], 44100, tmp_path / "p.png")
    assert calls
    for module in (separator, masker, jobs, outputs):
        assert not {"frame_spectra", "_window", "_rfft", "_irfft", "_decode_blocks", "_Resampler", "_StemWriter"} & set(vars(module))
