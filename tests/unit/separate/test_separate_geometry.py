"""The Separator at model geometries other than the seed's: a fullband stereo model (44.1 kHz,
n_fft 4096, hop 1024, 1024 bins), Spleeter's layer order with its DC bin and plain magnitudes,
two nets combined by the ratio mask, channels mapped, geometries refused, non-finite output
refused. Random weights: what is checked is the arithmetic, not the separation quality (that is
tests/integration/test_realdata_separate.py's, with Spleeter's weights)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from stemforge.core import audio, dsp
from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import AudioError, CheckpointError, StemforgeError
from stemforge.separate.separator import RATIO_EPS, Separator, mask_at_power
from stemforge.synth.songs import synthesize_song
from stemforge.model.checkpoint import save_checkpoint, save_nets_checkpoint
from stemforge.model import UNet, UNetConfig, pad_frames

FULLBAND = SpectrogramConfig.preset("fullband")  # 44.1 kHz stereo, 4096 / 1024, max_mixture
PLAIN = dataclasses.replace(FULLBAND, normalization="none")  # Spleeter's magnitudes


def fullband_net(target: str = "vocals", seed: int = 1, width: float = 0.25) -> UNet:
    """The fullband stereo U-Net `train --preset fullband --width 0.25` trains (seed layer order,
    bins 1..1024), random weights."""
    cfg = UNetConfig(width=width, n_bins=1024, channels=2, patch_frames=512, target=target)
    return UNet(cfg, generator=torch.Generator().manual_seed(seed)).eval()


def spleeter_net(target: str = "vocals", seed: int = 2, width: float = 0.125) -> UNet:
    """Spleeter's layer order and geometry (bins 0..1023, DC included), random weights."""
    return UNet(UNetConfig.preset("spleeter", width=width, target=target, first_bin=0),
                generator=torch.Generator().manual_seed(seed)).eval()


@pytest.fixture(scope="module")
def song():
    """5 s synthetic 44.1 kHz stereo song, an odd length (not a multiple of the hop)."""
    s = synthesize_song(np.random.default_rng(3), 5.0, 44100, stereo=True)
    return s.mixture[:, : 44100 * 5 - 377].astype(np.float32)


def energy_db(diff: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(diff.astype(np.float64) ** 2) / np.sum(ref.astype(np.float64) ** 2)))


def direct_vocals(nets: dict, cfg: SpectrogramConfig, x: np.ndarray, first_bin: int, power: float = 1.5) -> np.ndarray:
    """The method written out on the model's own STFT: whole-song pass, mask at bins
    first_bin..first_bin+1023, two nets by the ratio mask at ``power`` (Spleeter's is 2,
    stemforge's default 1.5), zeros above, mask * STFT, iSTFT."""
    spec = dsp.stft(x, cfg)  # [2, n_frames, 2049]
    mag = np.abs(spec)
    norm = 1.0 if cfg.normalization == "none" else float(mag.max())
    feats = torch.from_numpy((mag[:, :, first_bin : first_bin + 1024] / norm).transpose(0, 2, 1).copy())[None]
    inp = pad_frames(feats)
    with torch.no_grad():
        out = {t: n(inp) for t, n in nets.items()}
    if len(out) == 2:
        v, a = (out["vocals"] * inp) ** power, (out["accompaniment"] * inp) ** power
        m = (v + RATIO_EPS / 2) / (v + a + RATIO_EPS)
    else:
        m = out["vocals"]
    m = m[0, :, :, : mag.shape[1]].numpy().transpose(0, 2, 1)
    mask = np.zeros_like(mag)
    mask[:, :, first_bin : first_bin + 1024] = m
    return dsp.istft(mask * spec, cfg, length=x.shape[-1])


