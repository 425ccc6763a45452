"""Audio I/O: decode (whole, blockwise, several streams), downmix, resample, write.

Decoding gives float32 arrays shaped ``[channels, samples]`` at the file's native rate:
:func:`load` decodes a whole stream, :func:`decode_blocks` yields it in blocks (memory bounded
whatever the song's length), :func:`load_streams_mono` decodes several streams of a container
(a ``.stem.mp4``) in one pass. wav/flac/ogg/aiff go through soundfile (libsndfile);
mp3/m4a/mp4/aac go through PyAV, which carries its own FFmpeg libraries, so no ffmpeg binary is
needed. Resampling is soxr (:func:`resample` whole, :class:`StreamResampler` block by block);
:func:`write` writes a whole array and :class:`AudioWriter` streams blocks into a file; both
write under a temporary name renamed when complete. Every failure is an
:class:`~stemforge.core.errors.AudioError` naming the path and the reason.

Every decode is bounded (:class:`DecodeLimits`, default :data:`DEFAULT_LIMITS`): the header's
rate, channels and length are checked before anything is allocated, and the decoded samples are
counted block by block, so a header that lies or does not know the length (a FLAC whose
STREAMINFO says ``total_samples = 0``: decoded as a stream through PyAV) stops with a
:class:`~stemforge.core.errors.DecodeLimitError` the moment a bound is passed.
"""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from stemforge.core import files
from stemforge.core.errors import AudioError, DecodeLimitError, DiskFullError, StemforgeError

SOUNDFILE_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".wave"}
PYAV_EXTENSIONS = {".mp3", ".m4a", ".mp4", ".aac", ".opus", ".webm", ".mka", ".wma"}
#: Samples per channel of a block of :func:`decode_blocks` (6 s at 44.1 kHz).
BLOCK_SAMPLES = 1 << 18
#: libsndfile reports at least this many frames when a header does not know the length
#: (a FLAC with ``total_samples = 0`` reads as 2**63 - 1 frames).
_UNKNOWN_FRAMES = 1 << 62


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on what one decode may produce, whatever the file's header says.

    Checked from the header before anything is allocated (:meth:`check`) and again while
    decoding (:meth:`meter`: the samples are counted block by block and the decode stops with a
    :class:`~stemforge.core.errors.DecodeLimitError` as soon as a bound is passed), since a
    header can lie or not know the length.

    Attributes:
        max_seconds: longest stream, in seconds at its own rate. This is what bounds the output
            of a resampler: at most ``max_seconds x target_rate`` samples per channel come out,
            whatever the source rate (a day of audio at 1 Hz is refused here, not resampled).
        max_channels: most channels of a stream.
        min_rate, max_rate: the sample rates accepted, in Hz (inclusive).
        max_values: most samples x channels at the file's own rate a decode may return (4 bytes
            each as float32): what a whole-file decode allocates. None: no bound beyond
            ``max_seconds x rate x channels`` (for callers that keep nothing at the file's rate,
            e.g. one that resamples block by block).

    The default (:data:`DEFAULT_LIMITS`): 2 hours, 8 channels, 1 kHz to 384 kHz, and at most
    691,200,000 values (2 hours of 48 kHz stereo; 2.6 GiB as float32).
    """

    max_seconds: float = 7200.0
    max_channels: int = 8
    min_rate: int = 1000
    max_rate: int = 384_000
    max_values: int | None = 7200 * 48_000 * 2

    def __post_init__(self) -> None:
        if not self.max_seconds > 0:
            raise StemforgeError(f"DecodeLimits: max_seconds must be positive, got {self.max_seconds}")
        if self.max_channels < 1:
            raise StemforgeError(f"DecodeLimits: max_channels must be >= 1, got {self.max_channels}")
        if not 0 < self.min_rate <= self.max_rate:
            raise StemforgeError(f"DecodeLimits: need 0 < min_rate <= max_rate, got {self.min_rate}, {self.max_rate}")
        if self.max_values is not None and self.max_values < 1:
            raise StemforgeError(f"DecodeLimits: max_values must be >= 1, got {self.max_values}")

    def max_samples(self, sample_rate: int, channels: int) -> int:
        """Most samples per channel a stream of ``sample_rate`` Hz and ``channels`` may decode to."""
        n = int(self.max_seconds * sample_rate)
        if self.max_values is not None:
            n = min(n, self.max_values // max(1, channels))
        return n

    def check(self, path: str | os.PathLike, sample_rate: int, channels: int, n_samples: int = 0) -> None:
        """Refuse, from the header alone, a stream over a bound: DecodeLimitError naming
        ``path`` and the bound. ``n_samples`` 0 means the header does not know the length."""
        if channels < 1 or channels > self.max_channels:
            raise DecodeLimitError(path, f"has {channels} channels; at most {self.max_channels} are accepted", "channels")
        if not self.min_rate <= sample_rate <= self.max_rate:
            raise DecodeLimitError(
                path, f"sample rate {sample_rate} Hz is outside the {self.min_rate}..{self.max_rate} Hz accepted", "rate"
            )
        if n_samples > int(self.max_seconds * sample_rate):
            raise DecodeLimitError(
                path,
                f"lasts {n_samples / sample_rate:.1f} s by its header; at most {self.max_seconds:g} s is accepted",
                "seconds",
            )
        if n_samples > self.max_samples(sample_rate, channels):
            raise DecodeLimitError(path, self._values_reason(n_samples * channels), "samples")

    def meter(self, path: str | os.PathLike, sample_rate: int, channels: int) -> "_Meter":
        """A counter of decoded samples per channel that raises the moment a bound is passed."""
        return _Meter(self, Path(path), sample_rate, channels)

    def _values_reason(self, values: int | None = None) -> str:
        said = f"holds {values:,} samples x channels; " if values is not None else "decodes to more samples x channels than "
        return f"{said}at most {self.max_values:,} are accepted ({self.max_values * 4 / 2**30:.1f} GiB as float32)"


class _Meter:
    """Counts decoded samples per channel of one stream against :meth:`DecodeLimits.max_samples`."""

    def __init__(self, limits: DecodeLimits, path: Path, sample_rate: int, channels: int):
        self.limits, self.path, self.sample_rate, self.channels = limits, path, sample_rate, channels
        self.n = 0
        self.limit = limits.max_samples(sample_rate, channels)

    def add(self, n: int) -> None:
        """Count ``n`` more samples per channel; DecodeLimitError when past the bound."""
        self.n += int(n)
        if self.n > self.limit:
            lim = self.limits
            if self.n > int(lim.max_seconds * self.sample_rate):
                raise DecodeLimitError(
                    self.path, f"decodes to more than {lim.max_seconds:g} s of audio, the most accepted", "seconds"
                )
            raise DecodeLimitError(self.path, lim._values_reason(), "samples")


#: The bounds every decode takes unless given others (see :class:`DecodeLimits`).
DEFAULT_LIMITS = DecodeLimits()


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds without decoding it: rate (Hz), channels, samples per channel, streams.

    ``n_samples`` is what the header says, 0 when it does not know (a FLAC with
    ``total_samples = 0``, a stream without a duration); ``duration_s`` is then 0 too."""

    sample_rate: int
    channels: int
    n_samples: int
    n_streams: int = 1

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sample_rate


