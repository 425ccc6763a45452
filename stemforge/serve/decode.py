"""A job's decode: a stored upload read within the server's bounds.

:func:`decode_limited` is what a worker runs before it separates: the library's one decode
(:func:`stemforge.core.audio.decode_resampled`) with the server's :func:`job_limits`, the song
resampled down to ``max_rate`` block by block while it is decoded, and "too long" worded for
the client. The upload's probe (:func:`stemforge.serve.upload.probe`) checks the header
against the same limits before the job is queued.
"""

from __future__ import annotations

import os

import numpy as np

from stemforge.core import audio as audio_io
from stemforge.core.audio import DEFAULT_LIMITS, DecodeLimits
from stemforge.core.errors import DecodeLimitError, StemforgeError

#: Samples per channel of a decoded block while a job decodes (1.4 s at 48 kHz).
JOB_BLOCK_SAMPLES = 1 << 16


def job_limits(max_seconds: float, max_channels: int = 2) -> DecodeLimits:
    """The :class:`~stemforge.core.audio.DecodeLimits` of a server's decode: ``max_seconds``,
    ``max_channels``, the library's rate range, and no bound on samples at the file's own rate
    (:func:`decode_limited` keeps only what it resampled to at most ``max_rate``)."""
    return DecodeLimits(
        max_seconds=max_seconds,
        max_channels=max_channels,
        min_rate=DEFAULT_LIMITS.min_rate,
        max_rate=DEFAULT_LIMITS.max_rate,
        max_values=None,
    )


def decode_limited(
    path: str | os.PathLike, max_seconds: float, max_rate: int = 48_000, max_channels: int = 2
) -> tuple[np.ndarray, int]:
    """Decode ``path`` to ``([channels, samples] float32, rate Hz)`` within the server's bounds.

    At most ``max_seconds`` (StemforgeError "the song lasts more than ..." as soon as the song
    proves longer, from its header or while decoding) and ``max_channels``; a song above
    ``max_rate`` Hz is resampled to it (soxr HQ) block by block while it is decoded, so what is
    kept is at most ``max_seconds x max_rate x max_channels`` samples whatever the file says
    (the job's memory and its result files follow from that); rates outside the library's range
    (:data:`stemforge.core.audio.DEFAULT_LIMITS`) are refused (DecodeLimitError).

    Why: a compressed file can expand a thousandfold, its header's length can be missing or
    wrong (an mp3's duration is often estimated from its first frames; a FLAC may say
    ``total_samples = 0``), and its rate can be anything a codec allows (655 kHz for FLAC).
    :func:`~stemforge.core.audio.decode_resampled` checks the header first and counts the
    samples block by block.
    """
    try:
        decoded = audio_io.decode_resampled(
            path, max_rate=max_rate, limits=job_limits(max_seconds, max_channels), block_samples=JOB_BLOCK_SAMPLES
        )
    except DecodeLimitError as exc:
        if exc.bound == "seconds":
            raise StemforgeError(f"the song lasts more than {max_seconds:g} s, the most this server accepts") from None
        raise
    return decoded.audio, decoded.sample_rate


__all__ = ["JOB_BLOCK_SAMPLES", "decode_limited", "job_limits"]