def test_fullband_stereo_cli_writes_44k_stereo_stems_of_the_input_length_that_sum_to_it(tmp_path, song):
    from stemforge.cli.main import app

    net = fullband_net()
    ck = save_checkpoint(tmp_path / "fullband.pt", net, net.config, FULLBAND, "vocals", 3)
    src = audio.write(tmp_path / "tune.wav", song, 44100)
    r = CliRunner().invoke(app, ["separate", str(ck), str(src), "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "44100 Hz stereo, n_fft 4096" in r.output
    stems = {}
    for stem in ("vocals", "accompaniment"):
        data, rate = sf.read(str(tmp_path / "out" / "tune" / f"{stem}.wav"), dtype="float32", always_2d=True)
        assert rate == 44100 and data.shape == (song.shape[1], 2)
        stems[stem] = data.T
    x = audio.load(src)[0]
    assert energy_db(stems["vocals"] + stems["accompaniment"] - x, x) < -60
    v = stems["vocals"]
    assert 0.0 < np.sum(v**2) < np.sum(x**2)  # a real mask: neither nothing nor everything
    assert not np.allclose(v[0], v[1])  # one mask per channel


@pytest.mark.parametrize("kind", ["fullband", "spleeter-two-nets", "spleeter-two-nets-power-2", "spleeter-two-nets-power-1"])
def test_at_the_models_own_stft_the_mask_is_applied_as_the_net_gives_it(song, kind):
    power = {"spleeter-two-nets-power-2": 2.0, "spleeter-two-nets-power-1": 1.0}.get(kind)
    if kind == "fullband":
        nets, cfg, first_bin = {"vocals": fullband_net()}, FULLBAND, 1
        sep = Separator(nets["vocals"], cfg, "vocals", "cpu", window_frames=None, extension="zeros")
    else:
        nets = {t: spleeter_net(t, seed=i) for i, t in enumerate(("vocals", "accompaniment"))}
        cfg, first_bin = PLAIN, 0
        sep = Separator(nets, cfg, device="cpu", window_frames=None, extension="zeros", mask_power=power)
    assert sep.geometry.first_bin == first_bin and sep.geometry.top_bin == first_bin + 1023
    got = sep.separate(song, 44100)
    want = direct_vocals(nets, cfg, song, first_bin, 1.5 if power is None else power)
    assert energy_db(got["vocals"] - want, want) < -80
    if power is not None:  # the power matters: another one gives another mask
        other = direct_vocals(nets, cfg, song, first_bin, 1.5)
        assert energy_db(got["vocals"] - other, other) > -60
    assert energy_db(got["vocals"] + got["accompaniment"] - song, song) < -100


def test_two_net_ratio_mask_is_the_complement_for_the_accompaniment(song):
    nets = {t: spleeter_net(t, seed=i + 5) for i, t in enumerate(("vocals", "accompaniment"))}
    sep = Separator(nets, PLAIN, device="cpu", window_frames=None)
    mm = sep.model_mask(song)
    assert mm.values.shape == (2, PLAIN.n_frames(song.shape[1]), 1024 + 1)
    swapped = Separator({"vocals": nets["accompaniment"], "accompaniment": nets["vocals"]}, PLAIN, device="cpu",
                        window_frames=None, extension="zeros")
    m_sw = swapped.model_mask(song).mask  # the accompaniment's ratio mask
    np.testing.assert_allclose(mm.mask + m_sw, 1.0, atol=1e-5)
    assert 0.05 < float(mm.mask.mean()) < 0.95


class _Complement(torch.nn.Module):
    """``1 - net(x)``: the accompaniment net that one net implies."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.config = net.config  # the bins it sees

    def forward(self, x):
        return 1.0 - self.net(x)


def test_one_nets_mask_at_a_power_is_the_ratio_mask_of_the_net_and_its_complement(song):
    m = np.array([0.0, 0.2, 0.5, 0.8, 1.0], dtype=np.float32)
    assert mask_at_power(m, 1.0) is m
    np.testing.assert_allclose(mask_at_power(m, 0.5), [0.0, 1 / 3, 0.5, 2 / 3, 1.0], atol=1e-6)  # sqrt(.8) = 2 sqrt(.2)
    np.testing.assert_allclose(mask_at_power(1 - m, 3.0), 1 - mask_at_power(m, 3.0), atol=1e-6)
    net = fullband_net()
    plain = Separator(net, FULLBAND, "vocals", "cpu", window_frames=None)
    assert plain.mask_power == 1.0 and plain.post_filter == "the net's mask"
    soft = Separator(net, FULLBAND, "vocals", "cpu", window_frames=None, mask_power=0.5)
    assert soft.post_filter == "the net's mask at power 0.5"
    as_two = Separator({"vocals": net, "accompaniment": _Complement(net)}, FULLBAND, device="cpu", window_frames=None, mask_power=0.5)
    bins = slice(1, 1025)  # the net's bins; above them the extension of each mask
    m1, m_soft, m_two = (s.model_mask(song).values[..., bins] for s in (plain, soft, as_two))
    np.testing.assert_allclose(m_soft, mask_at_power(m1, 0.5), atol=1e-6)
    np.testing.assert_allclose(m_soft, m_two, atol=1e-6)
    assert np.abs(m_soft - m1).max() > 0.05  # the power changed the mask
    # a net read as an accompaniment net at the same power gives the complementary vocals
    acc = Separator(net, FULLBAND, "accompaniment", "cpu", window_frames=None, mask_power=0.5)
    np.testing.assert_allclose(acc.model_mask(song).values[..., bins], 1 - m_soft, atol=1e-6)
    got = soft.separate(song, 44100)
    assert energy_db(got["vocals"] + got["accompaniment"] - song, song) < -100


def test_window_plan_for_the_tf_same_net_shifts_by_64_frames():
    """Spleeter's TensorFlow 'same' padding (1 before, 2 after) over six stride-2 levels: the net
    is shift-equivariant for shifts of 64 frames, not for others, once a frame is farther from
    the input's edges than the net's reach (255 frames); so windows start at multiples of 64."""
    net = UNet(UNetConfig.preset("spleeter", width=0.125, n_bins=128, first_bin=0), torch.Generator().manual_seed(0)).eval()
    x = torch.rand(1, 2, 128, 1280, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = net(x)
        for shift, equal in ((64, True), (128, True), (32, False), (96, False)):
            s = 384 + shift
            part = net(x[..., s : s + 512])
            a, b = whole[..., s + 250 : s + 262], part[..., 250:262]
            assert bool(torch.allclose(a, b, atol=1e-5)) is equal, shift


#: A small stereo geometry with a net below its Nyquist (bins 0..127 of 129), like Spleeter's.
SMALL = SpectrogramConfig(sample_rate=8000, n_fft=256, hop_length=64, channels=2, normalization="none")


def small_nets(seed: int = 0) -> dict:
    return {t: UNet(UNetConfig.preset("spleeter", width=0.125, n_bins=128, first_bin=0, target=t),
                    torch.Generator().manual_seed(seed + i)).eval() for i, t in enumerate(("vocals", "accompaniment"))}


def test_windows_equal_the_whole_song_once_the_dropped_margin_covers_the_nets_reach():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 64 * 5000)) * 0.1).astype(np.float32)
    nets = small_nets()
    whole = Separator(nets, SMALL, device="cpu", window_frames=None).model_mask(x).values
    # overlap 1024: 256 frames dropped on each side, the net's reach
    win = Separator(nets, SMALL, device="cpu", window_frames=2048, overlap_frames=1024).model_mask(x).values
    assert np.abs(whole - win).max() < 1e-4
    # the default overlap (256: 64 dropped) is close, not equal: docs/separation.md gives the figures
    dflt = Separator(nets, SMALL, device="cpu", window_frames=2048).model_mask(x).values
    assert 1e-4 < np.abs(whole - dflt).max() < 0.5


def test_channels_are_mapped_mono_in_stereo_model_and_stereo_in_mono_model(song):
    net = fullband_net()
    sep = Separator(net, FULLBAND, "vocals", "cpu")
    mono = song.mean(axis=0)
    out1 = sep.separate(mono, 44100)
    assert out1["vocals"].shape == mono.shape
    dup = sep.separate(np.stack([mono, mono]), 44100)
    # a mono output gets the mean of the two channels' masks: by linearity, the mean of the stems
    np.testing.assert_allclose(out1["vocals"], dup["vocals"].mean(axis=0), atol=1e-5)
    with pytest.raises(StemforgeError, match="3 channels"):
        sep.separate(np.stack([mono, mono, mono]), 44100)
    # a mono fullband model downmixes a stereo input and puts one mask on both channels
    mono_net = UNet(UNetConfig(width=0.125, n_bins=1024, patch_frames=512), torch.Generator().manual_seed(4))
    msep = Separator(mono_net, dataclasses.replace(FULLBAND, channels=1), "vocals", "cpu")
    out = msep.separate(song, 44100)
    assert out["vocals"].shape == song.shape
    assert energy_db(out["vocals"] + out["accompaniment"] - song, song) < -100


def test_geometries_the_separator_cannot_apply_are_refused_at_load_in_one_line(tmp_path):
    net = fullband_net()
    # 1024 bins from bin 1 do not fit the seed's 513-bin STFT
    ck = save_checkpoint(tmp_path / "wrong.pt", net, net.config, SpectrogramConfig(channels=2), "vocals", 0)
    with pytest.raises(CheckpointError) as e:
        Separator.from_checkpoint(ck, device="cpu")
    msg = str(e.value)
    assert "\n" not in msg and "wrong.pt" in msg and "bins 1..1024" in msg and "0..512" in msg
    # Spleeter's bins 0..1023 fit a 4096-point STFT; 2048 bins from 1 do not
    wide = UNet(UNetConfig(width=0.125, n_bins=2112, channels=2))
    with pytest.raises(StemforgeError, match="bins 1..2112"):
        Separator(wide, FULLBAND, "vocals", "cpu")
    # channels the configuration does not have
    ck = save_checkpoint(tmp_path / "chan.pt", net, net.config, dataclasses.replace(FULLBAND, channels=1), "vocals", 0)
    with pytest.raises(CheckpointError, match="2 input channel"):
        Separator.from_checkpoint(ck, device="cpu")
    # two nets that see different bins
    other = spleeter_net("accompaniment")
    with pytest.raises(StemforgeError, match="different inputs"):
        Separator({"vocals": net, "accompaniment": other}, FULLBAND, device="cpu")
    with pytest.raises(StemforgeError, match="one per stem"):
        Separator({"vocals": net}, FULLBAND, device="cpu")


def test_two_net_checkpoint_separates_and_names_both_targets(tmp_path, song):
    from stemforge.cli.main import app

    nets = {t: spleeter_net(t, seed=i) for i, t in enumerate(("vocals", "accompaniment"))}
    ck = save_nets_checkpoint(tmp_path / "two.pt", nets, PLAIN)
    sep = Separator.from_checkpoint(ck, device="cpu")
    assert sep.target == "vocals+accompaniment" and set(sep.nets) == {"vocals", "accompaniment"}
    src = audio.write(tmp_path / "s.wav", song, 44100)
    r = CliRunner().invoke(app, ["separate", str(ck), str(src), "-o", str(tmp_path / "o"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "target vocals+accompaniment" in r.output
    v, rate = sf.read(str(tmp_path / "o" / "s" / "vocals.wav"), dtype="float32", always_2d=True)
    a, _ = sf.read(str(tmp_path / "o" / "s" / "accompaniment.wav"), dtype="float32", always_2d=True)
    assert rate == 44100 and v.shape == (song.shape[1], 2)
    assert energy_db((v + a).T - song, song) < -60


def test_non_finite_output_fails_the_file_and_writes_nothing(tmp_path, song):
    net = fullband_net()
    sep = Separator(net, FULLBAND, "vocals", "cpu")
    with torch.no_grad():
        sep._nets["vocals"].deconv6.bias.fill_(float("nan"))
    src = audio.write(tmp_path / "s.wav", song, 44100)
    out = tmp_path / "v.wav"
    with pytest.raises(AudioError) as e:
        sep.separate_file(src, {"vocals": out, "accompaniment": tmp_path / "a.wav"})
    assert "s.wav" in str(e.value) and "non-finite" in str(e.value)
    assert not out.exists() and not (tmp_path / "a.wav").exists()
    assert not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(StemforgeError, match="non-finite"):
        sep.separate(song, 44100)