def _backend(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in PYAV_EXTENSIONS:
        return "pyav"
    return "soundfile"


def _sf_name(path: str | os.PathLike) -> bytes:
    """``path`` as the bytes the file system holds, for libsndfile: soundfile encodes a str
    strictly as UTF-8 and so cannot open a file whose name is not valid UTF-8 (Python keeps
    such bytes as lone surrogates, ``os.fsencode`` gives them back)."""
    return os.fsencode(path)


def _soundfile_header(p: Path) -> tuple[AudioInfo, bool]:
    """libsndfile's header facts and whether the length is unknown (``n_samples`` is 0 then)."""
    import soundfile as sf

    try:
        i = sf.info(_sf_name(p))
    except Exception as exc:  # libsndfile gives one exception type for everything
        raise AudioError(p, f"not a readable audio file ({_short(exc)})") from None
    unknown = int(i.frames) >= _UNKNOWN_FRAMES
    return AudioInfo(int(i.samplerate), int(i.channels), 0 if unknown else int(i.frames)), unknown


def _route(p: Path) -> tuple[str, AudioInfo | None]:
    """The decoder for ``p`` and, for soundfile's formats, the header facts.

    A soundfile format whose header does not know its length goes to PyAV, which decodes it as
    a stream (libsndfile would allocate for 2**63 frames, or fail to seek)."""
    if _backend(p) == "pyav":
        return "pyav", None
    inf, unknown = _soundfile_header(p)
    return ("pyav" if unknown else "soundfile"), inf


def check_exists(path: str | os.PathLike) -> Path:
    """``path`` as a Path when it is a non-empty regular file; AudioError naming it and the
    reason if not (:func:`stemforge.core.files.regular_file_problem`: missing, a symbolic link
    loop, a directory, a FIFO or a device such as ``/dev/zero``, refused before it is opened)."""
    path = Path(path)
    problem = files.regular_file_problem(path, kind="audio file")
    if problem:
        raise AudioError(path, problem)
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    return path


def _wav_data_shortfall(path: Path) -> int | None:
    """Bytes missing from a RIFF/WAVE data chunk (0 when complete), or None when not parseable.

    libsndfile silently reads a truncated wav as a shorter one; the header's data size tells.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                if csize == 0xFFFFFFFF:  # streaming writers leave it unknown
                    return 0
                return max(0, pos + 8 + csize - size)
            pos += 8 + csize + (csize & 1)
    return None


def info(path: str | os.PathLike) -> AudioInfo:
    """Read rate, channels and length of ``path`` without decoding samples (cheap)."""
    p = Path(path)
    check_exists(p)
    if _backend(p) == "soundfile":
        return _soundfile_header(p)[0]
    streams = _pyav_streams(p)
    first = streams[0]
    return AudioInfo(first.sample_rate, first.channels, first.n_samples, len(streams))


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def load(path: str | os.PathLike, stream: int = 0, limits: DecodeLimits = DEFAULT_LIMITS) -> tuple[np.ndarray, int]:
    """Decode ``path`` to ``(audio [channels, samples] float32, sample_rate Hz)`` at its native rate.

    ``stream`` picks an audio stream of a multi-stream container (``.stem.mp4``: 0 mixture,
    1 drums, 2 bass, 3 other, 4 vocals); files with one stream accept only 0.
    Raises AudioError for a missing, empty, truncated, undecodable or zero-length file, and
    DecodeLimitError for one over ``limits`` (from the header, or while decoding).
    """
    p = Path(path)
    check_exists(p)
    backend, inf = _route(p)
    if backend == "soundfile":
        if stream != 0:
            raise AudioError(p, f"has one audio stream; stream {stream} requested")
        return _load_soundfile(p, inf, limits)
    return _load_pyav(p, stream, limits)


def load_mono(
    path: str | os.PathLike, stream: int = 0, channel: int | None = None, limits: DecodeLimits = DEFAULT_LIMITS
) -> tuple[np.ndarray, int, int]:
    """Decode straight to one channel: ``(y [samples] float32, sample_rate, n_channels of the file)``.

    ``channel=None`` downmixes (channel mean), ``0``/``1``... select one channel. Cheaper than
    :func:`load` + :func:`to_mono` for interleaved formats (no transposed copy). Bounded by
    ``limits`` as :func:`load`.
    """
    p = Path(path)
    check_exists(p)
    backend, inf = _route(p)
    if backend == "soundfile":
        if stream != 0:
            raise AudioError(p, f"has one audio stream; stream {stream} requested")
        frames, sr = _read_soundfile(p, inf, limits)  # [samples, channels]
        n_channels = frames.shape[1]
        if channel is not None:
            if channel >= n_channels:
                raise AudioError(p, f"has {n_channels} channel(s); channel {channel} requested")
            return np.ascontiguousarray(frames[:, channel]), sr, n_channels
        if n_channels == 1:
            return frames[:, 0], sr, 1
        y = frames[:, 0].copy()  # column adds: much faster than mean(axis=1) on [n, 2]
        for c in range(1, n_channels):
            y += frames[:, c]
        y *= np.float32(1.0 / n_channels)
        return y, sr, n_channels
    data, sr = _load_pyav(p, stream, limits)
    if channel is not None:
        if channel >= data.shape[0]:
            raise AudioError(p, f"has {data.shape[0]} channel(s); channel {channel} requested")
        return np.ascontiguousarray(data[channel]), sr, data.shape[0]
    return to_mono(data), sr, data.shape[0]


def _check_wav_complete(p: Path) -> None:
    shortfall = _wav_data_shortfall(p) if p.suffix.lower() in {".wav", ".wave"} else None
    if shortfall:
        raise AudioError(p, f"truncated: the header announces {shortfall} more bytes of samples than the file holds")


def _read_soundfile(p: Path, inf: AudioInfo, limits: DecodeLimits) -> tuple[np.ndarray, int]:
    """Interleaved ``[samples, channels]`` float32 and the rate; AudioError on any problem.

    ``inf`` is the header (its length known): checked against ``limits`` before the array is
    allocated (libsndfile never reads past the frame count it reports)."""
    import soundfile as sf

    limits.check(p, inf.sample_rate, inf.channels, inf.n_samples)
    _check_wav_complete(p)
    try:
        data, sr = sf.read(_sf_name(p), dtype="float32", always_2d=True, frames=inf.n_samples)
    except Exception as exc:
        raise AudioError(p, f"not a readable audio file ({_short(exc)})") from None
    if data.shape[0] == 0:
        raise AudioError(p, "holds no samples")
    return data, int(sr)


def _load_soundfile(p: Path, inf: AudioInfo, limits: DecodeLimits) -> tuple[np.ndarray, int]:
    data, sr = _read_soundfile(p, inf, limits)
    return np.ascontiguousarray(data.T), sr


@dataclass(frozen=True)
class _StreamInfo:
    index: int
    sample_rate: int
    channels: int
    n_samples: int


def _open_container(p: Path):
    import av

    try:
        return av.open(str(p))
    except Exception as exc:
        raise AudioError(p, f"not a readable audio file ({_short(exc)})") from None


def _pyav_streams(p: Path) -> list[_StreamInfo]:
    with _open_container(p) as container:
        out = []
        for s in container.streams.audio:
            out.append(_StreamInfo(s.index, int(s.rate), int(s.channels), _stream_samples(s, container)))
    if not out:
        raise AudioError(p, "container holds no audio stream")
    return out


def n_streams(path: str | os.PathLike) -> int:
    """Number of audio streams in ``path`` (5 for a MUSDB18 ``.stem.mp4``, 1 for plain files)."""
    p = Path(path)
    check_exists(p)
    if _backend(p) == "soundfile":
        info(p)
        return 1
    return len(_pyav_streams(p))


def _stream_samples(s, container) -> int:
    """Samples per channel a PyAV stream's header announces (0 when it does not say)."""
    if s.duration is not None and s.time_base is not None:
        return max(0, int(round(float(s.duration * s.time_base) * s.rate)))
    if container.duration:
        return max(0, int(round(container.duration / 1_000_000 * s.rate)))
    return 0


def _pyav_chunks(
    p: Path, stream: int, facts: dict | None = None, limits: DecodeLimits = DEFAULT_LIMITS
) -> Iterator[np.ndarray]:
    """Decode audio stream ``stream`` of ``p`` frame by frame: float32 ``[channels, n]`` chunks.
    ``facts`` (when given) gets the stream's ``"sample_rate"`` once the container is open. The
    header is checked against ``limits`` first and every chunk is counted before it is yielded."""
    import av

    with _open_container(p) as container:
        audio_streams = list(container.streams.audio)
        if not audio_streams:
            raise AudioError(p, "container holds no audio stream")
        if not 0 <= stream < len(audio_streams):
            raise AudioError(p, f"has {len(audio_streams)} audio streams; stream {stream} requested")
        s = audio_streams[stream]
        s.thread_type = "AUTO"
        channels = int(s.channels)
        limits.check(p, int(s.rate), channels, _stream_samples(s, container))
        meter = limits.meter(p, int(s.rate), channels)
        if facts is not None:
            facts["sample_rate"] = int(s.rate)
        # Resample nothing, only convert sample format to planar float.
        resampler = av.AudioResampler(format="fltp", layout=s.layout, rate=s.rate)

        def fix(a: np.ndarray) -> np.ndarray:
            a = a.astype(np.float32, copy=False)
            if a.shape[0] != channels and a.shape[0] == 1 and channels > 1:
                a = np.repeat(a, channels, axis=0)
            return a

        def counted(out) -> np.ndarray:
            a = fix(out.to_ndarray())
            meter.add(a.shape[1])
            return a

        try:
            for frame in container.decode(s):
                for out in resampler.resample(frame):
                    yield counted(out)
            for out in resampler.resample(None):
                yield counted(out)
        except AudioError:
            raise
        except Exception as exc:
            raise AudioError(p, f"decoding failed ({_short(exc)})") from None


def _load_pyav(p: Path, stream: int, limits: DecodeLimits = DEFAULT_LIMITS) -> tuple[np.ndarray, int]:
    facts: dict = {}
    chunks = list(_pyav_chunks(p, stream, facts, limits))
    if not chunks or sum(c.shape[1] for c in chunks) == 0:
        raise AudioError(p, "holds no samples")
    return np.ascontiguousarray(np.concatenate(chunks, axis=1)), facts["sample_rate"]


def decode_blocks(
    path: str | os.PathLike, block_samples: int = BLOCK_SAMPLES, stream: int = 0, limits: DecodeLimits = DEFAULT_LIMITS
) -> Iterator[np.ndarray]:
    """Decode ``path`` block by block: float32 ``[channels, n]`` arrays at the native rate.

    Every block but the last holds at least ``block_samples`` samples per channel (exactly that
    many for soundfile's formats; whole codec frames for PyAV's), so memory does not grow with
    the song. The concatenated blocks equal :func:`load`'s array. The rate is
    :func:`info`'s. Raises AudioError (naming the file) for what :func:`load` refuses; a file
    that decodes to no samples yields nothing. ``limits`` is checked from the header before the
    first block and the blocks are counted: DecodeLimitError the moment a bound is passed (the
    blocks before it were yielded). A header that does not know its length (``info`` gives
    ``n_samples`` 0) is decoded as a stream through PyAV.
    """
    p = check_exists(path)
    if block_samples <= 0:
        raise AudioError(p, f"block_samples must be positive, got {block_samples}")
    backend, inf = _route(p)
    if backend == "pyav":
        pending: list[np.ndarray] = []
        n_pending = 0
        for chunk in _pyav_chunks(p, stream, None, limits):
            pending.append(chunk)
            n_pending += chunk.shape[1]
            if n_pending >= block_samples:
                yield np.concatenate(pending, axis=1) if len(pending) > 1 else pending[0]
                pending, n_pending = [], 0
        if n_pending:
            yield np.concatenate(pending, axis=1) if len(pending) > 1 else pending[0]
        return
    import soundfile as sf

    if stream != 0:
        raise AudioError(p, f"has one audio stream; stream {stream} requested")
    assert inf is not None
    limits.check(p, inf.sample_rate, inf.channels, inf.n_samples)
    _check_wav_complete(p)
    try:
        f = sf.SoundFile(_sf_name(p))
    except Exception as exc:
        raise AudioError(p, f"not a readable audio file ({_short(exc)})") from None
    meter = limits.meter(p, inf.sample_rate, inf.channels)
    with f:
        while True:
            try:
                data = f.read(block_samples, dtype="float32", always_2d=True)
            except Exception as exc:
                raise AudioError(p, f"decoding failed ({_short(exc)})") from None
            if data.shape[0] == 0:
                return
            meter.add(data.shape[0])
            yield _deinterleave(data)


def load_streams_mono(
    path: str | os.PathLike, streams: set[int], limits: DecodeLimits = DEFAULT_LIMITS
) -> tuple[dict[int, np.ndarray], int, int]:
    """Decode audio streams ``streams`` of a container in one pass, each downmixed to mono.

    Returns ``({stream: float32 [samples]}, sample_rate Hz, channels of the first stream)``.
    Equal to :func:`load` + :func:`to_mono` per stream, but the file is demuxed once and no
    ``[channels, samples]`` array is built (the frames' planes are added into a preallocated
    mono buffer): the fast way through the five streams of a ``.stem.mp4``. AudioError for a
    missing stream, streams of different rates, or a decoding error; DecodeLimitError for a
    stream over ``limits`` (each stream's header is checked before its buffer is allocated, and
    its samples are counted while decoding).
    """
    import av

    p = check_exists(path)
    with _open_container(p) as container:
        all_streams = list(container.streams.audio)
        missing = sorted(k for k in streams if not 0 <= k < len(all_streams))
        if missing:
            raise AudioError(p, f"has {len(all_streams)} audio streams; stream {missing[0]} requested")
        wanted = {all_streams[k].index: k for k in sorted(streams)}
        rates = {int(all_streams[k].rate) for k in streams}
        if len(rates) != 1:
            raise AudioError(p, f"streams {sorted(streams)} have different sample rates {sorted(rates)}")
        rate = rates.pop()
        bufs: dict[int, np.ndarray] = {}
        pos = {k: 0 for k in streams}
        meters: dict[int, _Meter] = {}
        for k in streams:
            s = all_streams[k]
            n = int(float(s.duration * s.time_base) * rate) if s.duration is not None and s.time_base else 0
            limits.check(p, rate, int(s.channels), max(n, 0))
            meters[k] = limits.meter(p, rate, int(s.channels))
            bufs[k] = np.zeros(max(n, rate) + 8192, np.float32)
        fallback: dict[int, object] = {}
        try:
            for packet in container.demux([all_streams[k] for k in sorted(streams)]):
                k = wanted.get(packet.stream.index)
                if k is None:
                    continue
                for frame in packet.decode():
                    if frame.format.name != "fltp":  # not AAC's planar float: convert
                        if k not in fallback:
                            fallback[k] = av.AudioResampler(format="fltp", layout=frame.layout, rate=frame.sample_rate)
                        frames = fallback[k].resample(frame)
                    else:
                        frames = [frame]
                    for f in frames:
                        meters[k].add(f.samples)
                        _add_mono(bufs, pos, k, f)
            for k, r in fallback.items():
                for f in r.resample(None):
                    meters[k].add(f.samples)
                    _add_mono(bufs, pos, k, f)
        except AudioError:
            raise
        except Exception as exc:
            raise AudioError(p, f"decoding failed ({_short(exc)})") from None
        channels = int(all_streams[min(streams)].channels)
    out = {}
    for k in streams:
        if pos[k] == 0:
            raise AudioError(p, f"stream {k} holds no samples")
        out[k] = bufs[k][: pos[k]]
    return out, rate, channels


def _add_mono(bufs: dict[int, np.ndarray], pos: dict[int, int], k: int, frame) -> None:
    n = frame.samples
    planes = frame.planes
    start = pos[k]
    if start + n > bufs[k].size:  # the container's duration was short: grow
        bufs[k] = np.concatenate([bufs[k], np.zeros(max(n, bufs[k].size // 2), np.float32)])
    out = bufs[k][start : start + n]
    out[:] = np.frombuffer(planes[0], np.float32, n)
    for plane in planes[1:]:
        out += np.frombuffer(plane, np.float32, n)
    if len(planes) > 1:
        out *= np.float32(1.0 / len(planes))
    pos[k] = start + n


def _interleave(x: np.ndarray) -> np.ndarray:
    """``[channels, n]`` -> C-contiguous ``[n, channels]`` float32 (per-channel copies: several
    times faster than a generic transpose copy for two channels)."""
    out = np.empty((x.shape[1], x.shape[0]), dtype=np.float32)
    for c in range(x.shape[0]):
        out[:, c] = x[c]
    return out


def _deinterleave(x: np.ndarray) -> np.ndarray:
    """``[n, channels]`` -> C-contiguous ``[channels, n]`` float32."""
    out = np.empty((x.shape[1], x.shape[0]), dtype=np.float32)
    for c in range(x.shape[1]):
        out[c] = x[:, c]
    return out


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Downmix ``[channels, samples]`` to ``[samples]`` by the channel mean (1-D input passes)."""
    if audio.ndim == 1:
        return audio
    if audio.shape[0] == 1:
        return audio[0]
    return audio.mean(axis=0, dtype=np.float32)


def resample(audio: np.ndarray, orig_rate: int, target_rate: int, quality: str = "HQ") -> np.ndarray:
    """Resample ``[samples]`` or ``[channels, samples]`` from ``orig_rate`` to ``target_rate`` Hz.

    soxr with the given quality ("HQ" is what ``librosa.resample(res_type="soxr_hq")`` uses);
    the output length is ``ceil(n * target_rate / orig_rate)`` as soxr gives it.
    """
    if orig_rate == target_rate:
        return audio.astype(np.float32, copy=False)
    import soxr

    if audio.ndim == 1:
        return soxr.resample(audio, orig_rate, target_rate, quality=quality).astype(np.float32, copy=False)
    out = soxr.resample(np.ascontiguousarray(audio.T), orig_rate, target_rate, quality=quality)
    return np.ascontiguousarray(out.T.astype(np.float32, copy=False))


class StreamResampler:
    """Block-by-block soxr resampling of ``[channels, n]`` float32 blocks (identity when the
    rates are equal): ``push`` returns what became final, ``flush`` the rest. The concatenated
    output equals :func:`resample` of the whole signal to float rounding (soxr's streaming and
    one-shot modes differ in their last few samples' rounding only)."""

    def __init__(self, channels: int, orig_rate: int, target_rate: int, quality: str = "HQ"):
        self.identity = orig_rate == target_rate
        self.channels = channels
        if not self.identity:
            import soxr

            self._stream = soxr.ResampleStream(orig_rate, target_rate, channels, dtype="float32", quality=quality)

    def push(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """Feed ``block [channels, n]``; returns float32 ``[channels, m]`` (m may be 0)."""
        if self.identity:
            return block
        out = self._stream.resample_chunk(_interleave(block), last=last)
        return _deinterleave(np.asarray(out, dtype=np.float32).reshape(-1, self.channels))

    def flush(self) -> np.ndarray:
        """No more input: the last ``[channels, m]`` samples."""
        return self.push(np.zeros((self.channels, 0), np.float32), last=True)


@dataclass(frozen=True)
class DecodedAudio:
    """What :func:`decode_resampled` gives.

    Attributes:
        audio: float32 ``[channels, n_samples]`` at ``sample_rate``, C-contiguous.
        sample_rate: the rate of ``audio`` (Hz).
        source: the file's header (its own rate and channels; ``n_samples`` 0 when unknown).
        n_source_samples: samples per channel decoded at the file's own rate.
    """

    audio: np.ndarray
    sample_rate: int
    source: AudioInfo
    n_source_samples: int


def decode_resampled(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    *,
    max_rate: int | None = None,
    channels: int | None = None,
    limits: DecodeLimits = DEFAULT_LIMITS,
    quality: str = "HQ",
    block_samples: int = BLOCK_SAMPLES,
    progress: Callable[[float], None] | None = None,
) -> DecodedAudio:
    """Decode ``path`` block by block into float32 ``[channels, n_samples]`` at one rate, within
    ``limits``: nothing at the file's own rate is kept beyond one block.

    Args:
        sample_rate: the rate of the result (Hz); None: the file's own.
        max_rate: the result's rate at most (Hz): a file above it is resampled down to it.
        channels: the result's channels; None: the file's. 1 downmixes (channel mean, as
            :func:`to_mono`); a mono file is repeated to ``channels``; any other count that
            differs from the file's is refused.
        limits: checked from the header before anything is decoded and counted while decoding
            (:func:`decode_blocks`), so a header that lies or does not know the length stops
            with :class:`~stemforge.core.errors.DecodeLimitError` the moment a bound is passed.
        quality: soxr's quality of the block-by-block resampling (:class:`StreamResampler`).
        block_samples: samples per channel of a decoded block.
        progress: called after every block with the fraction of the header's length decoded
            (``min(1, decoded / max(header samples, 1))``).

    Raises:
        AudioError: the file cannot be read or decoded, holds no samples, decodes to another
            channel count than its header says, or cannot give ``channels``.
        DecodeLimitError: the file is over ``limits`` (from the header or while decoding).
    """
    p = Path(path)
    inf = info(p)
    limits.check(p, inf.sample_rate, inf.channels, inf.n_samples)
    if channels is not None and channels not in (1, inf.channels) and inf.channels != 1:
        raise AudioError(p, f"has {inf.channels} channels; {channels} cannot be made of them")
    out_rate = int(sample_rate) if sample_rate is not None else inf.sample_rate
    if max_rate is not None:
        out_rate = min(out_rate, int(max_rate))
    out_channels = inf.channels if channels is None else int(channels)
    rs = StreamResampler(out_channels, inf.sample_rate, out_rate, quality)
    expected = max(inf.n_samples, 1)
    parts: list[np.ndarray] = []
    n_in = 0
    for block in decode_blocks(p, block_samples, limits=limits):
        if block.shape[0] != inf.channels:
            raise AudioError(p, f"decoded {block.shape[0]} channels where the header says {inf.channels}")
        n_in += block.shape[1]
        parts.append(rs.push(_with_channels(block, out_channels)))
        if progress is not None:
            progress(min(1.0, n_in / expected))
    if n_in == 0:
        raise AudioError(p, "holds no samples")
    parts.append(rs.flush())
    audio = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    return DecodedAudio(np.ascontiguousarray(audio), out_rate, inf, n_in)


def _with_channels(block: np.ndarray, channels: int) -> np.ndarray:
    """``block [c, n]`` with ``channels`` channels: as is, the channel mean, or a mono block repeated."""
    if block.shape[0] == channels:
        return block
    if channels == 1:
        return to_mono(block)[None, :]
    return np.repeat(block, channels, axis=0)


#: libsndfile's error code for a failed system call (its message is only "System error.").
_SF_ERR_SYSTEM = 2
#: Where the errno of libsndfile's failed call cannot be read, a system error with less than
#: this much room left on the output's filesystem is taken for a full disk.
_FULL_BELOW_BYTES = 4 << 20


def _sndfile_errno() -> int | None:
    """The errno left by the last call into libsndfile (cffi keeps it per thread), or None."""
    import soundfile as sf

    ffi = getattr(sf, "_ffi", None)
    try:
        return int(ffi.errno) if ffi is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


def _write_error(path: Path, exc: BaseException, folder: Path | None = None) -> StemforgeError:
    """The error for a failed write of ``path``: :class:`DiskFullError` when the disk or quota
    is full, else AudioError "cannot write (...)".

    libsndfile reports a failed ``write()`` as "System error." without its cause; the errno it
    left tells ENOSPC/EDQUOT apart (read right after the failure), and where it cannot be read
    the free space of ``folder`` (the temporary file's) does."""
    if files.is_disk_full(exc):
        return files.disk_full(path, exc)
    if getattr(exc, "code", None) == _SF_ERR_SYSTEM:
        code = _sndfile_errno()
        if code in files.DISK_FULL_ERRNOS:
            return files.disk_full(path, OSError(code, os.strerror(code)))
        if code is None and folder is not None:
            try:
                if files.free_bytes(folder) < _FULL_BELOW_BYTES:
                    return files.disk_full(path)
            except OSError:
                pass
    return AudioError(path, f"cannot write ({_short(exc)})")


def write(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, subtype: str | None = None) -> Path:
    """Write ``[samples]`` or ``[channels, samples]`` float audio atomically (``core.files``: temp
    file + fsync + rename, mode as ``open()`` gives under the umask; DiskFullError when full).

    The format follows the suffix (wav, flac, ogg); wav defaults to 32-bit float unless
    ``subtype`` says otherwise (e.g. ``"PCM_16"``).
    """
    import soundfile as sf

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = audio.T if audio.ndim == 2 else audio
    fmt = p.suffix.lower().lstrip(".") or "wav"
    if subtype is None and fmt == "wav":
        subtype = "FLOAT"
    try:
        with files.atomic_path(p) as tmp:
            try:
                sf.write(_sf_name(tmp), data, sample_rate, subtype=subtype, format=fmt.upper())
            except Exception as exc:  # libsndfile's "System error." on a full disk
                raise _write_error(p, exc, p.parent) from None
    except (DiskFullError, AudioError):
        raise
    except Exception as exc:
        raise AudioError(p, f"cannot write ({_short(exc)})") from None
    return p


class AudioWriter:
    """Streamed, atomic audio writing: blocks ``[channels, n]`` go to a temporary file in the
    target folder (:func:`stemforge.core.files.atomic_path`), renamed to ``path`` by
    :meth:`close` (:meth:`abort` removes it).

    wav (32-bit float unless ``subtype`` says otherwise, e.g. ``"PCM_16"``) or flac (24-bit by
    default); integer subtypes clip the values to [-1, 1]. A context manager: closes on success,
    aborts on an exception. AudioError naming ``path`` for a format it cannot write, a folder
    it cannot create, or a failed write; DiskFullError when the temporary file cannot be created
    or renamed for want of room. The file is not fsynced before the rename (stems are written
    in bulk and can be made again).
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, channels: int, subtype: str | None = None):
        import soundfile as sf

        self.path = path = Path(path)
        fmt = path.suffix.lower().lstrip(".") or "wav"
        if fmt not in ("wav", "flac"):
            raise AudioError(path, f"cannot write .{fmt}: use .wav or .flac")
        if subtype is None:
            subtype = "FLOAT" if fmt == "wav" else "PCM_24"
        self.clip = not subtype.upper().startswith(("FLOAT", "DOUBLE"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AudioError(path, f"cannot create its folder ({_short(exc)})") from None
        self._target: contextlib.AbstractContextManager | None = files.atomic_path(path, fsync=False)
        try:
            self.tmp = self._target.__enter__()
        except DiskFullError:
            raise
        except OSError as exc:
            raise AudioError(path, f"cannot write ({_short(exc)})") from None
        try:
            self._file = sf.SoundFile(
                _sf_name(self.tmp), "w", samplerate=int(sample_rate), channels=int(channels), subtype=subtype, format=fmt.upper()
            )
        except Exception as exc:
            error = _write_error(path, exc, path.parent)
            self._drop()
            raise error from None

    def write(self, block: np.ndarray) -> None:
        """Append ``block [channels, n]`` float (DiskFullError when the disk is full)."""
        data = np.clip(block, -1.0, 1.0) if self.clip else block
        try:
            self._file.write(_interleave(data))
        except Exception as exc:
            raise _write_error(self.path, exc, self.path.parent) from None

    def close(self) -> Path:
        """Finish the file and rename it to ``path``; returns ``path``."""
        try:
            self._file.close()
        except Exception as exc:
            error = _write_error(self.path, exc, self.path.parent)
            self.abort()
            raise error from None
        target, self._target = self._target, None
        try:
            if target is not None:
                target.__exit__(None, None, None)  # the rename (the temporary file is removed if it fails)
        except DiskFullError:
            raise
        except Exception as exc:
            raise AudioError(self.path, f"cannot write ({_short(exc)})") from None
        return self.path

    def abort(self) -> None:
        """Drop the temporary file (``path`` is left as it was)."""
        try:
            if not self._file.closed:
                self._file.close()
        except Exception:  # noqa: BLE001  abort runs after a failure; the temporary file is removed below either way
            pass
        self._drop()

    def _drop(self) -> None:
        """Leave the temporary file's context with a failure: atomic_path removes the file."""
        target, self._target = self._target, None
        if target is not None:
            target.__exit__(_Aborted, _Aborted(), None)

    def __enter__(self) -> "AudioWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _Aborted(Exception):
    """Thrown into an :func:`~stemforge.core.files.atomic_path` block to make it remove its file."""
