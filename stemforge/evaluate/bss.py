"""BSS Eval: whole-signal ``bss_eval_sources`` (v3, and v2's gain-only variant) and frame-wise
v4 (museval's method), any number of channels, from one factorization per set of references.

* :func:`bss_eval_sources`: BSS Eval v3 as ``mir_eval.separation.bss_eval_sources`` computes it
  (``compute_permutation=False``): single-channel sources, 512-tap distortion filters fitted
  over the whole signal, all sources evaluated together. For estimate ``e`` of source ``j``,
  ``P_own`` is the least-squares projection of ``e`` on the 512 delayed copies of reference
  ``j`` and ``P_all`` on those of every reference::

      SDR = 10 log10(|P_own|^2 / |e - P_own|^2)     SIR = 10 log10(|P_own|^2 / |P_all - P_own|^2)
      SAR = 10 log10(|P_all|^2 / |e - P_all|^2)

  Jansson et al. report NSDR/GNSDR from it. With ``filter_length=1`` the same formulas give
  BSS Eval v2's gain-only decomposition (``bss_decomp_gain`` + ``bss_crit`` of the BSS_EVAL 2.0
  toolbox: the allowed distortion is one gain), one of the two Huang et al.'s MIR-1K code uses.
* :class:`BssEvalV4` / :func:`bss_eval_v4`: museval's ``bss_eval`` as SiSEC 2018 and every
  published MUSDB18 table use it (``museval.evaluate(references, estimates, win, hop)``): image
  mode (``bsseval_sources_version=False``), distortion filters computed once over the whole
  track (``framewise_filters=False``), metrics on windows of ``window`` samples every ``hop``,
  windows where any reference or any estimate is silent left out (NaN). Multichannel sources
  are images: the filters map every channel of every reference onto every channel of the
  estimate, and energies are summed over channels.
  museval needs ffmpeg binaries at import (through musdb/stempeg), so the computation is
  written here in numpy/scipy; the tests check v4 against museval and v3/v2 against mir_eval
  when they are importable (CI installs them).

Both use the same least-squares filters (for single-channel sources, v4's filters are v3's), so
:meth:`BssEvalV4.project` solves them once per estimate and :class:`Projection` gives both the
whole-signal and the frame-wise figures.

Why it is fast: museval and mir_eval correlate whole tracks with FFTs of the whole track's
length (2^23 points for 3 minutes at 44.1 kHz) for every pair of signals, and solve the
reference system again for every estimate. Only ``filter_length`` lags are needed, so the
correlations are summed over blocks (``sum_b conj(X_b) Y_b`` with FFTs of 2^15 points, the same
linear correlation to float rounding); the reference correlations are factorized once
(Cholesky) for all estimates (model, mixture, oracle: one factorization per track); the
whole-signal energies come from the correlations (``|P|^2 = c^T D`` for filters ``c`` solving
``G c = D``, so ``|e - P|^2 = |e|^2 - |P|^2``: projections are orthogonal) without forming a
signal; and each window's projections are one FFT per signal. Everything runs on one BLAS
thread (callers that score tracks in parallel run one process per core).
"""

from __future__ import annotations

import math

import numpy as np

from stemforge.core.errors import StemforgeError

#: Distortion filter length (taps) of BSS Eval v3 and v4.
FILTER_LENGTH = 512
#: Filter length of BSS Eval v2's gain-only decomposition (one gain, no delays).
GAIN_ONLY = 1
#: FFT size of the blockwise correlations (a block holds ``_CORR_FFT - filter_length + 1`` samples).
_CORR_FFT = 1 << 15


def bss_eval_sources(references: np.ndarray, estimates: np.ndarray, filter_length: int = FILTER_LENGTH) -> dict[str, np.ndarray]:
    """Whole-signal BSS Eval ``bss_eval_sources`` (no permutation): v3 with 512-tap filters
    (the default, as mir_eval), v2's gain-only decomposition with ``filter_length=1``.

    Args:
        references: ``[n_sources, samples]`` true sources.
        estimates: ``[n_sources, samples]`` estimates, in the same order.

    Returns:
        ``{"sdr", "sir", "sar"}`` -> float64 ``[n_sources]`` (dB; +inf where a residual is 0).
    """
    ref, est = _pair(references, estimates)
    return BssEvalV4(ref, filter_length).project(est).sources()


