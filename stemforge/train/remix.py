"""Fresh remixes: every training example remixed at its step from the stored waveforms.

``stemforge train --remix fresh`` draws each example of step ``s`` from the ``train`` rows'
stored waveforms (``wave_vocals``, ``wave_accompaniment`` of the shards, held in RAM):

* with probability ``remix_aligned`` an **aligned original**: one track's vocals and
  accompaniment at the same crop, no gain: exactly a stored crop (frames ``[f, f + P)`` of the
  track's global frame grid, divided by the track's stored ``norm``), ``f`` uniform over the
  stored crops of the track;
* otherwise a **remix**: the vocals of one track and the accompaniment of an independently drawn
  track (the same track at another offset included: Huang et al.'s circular shift, generalized),
  each at a uniformly drawn *sample* offset among those whose crop lies on the track as a stored
  crop would (``[0, (n_frames - P) * hop]``), the vocals times ``10 ** (g / 20)``,
  ``g ~ U(-remix_gain_db, +remix_gain_db)`` (the accompaniment unchanged: ``augment``'s rule).
  With ``remix_pitch > 0`` each of the two stems is then played at its own speed ``r = 2 ** (u
  / 12)``, ``u ~ U(-remix_pitch, +remix_pitch)`` semitones: the crop's samples are read at steps
  of ``r`` from its offset (``scipy.signal.resample_poly`` by ``PITCH_GRID / round(PITCH_GRID *
  r)``, so ``r`` is a multiple of ``1 / PITCH_GRID``), which moves pitch and tempo together, as
  another singer or song would (the seed's pitch-shift and time-stretch, in one step).
  Its magnitudes are those ``augment`` would store for a one-crop remix track: divided by the
  maximum of the crop's own mixture magnitude (``normalization="max_mixture"``; the plain
  ``|STFT|`` under ``"none"``).

Tracks are drawn with probability proportional to their stored frames. A crop's frames are the
DataDir's STFT (its window, ``n_fft``, hop, centring: frame ``k`` centred on sample ``a + k *
hop``, zeros outside the track), the mixture is ``vocals + accompaniment`` (what ``augment``
and the evaluation take; a recipe that stored another mixture is not reproduced). The result is
cut to the model's bins and laid out as the other sources give it (float16-rounded,
``[batch, channels, n_bins, P]``), so a model cannot tell a fresh aligned example from a stored
crop (``tests/unit/train/test_remix_source.py``: equal to the stored magnitudes to float16 rounding).

Every draw of step ``s`` comes from ``numpy.random.default_rng(step_seed_sequence(seed, rank,
s, STREAM_REMIX))``: a pure function of the run's seed and the step, so a resumed run draws what
the uninterrupted one would have, and no global random state is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from stemforge.core import dsp
from stemforge.core.errors import StemforgeError
from stemforge.store.crops import TrackList
from stemforge.train.layout import model_bins, to_model_layout
from stemforge.train.resident import resident_fits
from stemforge.train.sampling import step_seed_sequence

if TYPE_CHECKING:  # pragma: no cover
    from stemforge.store import DataDir

#: The SeedSequence stream of the remix draws (0: crops, 1: dropout).
STREAM_REMIX = 2
#: A pitch change's speed is a multiple of ``1 / PITCH_GRID`` (0.3-0.6 semitones apart within an
#: octave): a small resampling ratio keeps ``resample_poly``'s filter short.
PITCH_GRID = 32


class RemixBatches:
    """Batches of fresh remixes of the train split (see the module docstring).

    Args:
        datadir: the DataDir; its ``train`` rows (with stored waveforms) are read into RAM.
        target: ``vocals`` or ``accompaniment``.
        batch_size, seed, rank: the run's.
        device: where the batches go (float32).
        patch_frames: frames per crop ``P``.
        aligned: probability of an aligned original; gain_db: the vocal gain's half range (dB).
        pitch: the half range of each remixed stem's pitch change (semitones; 0: none).
        first_bin, n_bins: the model's bins (:func:`~stemforge.train.layout.model_bins`).
        plain: the plain ``|STFT|`` (no division: a model trained on normalization "none").
        progress: ``progress(done, total)`` while the waveforms are read (tracks).

    Raises:
        StemforgeError: no train rows, or their waveforms would take more than half the RAM.
    """

    def __init__(self, datadir: "DataDir", target: str, batch_size: int, seed: int, rank: int,
                 device: torch.device, patch_frames: int, aligned: float, gain_db: float,
                 first_bin: int = 1, n_bins: int | None = None, plain: bool = False,
                 progress: Callable[[int, int], None] | None = None, pitch: float = 0.0):
        self.config = config = datadir.config
        self.target = target
        self.batch_size = int(batch_size)
        self.seed, self.rank = int(seed), int(rank)
        self.device = torch.device(device)
        self.patch_frames = int(patch_frames)
        self.aligned = float(aligned)
        self.gain_db = float(gain_db)
        self.pitch = float(pitch)
        self.first_bin, self.n_bins = model_bins(config.n_bins, first_bin, n_bins)
        rows = datadir.select(split="train")
        self.tracks = TrackList.from_rows(rows)
        if len(self.tracks) == 0:
            raise StemforgeError(f"{datadir.path}: no train rows to remix")
        keep = rows["n_frames"].astype("int64").to_numpy() > 0
        self.norms = rows["norm"].astype("float64").to_numpy()[keep].astype(np.float32)
        self.plain = plain or config.normalization == "none"
        if self.plain:
            self.norms = np.ones_like(self.norms)
        # the two float32 waveforms of every track (a frame per hop of samples)
        nbytes = int(self.tracks.n_frames.sum()) * config.hop_length * config.channels * 4 * 2
        fits, why = resident_fits(nbytes, torch.device("cpu"))
        if not fits:
            raise StemforgeError(f"--remix fresh holds the train split's waveforms in RAM: {why}")
        reader = datadir.reader()
        self.vocals: list[np.ndarray] = []
        self.accompaniment: list[np.ndarray] = []
        try:
            for i in range(len(self.tracks)):
                if progress is not None:
                    progress(i, len(self.tracks))
                shard, key = self.tracks.shards[i], self.tracks.keys[i]
                self.vocals.append(_channels_first(reader.read_wave(shard, key, "vocals")))
                self.accompaniment.append(_channels_first(reader.read_wave(shard, key, "accompaniment")))
        finally:
            reader.close()
        if progress is not None:
            progress(len(self.tracks), len(self.tracks))
        frames = self.tracks.n_frames.astype(np.float64)
        self.p = frames / frames.sum()
        self.window = dsp.window(config)
        hop, n_fft = config.hop_length, config.n_fft
        #: samples of one crop's STFT input: frames k = 0..P-1 centred on a + k * hop
        self.span = (self.patch_frames - 1) * hop + n_fft
        self.lead = n_fft // 2 if config.center else 0

    @property
    def channels(self) -> int:
        return self.config.channels

    def _segment(self, x: np.ndarray, a: int, length: int | None = None) -> np.ndarray:
        """Samples ``[a - lead, a - lead + length)`` of ``x [channels, n]`` (``length``: the
        crop's ``span`` unless given), zeros outside."""
        length = self.span if length is None else length
        lo = a - self.lead
        hi = lo + length
        n = x.shape[-1]
        if lo >= 0 and hi <= n:
            return x[:, lo:hi]
        out = np.zeros((x.shape[0], length), np.float32)
        s, e = max(lo, 0), min(hi, n)
        if e > s:
            out[:, s - lo : e - lo] = x[:, s:e]
        return out

    def _max_start(self, i: int) -> int:
        """The last first frame of a stored crop of track ``i`` (0 for a track shorter than P)."""
        return max(0, int(self.tracks.n_frames[i]) - self.patch_frames)

    def draw(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The waveform segments of step ``step``: ``(vocals, accompaniment, norm)``, float32
        ``[batch, channels, span]`` (the vocals with their gain) and float32 ``[batch]`` (what
        the magnitudes are divided by; NaN: the crop's own mixture maximum)."""
        rng = np.random.default_rng(step_seed_sequence(self.seed, self.rank, step, STREAM_REMIX))
        hop = self.config.hop_length
        B, C = self.batch_size, self.channels
        voc = np.empty((B, C, self.span), np.float32)
        acc = np.empty((B, C, self.span), np.float32)
        norm = np.full(B, np.nan, np.float32)
        n = len(self.tracks)
        for b in range(B):
            i = int(rng.choice(n, p=self.p))
            if rng.random() < self.aligned:
                a = int(rng.integers(0, self._max_start(i) + 1)) * hop
                voc[b] = self._segment(self.vocals[i], a)
                acc[b] = self._segment(self.accompaniment[i], a)
                norm[b] = self.norms[i]
                continue
            j = int(rng.choice(n, p=self.p))
            av = int(rng.integers(0, self._max_start(i) * hop + 1))
            aa = int(rng.integers(0, self._max_start(j) * hop + 1))
            gain = np.float32(10.0 ** (rng.uniform(-self.gain_db, self.gain_db) / 20.0)) if self.gain_db > 0 else np.float32(1)
            down_v = down_a = PITCH_GRID  # the speed down / PITCH_GRID of each stem: 1 unless pitched
            if self.pitch > 0:
                semitones = rng.uniform(-self.pitch, self.pitch, 2)
                down_v, down_a = (int(round(PITCH_GRID * 2.0 ** (u / 12.0))) for u in semitones)
            voc[b] = self._played_at(self.vocals[i], av, down_v) * gain
            acc[b] = self._played_at(self.accompaniment[j], aa, down_a)
        return voc, acc, norm

    def _played_at(self, x: np.ndarray, a: int, down: int) -> np.ndarray:
        """``span`` samples of ``x [channels, n]`` from ``a - lead`` on, played ``down /
        PITCH_GRID`` times as fast (float32 ``[channels, span]``; :meth:`_segment` at speed 1)."""
        up = PITCH_GRID
        if down == up:
            return self._segment(x, a)
        from scipy.signal import resample_poly  # 0.8 s to import: only runs that change pitch pay it

        need = -(-self.span * down // up)  # ceil: enough input for span output samples
        y = resample_poly(self._segment(x, a, need), up, down, axis=-1)
        return np.ascontiguousarray(y[:, : self.span], dtype=np.float32)

    def magnitudes(self, voc: np.ndarray, acc: np.ndarray, norm: np.ndarray) -> dict[str, np.ndarray]:
        """Stored-layout float16 magnitudes of segments (:meth:`draw`): ``{"mixture", "vocals",
        "accompaniment"}``, each ``[batch, P, n_bins]`` (mono) or ``[batch, P, channels,
        n_bins]`` (stereo), every bin of the DataDir."""
        cfg = self.config
        stems = np.stack([voc + acc, voc, acc], axis=1)  # [B, 3, C, span]
        mag = np.abs(dsp.stft_frames(stems, 0, self.patch_frames, cfg.n_fft, cfg.hop_length, self.window, center=False))
        mag = mag.astype(np.float32, copy=False)  # [B, 3, C, P, S]
        div = norm.copy()
        own = np.isnan(div)
        if own.any():
            if self.plain:
                div[own] = 1.0
            else:
                peak = mag[:, 0].reshape(len(mag), -1).max(axis=1)
                div[own] = np.where(peak > 0, peak, 1.0)[own]
        mag *= (np.float32(1.0) / div.astype(np.float32))[:, None, None, None, None]
        out = {}
        for k, name in enumerate(("mixture", "vocals", "accompaniment")):
            m = mag[:, k]  # [B, C, P, S]
            m = m[:, 0] if self.channels == 1 else m.transpose(0, 2, 1, 3)
            out[name] = np.ascontiguousarray(m).astype(np.float16)
        return out

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mixture, target)`` float32 ``[batch, channels, n_bins, P]`` on the device, step ``step``."""
        mags = self.magnitudes(*self.draw(step))
        mix = to_model_layout(mags["mixture"], None, self.first_bin, self.n_bins)
        tgt = to_model_layout(mags[self.target], None, self.first_bin, self.n_bins)
        return mix.to(self.device).float(), tgt.to(self.device).float()


def _channels_first(x: np.ndarray) -> np.ndarray:
    """A stored waveform as float32 ``[channels, samples]``."""
    x = np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(x[None] if x.ndim == 1 else x)
