"""GNSDR of a model in memory on a DataDir split's whole tracks: what ``stemforge train
--select sdr`` validates with.

:class:`SdrScorer` reads the split's stored waveforms once, factorizes their references once
(:class:`~stemforge.evaluate.datadir.ClipReferences`) and scores the mixture once; each call
then runs a :class:`~stemforge.separate.separator.Separator` around the given network (its
default windows, as ``stemforge evaluate`` separates) on every track's mixture and returns the
duration-weighted mean NSDR (BSS Eval v3, whole clip, as mir_eval) of vocals and
accompaniment: the ``gnsdr`` that ``stemforge evaluate`` reports for the model on that split,
without the oracle and frame-wise columns. ``train`` never imports this package: the caller
(``stemforge train``, a benchmark) builds the scorer and hands it to the run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stemforge.core.errors import StemforgeError
from stemforge.evaluate.datadir import STEMS, ClipReferences, score_estimates


class SdrScorer:
    """``scorer(model) -> {"vocals": GNSDR dB, "accompaniment": GNSDR dB}`` on ``split``.

    Args:
        datadir: a mono :class:`~stemforge.store.DataDir` (the DataDir protocol's geometry).
        split: the split scored (``valid``).
        target: what the model's mask extracts (``vocals`` or ``accompaniment``).

    Raises:
        StemforgeError: a stereo DataDir, or no track in ``split`` with both stems audible.
    """

    def __init__(self, datadir: Any, split: str = "valid", target: str = "vocals"):
        cfg = datadir.config
        if cfg.channels != 1:
            raise StemforgeError(f"{datadir.path}: selecting by SDR needs a mono DataDir (the DataDir protocol); "
                                 f"this one has {cfg.channels} channels")
        self.config = cfg
        self.target = target
        self.split = split
        rows = datadir.select(split=split)
        self.tracks: list[tuple[np.ndarray, np.ndarray]] = []
        reader = datadir.reader()
        try:
            for rec in rows.to_dict(orient="records"):
                v = reader.read_wave(rec["shard"], rec["key"], "vocals")
                a = reader.read_wave(rec["shard"], rec["key"], "accompaniment")
                n = min(len(v), len(a))
                if n and np.any(v[:n]) and np.any(a[:n]):
                    self.tracks.append((np.ascontiguousarray(v[:n]), np.ascontiguousarray(a[:n])))
        finally:
            reader.close()
        if not self.tracks:
            raise StemforgeError(f"{datadir.path}: no track in split {split!r} to select by SDR "
                                 f"(the split is empty or its tracks are silent)")
        self.refs = [ClipReferences(v, a) for v, a in self.tracks]
        self.weights = np.array([len(v) for v, _ in self.tracks], np.float64)
        self.weights /= self.weights.sum()
        sr = cfg.sample_rate
        self.mixture_sdr = np.array([
            [score_estimates(v, a, {"vocals": v + a, "accompaniment": v + a}, sr, references=r, frames=False)[stem]["sdr"]
             for stem in STEMS]
            for (v, a), r in zip(self.tracks, self.refs)
        ])  # [tracks, 2]

    def __len__(self) -> int:
        return len(self.tracks)

    def nsdr(self, model: Any) -> np.ndarray:
        """Per-track NSDR (dB) of ``model``: float64 ``[tracks, 2]`` (vocals, accompaniment)."""
        import torch
        from threadpoolctl import threadpool_limits

        from stemforge.separate.separator import Separator

        device = next(model.parameters()).device
        was_training = model.training
        sep = Separator(model, self.config, self.target, str(device))
        sr = self.config.sample_rate
        out = np.empty((len(self.tracks), len(STEMS)))
        try:
            with threadpool_limits(limits=1, user_api="blas"), torch.inference_mode():
                for i, ((v, a), r) in enumerate(zip(self.tracks, self.refs)):
                    est = sep.separate(v + a, sr)
                    est = {k: est[k][: len(v)] for k in STEMS}
                    scores = score_estimates(v, a, est, sr, references=r, frames=False)
                    out[i] = [scores[stem]["sdr"] for stem in STEMS]
        finally:
            model.train(was_training)
        return out - self.mixture_sdr

    def __call__(self, model: Any) -> dict[str, float]:
        nsdr = self.nsdr(model)
        return {stem: float(self.weights @ nsdr[:, s]) for s, stem in enumerate(STEMS)}