def _pair(references: np.ndarray, estimates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.atleast_2d(np.asarray(references, dtype=np.float64))
    est = np.atleast_2d(np.asarray(estimates, dtype=np.float64))
    if ref.shape != est.shape or ref.ndim != 2:
        raise StemforgeError(f"references {ref.shape} and estimates {est.shape} must both be [n_sources, samples]")
    if ref.shape[1] == 0:
        raise StemforgeError("cannot evaluate empty signals")
    return ref, est


def _images(x: np.ndarray, what: str) -> np.ndarray:
    """``[n_sources, samples]`` or ``[n_sources, samples, channels]`` -> float64
    ``[n_sources, channels, samples]``."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[1] == 0 or a.shape[2] == 0:
        raise StemforgeError(f"BssEvalV4: {what} must be [n_sources, samples] or [n_sources, samples, channels], got {a.shape}")
    return np.moveaxis(a, 2, 1)  # a view: the blockwise spectra and the windows copy what they need


class _BlockSpectra:
    """Blockwise spectra of signals ``[n_signals, samples]`` for linear correlations at lags
    ``0..L-1``: block ``b`` holds samples ``[b B, (b + 1) B)`` (``X``) and, for the lagged
    side, ``[b B, (b + 1) B + L - 1)`` (``Y``), both zero padded to ``n_fft``."""

    def __init__(self, signals: np.ndarray, L: int, n_fft: int = _CORR_FFT, lagged: bool = True, plain: bool = True):
        from scipy import fft as sfft

        n_sig, n = signals.shape
        self.n_fft = n_fft = max(n_fft, 1 << int(math.ceil(math.log2(2 * L))))
        B = n_fft - L + 1
        n_blocks = -(-n // B)
        # one buffer holds every block start b B followed by n_fft samples (zeros past the end)
        padded = np.zeros((n_sig, n_blocks * B + L - 1))
        padded[:, :n] = signals
        self.L = L
        self.X = self.Y = None
        if lagged:  # [b B, b B + n_fft): exactly n_fft samples, a strided view (no copy)
            y = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::B]
            self.Y = sfft.rfft(y, axis=-1)
        if plain:  # [b B, (b + 1) B), zero padded to n_fft
            x = np.zeros((n_sig, n_blocks, n_fft))
            x[:, :, :B] = padded[:, : n_blocks * B].reshape(n_sig, n_blocks, B)
            self.X = sfft.rfft(x, axis=-1)

    def lags(self, other: "_BlockSpectra") -> np.ndarray:
        """``r[i, j, k] = sum_u x_i[u] y_j[u + k]`` for ``k = 0..L-1``, ``x`` from self and
        ``y`` from ``other``: float64 ``[n_self, n_other, L]``."""
        from scipy import fft as sfft

        # for every frequency, X^H Y over the blocks: one batched matrix product
        acc = np.matmul(np.conj(self.X).transpose(2, 0, 1), other.Y.transpose(2, 1, 0))  # [F, i, j]
        return sfft.irfft(acc.transpose(1, 2, 0), self.n_fft, axis=-1)[..., : self.L]


class BssEvalV4:
    """BSS Eval against fixed references: frame-wise v4 (:meth:`evaluate`) and, for
    single-channel sources, whole-signal ``bss_eval_sources`` (``project(e).sources()``),
    factorized once so that scoring several estimates of one track (model, mixture, oracle,
    other systems) costs one factorization.

    For estimate channel ``(j, c)``, least-squares filters of ``filter_length`` taps project it
    on the delayed references: on every channel of every source (``C``) and on the channels of
    its own source ``j`` (``Cj``), solved once over the whole signals (``G + eps I``, eps =
    float64 machine epsilon, as museval). In each window ``[t hop, t hop + window)`` the
    references are cut to the window and filtered by those global filters (``P_all``,
    ``P_own``, each ``window + filter_length - 1`` long); with ``s`` the reference image and
    ``e`` the estimate in the window (zero padded to that length), energies summed over
    channels::

        SDR = 10 log10(|s|^2 / |e - s|^2)        ISR = 10 log10(|s|^2 / |P_own - s|^2)
        SIR = 10 log10(|P_own|^2 / |P_all - P_own|^2)
        SAR = 10 log10(|P_all|^2 / |e - P_all|^2)

    (a zero denominator gives +inf). There are ``floor((n - window + hop) / hop)`` windows (one
    window of the whole signal when ``window >= n``); a window where any reference or any
    estimate sums to zero over its channels at every sample gives NaN (museval's
    ``_any_source_silent``).

    Args:
        references: ``[n_sources, samples]`` or ``[n_sources, samples, channels]``.
        filter_length: taps of the distortion filters (512).
    """

    def __init__(self, references: np.ndarray, filter_length: int = FILTER_LENGTH):
        from scipy.linalg import toeplitz

        ref = _images(references, "references")  # [n_src, n_chan, n]
        self.ref = ref
        n_src, n_chan, n = ref.shape
        L = self.L = int(filter_length)
        if L < 1:
            raise StemforgeError(f"BssEvalV4: filter_length must be at least 1, got {filter_length}")
        K = n_src * n_chan
        self._flat_ref = np.ascontiguousarray(ref.reshape(K, n))  # signal k = source k // n_chan, channel k % n_chan
        # gain only (L = 1): the correlations are plain dot products, no spectra needed
        self.spectra = _BlockSpectra(self._flat_ref, L) if L > 1 else None
        r = self.spectra.lags(self.spectra) if L > 1 else (self._flat_ref @ self._flat_ref.T)[:, :, None]
        # r[i, j, k] = sum_u s_i[u] s_j[u + k]
        G = np.empty((K * L, K * L))
        for i in range(K):
            for j in range(K):
                # G[(i, t1), (j, t2)] = sum_u s_i[u - t1] s_j[u - t2] = r_ij[t1 - t2], and
                # r_ij[-k] = r_ji[k]
                G[i * L : (i + 1) * L, j * L : (j + 1) * L] = toeplitz(r[i, j], r[j, i])
        G[np.diag_indices_from(G)] += np.finfo(float).eps
        self._all = _Factor(G)
        m = n_chan * L
        # the first source's block leads G: its Cholesky factor is the full one's leading block
        self._own = [self._all.leading(m) if j == 0 else _Factor(G[j * m : (j + 1) * m, j * m : (j + 1) * m]) for j in range(n_src)]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n_sources, samples, channels)`` of the references."""
        n_src, n_chan, n = self.ref.shape
        return n_src, n, n_chan

    def project(self, estimates: np.ndarray) -> "Projection":
        """The least-squares distortion filters of ``estimates`` (the references' shape:
        ``[n_sources, samples]`` or ``[n_sources, samples, channels]``), solved once for both
        the whole-signal (:meth:`Projection.sources`) and the frame-wise
        (:meth:`Projection.frames`) figures."""
        est = _images(estimates, "estimates")
        if est.shape != self.ref.shape:
            raise StemforgeError(
                f"BssEvalV4: estimates {self._shape_text(est)} and references {self._shape_text(self.ref)} differ in shape"
            )
        n_src, n_chan, n = self.ref.shape
        L, K = self.L, n_src * n_chan
        m_own = n_chan * L
        # D[(k, tau), (j, c)] = sum_u s_k[u] e_jc[u + tau]: every estimate channel solved at once.
        flat_est = est.reshape(K, n)
        if L > 1:
            D = self.spectra.lags(_BlockSpectra(flat_est, L, self.spectra.n_fft, plain=False))  # [K, K_est, L]
        else:
            D = (self._flat_ref @ flat_est.T)[:, :, None]
        D = np.moveaxis(D, 1, 2).reshape(K * L, K)
        C = self._all.solve(D)  # [K L, K_est]: estimate (j, c) -> filters on every reference channel
        Cj = [self._own[j].solve(D[j * m_own : (j + 1) * m_own, j * n_chan : (j + 1) * n_chan]) for j in range(n_src)]
        return Projection(self, est, D, C, Cj)

    def evaluate(self, estimates: np.ndarray, window: int, hop: int, chunk: int = 16) -> dict[str, np.ndarray]:
        """Frame-wise metrics of ``estimates`` (the references' shape): ``{"sdr", "isr", "sir",
        "sar"}`` -> float64 ``[n_sources, n_windows]`` (:meth:`Projection.frames`)."""
        return self.project(estimates).frames(window, hop, chunk)

    @staticmethod
    def _silent_windows(images: np.ndarray, starts: np.ndarray, w: int) -> np.ndarray:
        """``[n_windows]`` bool: some source's channel sum is zero over the whole window."""
        silent = np.zeros(len(starts), dtype=bool)
        for x in images:  # [n_chan, n]
            nonzero = (x.sum(axis=0) != 0).astype(np.int64)
            csum = np.concatenate(([0], np.cumsum(nonzero)))
            silent |= (csum[starts + w] - csum[starts]) == 0
        return silent

    @staticmethod
    def _shape_text(images: np.ndarray) -> str:
        n_src, n_chan, n = images.shape
        return f"[{n_src} sources, {n} samples, {n_chan} channels]"


class Projection:
    """One set of estimates projected on a :class:`BssEvalV4`'s references: the correlations
    ``D`` (``[K L, K]``, ``K`` = sources x channels), the filters on every reference channel
    ``C`` (``[K L, K]``) and on the own source's channels ``Cj`` (per source ``[n_chan L,
    n_chan]``), all float64. Made by :meth:`BssEvalV4.project`."""

    def __init__(self, refs: BssEvalV4, est: np.ndarray, D: np.ndarray, C: np.ndarray, Cj: list[np.ndarray]):
        self.refs, self.est, self.D, self.C, self.Cj = refs, est, D, C, Cj

    def sources(self) -> dict[str, np.ndarray]:
        """Whole-signal ``bss_eval_sources`` (v3 with the references' 512 taps, v2 gain-only
        with 1): ``{"sdr", "sir", "sar"}`` -> float64 ``[n_sources]`` (dB; +inf where a residual
        energy is 0 or below rounding). Single-channel sources only (StemforgeError otherwise).

        The energies come from the correlations: with ``c`` solving ``G c = D``, ``|P|^2 = c^T
        D`` and, the projections being orthogonal, ``|e - P|^2 = |e|^2 - |P|^2`` and ``|P_all -
        P_own|^2 = |P_all|^2 - |P_own|^2`` (``P_own`` lies in the span ``P_all`` projects on).
        """
        n_src, n_chan, _ = self.est.shape
        if n_chan != 1:
            raise StemforgeError(f"bss_eval_sources takes single-channel sources; these have {n_chan} channels (use frames)")
        L = self.refs.L
        e2 = np.einsum("jcn,jcn->j", self.est, self.est)
        p_all = np.einsum("ij,ij->j", self.C, self.D)
        p_own = np.array([float(self.Cj[j][:, 0] @ self.D[j * L : (j + 1) * L, j]) for j in range(n_src)])
        return {
            "sdr": _db(p_own, e2 - p_own),
            "sir": _db(p_own, p_all - p_own),
            "sar": _db(p_all, e2 - p_all),
        }

    def frames(self, window: int, hop: int, chunk: int = 16) -> dict[str, np.ndarray]:
        """Frame-wise BSS Eval v4 (museval): ``{"sdr", "isr", "sir", "sar"}`` -> float64
        ``[n_sources, n_windows]`` (see :class:`BssEvalV4`)."""
        from scipy import fft as sfft

        if window <= 0 or hop <= 0:
            raise StemforgeError(f"BssEvalV4: window and hop must be positive, got {window}, {hop}")
        ref, est = self.refs.ref, self.est
        n_src, n_chan, n = ref.shape
        L, K = self.refs.L, n_src * n_chan
        C = self.C.T.reshape(n_src, n_chan, K, L)
        Cj = np.stack([c.T for c in self.Cj]).reshape(n_src, n_chan, n_chan, L)
        if window >= n:
            starts = np.array([0])
            w = n
        else:
            n_win = int(math.floor((n - window + hop) / hop))
            starts = np.arange(n_win) * int(hop)
            w = int(window)
        out = {k: np.full((n_src, len(starts)), np.nan) for k in ("sdr", "isr", "sir", "sar")}
        m = w + L - 1
        n_fft_w = sfft.next_fast_len(m, real=True)
        FC = sfft.rfft(C, n_fft_w, axis=-1)  # [j, c, K, F]
        FCj = sfft.rfft(Cj, n_fft_w, axis=-1)  # [j, c, n_chan, F]
        flat_ref = self.refs._flat_ref  # [K, n] contiguous
        flat_est = np.ascontiguousarray(est.reshape(K, n))
        # museval's _any_source_silent: a window where a source's channel sum is zero throughout
        silent = BssEvalV4._silent_windows(ref, starts, w) | BssEvalV4._silent_windows(est, starts, w)
        ref_windows = np.lib.stride_tricks.sliding_window_view(flat_ref, w, axis=-1)  # views, no copies
        est_windows = np.lib.stride_tricks.sliding_window_view(flat_est, w, axis=-1)

        def energy(x: np.ndarray) -> np.ndarray:  # over channels and samples: [k]
            return np.einsum("ckm,ckm->k", x, x)

        for c0 in range(0, len(starts), chunk):
            st = starts[c0 : c0 + chunk]
            k = len(st)
            rw = ref_windows[:, st]  # [K, k, w]
            ew = est_windows[:, st].reshape(n_src, n_chan, k, w)
            FR = sfft.rfft(rw, n_fft_w, axis=-1)  # [K, k, F]
            FRj = FR.reshape(n_src, n_chan, k, -1)
            rwj = rw.reshape(n_src, n_chan, k, w)
            for j in range(n_src):
                p_all = sfft.irfft(np.einsum("cif,ikf->ckf", FC[j], FR), n_fft_w, axis=-1)[..., :m]  # [c, k, m]
                p_own = sfft.irfft(np.einsum("cif,ikf->ckf", FCj[j], FRj[j]), n_fft_w, axis=-1)[..., :m]
                s, e = rwj[j], ew[j]  # [c, k, w]; both are zero past w (museval zero pads them to m)
                own_tail, all_tail = energy(p_own[..., w:]), energy(p_all[..., w:])
                vals = {
                    "sdr": _db(energy(s), energy(e - s)),
                    "isr": _db(energy(s), energy(p_own[..., :w] - s) + own_tail),
                    "sir": _db(energy(p_own), energy(p_all - p_own)),
                    "sar": _db(energy(p_all), energy(e - p_all[..., :w]) + all_tail),
                }
                for key, v in vals.items():
                    v[silent[c0 : c0 + k]] = np.nan
                    out[key][j, c0 : c0 + k] = v
        return out


def bss_eval_v4(
    references: np.ndarray, estimates: np.ndarray, window: int, hop: int, filter_length: int = FILTER_LENGTH
) -> dict[str, np.ndarray]:
    """Frame-wise BSS Eval v4 of ``estimates`` against ``references`` (both ``[n_sources,
    samples]`` or ``[n_sources, samples, channels]``), as museval computes it; see
    :class:`BssEvalV4`.

    Returns ``{"sdr", "isr", "sir", "sar"}`` -> float64 ``[n_sources, n_windows]`` (dB, NaN for
    windows where a reference or an estimate is silent).
    """
    return BssEvalV4(references, filter_length).evaluate(estimates, window, hop)


def frame_medians(frames: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per source, the median over windows of each metric, ignoring NaN windows (museval)."""
    out = {}
    for k, v in frames.items():
        med = np.full(v.shape[0], np.nan)
        for s in range(v.shape[0]):
            ok = ~np.isnan(v[s])
            if ok.any():
                med[s] = float(np.median(v[s][ok]))
        out[k] = med
    return out


class _Factor:
    """Solves ``a x = b`` for a symmetric positive (semi-)definite ``a``, factorized once
    (Cholesky; LU, then least squares, when that fails)."""

    def __init__(self, a: np.ndarray):
        from scipy.linalg import cho_factor

        self.a = a
        try:
            self.cho = cho_factor(a, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            self.cho = None

    def leading(self, m: int) -> "_Factor":
        """The factor of ``a[:m, :m]``: the leading block of this Cholesky factor (no new
        factorization), or a new one when this one fell back."""
        if self.cho is None:
            return _Factor(self.a[:m, :m])
        out = _Factor.__new__(_Factor)
        out.a = self.a[:m, :m]
        out.cho = (np.ascontiguousarray(self.cho[0][:m, :m]), self.cho[1])
        return out

    def solve(self, b: np.ndarray) -> np.ndarray:
        from scipy.linalg import cho_solve

        if self.cho is not None:
            return cho_solve(self.cho, b, check_finite=False)
        try:
            return np.linalg.solve(self.a, b)
        except np.linalg.LinAlgError:
            return np.linalg.lstsq(self.a, b, rcond=None)[0]


def _db(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.inf)
    ok = den > 0
    with np.errstate(divide="ignore"):
        out[ok] = 10.0 * np.log10(num[ok] / den[ok])
    return out
