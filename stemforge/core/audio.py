"""Audio I/O: decode, downmix, resample, write.

Decoding gives float32 arrays shaped ``[channels, samples]`` at the file's native rate.
wav/flac/ogg/aiff go through soundfile (libsndfile); mp3/m4a/mp4/aac (including every stream of
a ``.stem.mp4``) go through PyAV, which carries its own FFmpeg libraries, so no ffmpeg binary is
needed. Every failure is an :class:`~stemforge.core.errors.AudioError` naming the path and the reason.
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stemforge.core.errors import AudioError

SOUNDFILE_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".wave"}
PYAV_EXTENSIONS = {".mp3", ".m4a", ".mp4", ".aac", ".opus", ".webm", ".mka", ".wma"}


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds without decoding it: rate (Hz), channels, samples per channel, streams."""

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


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")


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
    _check_exists(p)
    if _backend(p) == "soundfile":
        import soundfile as sf

        try:
            i = sf.info(str(p))
        except Exception as exc:  # libsndfile gives one exception type for everything
            raise AudioError(p, f"not a readable audio file ({_short(exc)})") from None
        return AudioInfo(int(i.samplerate), int(i.channels), int(i.frames))
    streams = _pyav_streams(p)
    first = streams[0]
    return AudioInfo(first.sample_rate, first.channels, first.n_samples, len(streams))


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def load(path: str | os.PathLike, stream: int = 0) -> tuple[np.ndarray, int]:
    """Decode ``path`` to ``(audio [channels, samples] float32, sample_rate Hz)`` at its native rate.

    ``stream`` picks an audio stream of a multi-stream container (``.stem.mp4``: 0 mixture,
    1 drums, 2 bass, 3 other, 4 vocals); files with one stream accept only 0.
    Raises AudioError for a missing, empty, truncated, undecodable or zero-length file.
    """
    p = Path(path)
    _check_exists(p)
    if _backend(p) == "soundfile":
        if stream != 0:
            raise AudioError(p, f"has one audio stream; stream {stream} requested")
        return _load_soundfile(p)
    return _load_pyav(p, stream)


def load_mono(path: str | os.PathLike, stream: int = 0, channel: int | None = None) -> tuple[np.ndarray, int, int]:
    """Decode straight to one channel: ``(y [samples] float32, sample_rate, n_channels of the file)``.

    ``channel=None`` downmixes (channel mean), ``0``/``1``... select one channel. Cheaper than
    :func:`load` + :func:`to_mono` for interleaved formats (no transposed copy).
    """
    p = Path(path)
    _check_exists(p)
    if _backend(p) == "soundfile":
        if stream != 0:
            raise AudioError(p, f"has one audio stream; stream {stream} requested")
        frames, sr = _read_soundfile(p)  # [samples, channels]
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
    data, sr = _load_pyav(p, stream)
    if channel is not None:
        if channel >= data.shape[0]:
            raise AudioError(p, f"has {data.shape[0]} channel(s); channel {channel} requested")
        return np.ascontiguousarray(data[channel]), sr, data.shape[0]
    return to_mono(data), sr, data.shape[0]


def _read_soundfile(p: Path) -> tuple[np.ndarray, int]:
    """Interleaved ``[samples, channels]`` float32 and the rate; AudioError on any problem."""
    import soundfile as sf

    shortfall = _wav_data_shortfall(p) if p.suffix.lower() in {".wav", ".wave"} else None
    if shortfall:
        raise AudioError(p, f"truncated: the header announces {shortfall} more bytes of samples than the file holds")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(p, f"not a readable audio file ({_short(exc)})") from None
    if data.shape[0] == 0:
        raise AudioError(p, "holds no samples")
    return data, int(sr)


def _load_soundfile(p: Path) -> tuple[np.ndarray, int]:
    data, sr = _read_soundfile(p)
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
            n = 0
            if s.duration is not None and s.time_base is not None:
                n = int(round(float(s.duration * s.time_base) * s.rate))
            elif container.duration:
                n = int(round(container.duration / 1_000_000 * s.rate))
            out.append(_StreamInfo(s.index, int(s.rate), int(s.channels), n))
    if not out:
        raise AudioError(p, "container holds no audio stream")
    return out


def n_streams(path: str | os.PathLike) -> int:
    """Number of audio streams in ``path`` (5 for a MUSDB18 ``.stem.mp4``, 1 for plain files)."""
    p = Path(path)
    _check_exists(p)
    if _backend(p) == "soundfile":
        info(p)
        return 1
    return len(_pyav_streams(p))


def _load_pyav(p: Path, stream: int) -> tuple[np.ndarray, int]:
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
        # Resample nothing, only convert sample format to planar float.
        resampler = av.AudioResampler(format="fltp", layout=s.layout, rate=s.rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(s):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
        except Exception as exc:
            raise AudioError(p, f"decoding failed ({_short(exc)})") from None
        rate = int(s.rate)
    if not chunks:
        raise AudioError(p, "holds no samples")
    audio = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    if audio.shape[0] != channels and audio.shape[0] == 1 and channels > 1:
        audio = np.repeat(audio, channels, axis=0)
    return np.ascontiguousarray(audio), rate


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


def write(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, subtype: str | None = None) -> Path:
    """Write ``[samples]`` or ``[channels, samples]`` float audio atomically (temp file + rename).

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
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        sf.write(tmp, data, sample_rate, subtype=subtype, format=fmt.upper())
        os.replace(tmp, p)
    except Exception as exc:
        Path(tmp).unlink(missing_ok=True)
        raise AudioError(p, f"cannot write ({_short(exc)})") from None
    return p
