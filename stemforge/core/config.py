"""Frozen configuration dataclasses with a stable hash.

A configuration is recorded by every DataDir, shard and checkpoint; a reader facing another
configuration refuses with :class:`~stemforge.core.errors.ConfigMismatchError` naming both values.
The hash is the first 12 hex digits of the SHA-256 of the canonical JSON of ``to_dict()``, so it
is stable across Python versions, processes and machines.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from stemforge.core.errors import ConfigMismatchError, OptionError, StemforgeError

T = TypeVar("T", bound="_Config")


class _Config:
    """Mixin: dict round trip and a stable content hash for frozen dataclasses.

    A field added after configurations were first recorded is listed in ``_HASH_IF_SET``: it
    enters the hash only when it differs from its default, so every configuration that could be
    written before the field existed keeps its hash (and the DataDirs and checkpoints that
    recorded it stay valid). ``to_dict()`` always holds every field.
    """

    _HASH_IF_SET: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - names
        if unknown:
            raise StemforgeError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
        values = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in data:
                v = data[f.name]
                values[f.name] = tuple(v) if isinstance(v, list) else v
        return cls(**values)

    @property
    def hash(self) -> str:
        data = self.to_dict()
        defaults = {f.name: f.default for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        for name in self._HASH_IF_SET:
            if data[name] == defaults[name]:
                del data[name]
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def describe(self) -> str:
        """Short human-readable form used in error messages: ``hash (k=v, ...)``."""
        body = ", ".join(f"{k}={v}" for k, v in self.to_dict().items())
        return f"{self.hash} ({body})"


#: How a track's magnitudes are scaled: ``max_mixture`` (divided by the maximum of the mixture
#: magnitude over all channels) or ``none`` (the plain ``|STFT|``).
NORMALIZATIONS = ("max_mixture", "none")


@dataclass(frozen=True)
class SpectrogramConfig(_Config):
    """How audio becomes the stored magnitudes.

    Defaults follow the seed article's reference implementation: mono, 16 kHz, Hann window,
    ``n_fft`` 1024, ``hop_length`` 512 with ``center=True`` (as ``librosa.stft``, zero padding),
    ``n_bins = n_fft // 2 + 1 = 513`` bins stored. Each track's mixture, vocals and
    accompaniment magnitudes are divided by one number, the maximum of the mixture magnitude
    (``normalization="max_mixture"``), so their ratios are kept; ``"none"`` keeps the plain
    ``|STFT|`` of the waveform (full scale 1.0), which is what Spleeter's networks were trained on.
    ``channels`` is 1 (mono: the channel mean) or 2 (stereo: magnitudes per channel, stored
    time-major ``[n_frames, channels, n_bins]``; see docs/data-format.md).

    Other geometries are presets of the same contract (:data:`PRESETS`, :meth:`preset`):
    ``seed`` (these defaults), ``paper`` (8192 Hz, n_fft 1024, hop 768) and ``fullband``
    (44.1 kHz stereo, n_fft 4096, hop 1024). Sizes are positive integers and ``hop_length``
    is at most ``n_fft``; StemforgeError naming the field otherwise.
    """

    _HASH_IF_SET: ClassVar[tuple[str, ...]] = ("channels",)

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 512
    window: str = "hann"
    center: bool = True
    pad_mode: str = "constant"
    normalization: str = "max_mixture"
    resample_quality: str = "HQ"
    channels: int = 1

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise StemforgeError(f"SpectrogramConfig: {name} must be an integer, got {v!r}")
            object.__setattr__(self, name, int(v))  # numpy integers hash and serialize as ints
            if v <= 0:
                raise StemforgeError(f"SpectrogramConfig: {name} must be positive, got {v}")
        if self.n_fft < 2:
            raise StemforgeError(f"SpectrogramConfig: n_fft must be at least 2, got {self.n_fft}")
        if self.hop_length > self.n_fft:
            raise StemforgeError(
                f"SpectrogramConfig: hop_length {self.hop_length} is larger than n_fft {self.n_fft} "
                "(samples between frames would never be analysed)"
            )
        if self.normalization not in NORMALIZATIONS:
            raise StemforgeError(f"SpectrogramConfig: unknown normalization {self.normalization!r}")
        if isinstance(self.channels, bool) or self.channels not in (1, 2):
            raise StemforgeError(f"SpectrogramConfig: channels must be 1 or 2, got {self.channels!r}")

    @property
    def n_bins(self) -> int:
        """Stored frequency bins: ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    def n_frames(self, n_samples: int) -> int:
        """Frames ``librosa.stft`` gives for ``n_samples`` samples at this config."""
        if self.center:
            return 1 + n_samples // self.hop_length
        return 1 + max(0, n_samples - self.n_fft) // self.hop_length

    @property
    def frame_seconds(self) -> float:
        """Seconds per frame hop."""
        return self.hop_length / self.sample_rate

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "SpectrogramConfig":
        """The geometry of preset ``name`` (:data:`PRESETS`), with ``overrides`` (``sample_rate``,
        ``n_fft``, ``hop_length``, ``channels``, ...) replacing its values.

        StemforgeError naming the known presets for an unknown ``name``, and the usual one
        (:meth:`__post_init__`) for an override that makes an invalid geometry.
        """
        if name not in PRESETS:
            raise StemforgeError(f"unknown geometry preset {name!r}; presets: {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name].spectrogram, **overrides)

    @property
    def preset_name(self) -> str | None:
        """The name of the preset this config is exactly (same hash), or None."""
        for p in PRESETS.values():
            if p.spectrogram.hash == self.hash:
                return p.name
        return None

    def geometry(self) -> str:
        """One line for people: ``44100 Hz stereo, n_fft 4096, hop 1024 (23.2 ms), 2049 bins``."""
        layout = "mono" if self.channels == 1 else "stereo"
        return (
            f"{self.sample_rate} Hz {layout}, n_fft {self.n_fft}, hop {self.hop_length} "
            f"({1000 * self.frame_seconds:.1f} ms), {self.n_bins} bins"
        )


@dataclass(frozen=True)
class Preset:
    """A named geometry: the :class:`SpectrogramConfig` a DataDir records, and the training
    crop its model takes (``patch_frames``; the store chunks magnitudes by it so that a crop
    touches at most two chunks) and the bins it sees (``model_bins``: bins 1..model_bins, the
    DC bin dropped)."""

    name: str
    spectrogram: SpectrogramConfig
    patch_frames: int
    model_bins: int
    description: str


#: The geometries every command shares (``--preset``): ``seed`` is the default and keeps its
#: hash (937ca236a043) and arrays; ``paper`` is Jansson et al. (ISMIR 2017); ``fullband`` is
#: Spleeter's U-Net geometry (44.1 kHz stereo).
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("seed", SpectrogramConfig(), 128, 512, "16 kHz mono, n_fft 1024, hop 512: the seed's reference implementation"),
        Preset(
            "paper",
            SpectrogramConfig(sample_rate=8192, n_fft=1024, hop_length=768),
            128,
            512,
            "8192 Hz mono, n_fft 1024, hop 768: Jansson et al. (ISMIR 2017)",
        ),
        Preset(
            "fullband",
            SpectrogramConfig(sample_rate=44100, n_fft=4096, hop_length=1024, channels=2),
            512,
            1024,
            "44.1 kHz stereo, n_fft 4096, hop 1024: Spleeter's U-Net",
        ),
    )
}
#: The preset used when no geometry is asked for.
DEFAULT_PRESET = "seed"


def requested_geometry(preset: str | None = None, **given: int | None) -> SpectrogramConfig | None:
    """The geometry the options ask for: preset ``preset`` (default :data:`DEFAULT_PRESET`) with
    the ``given`` values that are not None (``sample_rate``, ``n_fft``, ``hop_length``,
    ``channels``) replacing its own; None when nothing is given (a new DataDir is then the
    default preset, an existing one keeps its geometry).

    OptionError naming the option (``preset`` or the value that makes the geometry invalid)."""
    overrides = {k: v for k, v in given.items() if v is not None}
    if preset is None and not overrides:
        return None
    if preset is not None and preset not in PRESETS:
        raise OptionError("preset", f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    try:
        return SpectrogramConfig.preset(preset or DEFAULT_PRESET, **overrides)
    except StemforgeError as exc:
        text = str(exc).removeprefix("SpectrogramConfig: ")
        raise OptionError(next((k for k in overrides if k in text), "hop_length"), text) from None


def patch_frames(config: SpectrogramConfig) -> int:
    """The training crop (frames) of the preset with ``config``'s frame grid (same
    ``sample_rate``, ``n_fft``, ``hop_length``; channels and normalization aside), else the
    seed's 128."""
    for p in PRESETS.values():
        s = p.spectrogram
        if (s.sample_rate, s.n_fft, s.hop_length) == (config.sample_rate, config.n_fft, config.hop_length):
            return p.patch_frames
    return PRESETS[DEFAULT_PRESET].patch_frames


def check_config(what: str, expected: _Config, found_hash: str, found: object | None = None) -> None:
    """Raise ConfigMismatchError when ``found_hash`` is not ``expected.hash``.

    ``what`` names the object (a DataDir path, a shard, a checkpoint); ``found`` is the stored
    configuration (a dict) when known, so that the message shows both values.
    """
    if found_hash != expected.hash:
        found_text = found_hash if found is None else f"{found_hash} ({found})"
        raise ConfigMismatchError(what, expected.describe(), found_text)
