"""Corpus layouts: synthetic songs written in the real on-disk layout of every corpus.

:func:`write_corpus` writes N songs of :mod:`stemforge.synth.songs` in the folder layout of
DSD100, MUSDB18 (stem.mp4 and HQ), MedleyDB, iKala, MIR-1K, ccMixter, or as original/karaoke
pairs with known offsets and gains, so that every recipe reads them as it reads the real corpus.
Which layouts exist, the recipe that reads each and the options each takes is the registry
:data:`stemforge.synth.LAYOUTS`; its ``writer`` names a ``write_*`` function here. See
``docs/synth.md``.

Determinism: song ``i`` is synthesized from its own ``numpy.random.default_rng([seed, i])``, so
adding songs never changes earlier ones. WAV files are PCM_16, and stems are rounded to that
grid first, so that sums of written files are exact.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from stemforge.core import files
from stemforge.core.errors import StemforgeError
from stemforge.synth import LAYOUTS
from stemforge.synth.songs import SongStems, child_rng, song_names, song_samples, stem_kind, synthesize_multitrack, synthesize_song

__all__ = ["LAYOUTS", "write_corpus"]

_PCM16 = "PCM_16"
_Q16 = 32768.0  # libsndfile maps float x to round(x * 32768) for PCM_16


def _q16(x: np.ndarray) -> np.ndarray:
    """Round float audio to the PCM_16 grid (k / 32768), so sums of written files are exact."""
    q = np.rint(x * np.float32(_Q16))
    np.clip(q, -32768.0, 32767.0, out=q)
    q *= np.float32(1.0 / _Q16)
    return q.astype(np.float32, copy=False)


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> Path:
    from stemforge.core.audio import write

    return write(path, audio, sample_rate, subtype=_PCM16)


def _safe(name: str) -> str:
    """A folder/file name: path separators and control characters replaced, no leading dot."""
    cleaned = re.sub(r"[/\\\x00-\x1f]", "-", str(name)).strip()
    return cleaned.lstrip(".") or "untitled"


def _camel(text: str) -> str:
    return "".join(w[:1].upper() + w[1:] for w in re.findall(r"[A-Za-z0-9]+", text)) or "Untitled"


@dataclass
class _Spec:
    index: int
    artist: str | None = None
    title: str | None = None
    id: Any = None
    subset: str | None = None


def _specs(songs: int, names: Sequence[tuple[str, str]] | None, entries: Sequence[dict] | None) -> list[_Spec]:
    """One spec per song: explicit entries (or names) first, generated names for the rest."""
    given: list[dict] = []
    if entries is not None:
        for e in entries:
            if not isinstance(e, dict):
                raise StemforgeError(f"entries must be dicts with keys id/subset/artist/title, got {e!r}")
            unknown = set(e) - {"id", "subset", "artist", "title"}
            if unknown:
                raise StemforgeError(f"entry {e!r}: unknown keys {sorted(unknown)} (allowed: id, subset, artist, title)")
            given.append(dict(e))
    elif names is not None:
        for item in names:
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise StemforgeError(f"names must be (artist, title) pairs, got {item!r}")
            given.append({"artist": str(item[0]), "title": str(item[1])})
    if songs <= 0:
        if not given:
            raise StemforgeError(f"songs must be >= 1, got {songs}")
        songs = len(given)
    specs = []
    for i in range(songs):
        e = given[i] if i < len(given) else {}
        specs.append(_Spec(i, e.get("artist"), e.get("title"), e.get("id"), e.get("subset")))
    return specs


class _Namer:
    """Unique "Artist - Title" names within one corpus (a clash gets " 2", " 3"... on the title)."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, artist: str, title: str) -> tuple[str, str]:
        artist, title = _safe(artist), _safe(title)
        base, k = title, 1
        while f"{artist} - {title}".lower() in self.used:
            k += 1
            title = f"{base} {k}"
        self.used.add(f"{artist} - {title}".lower())
        return artist, title


def _song(seed: int, index: int, seconds: float, sample_rate: int = 44100, stereo: bool = True) -> SongStems:
    return synthesize_song(np.random.default_rng([seed, index]), seconds, sample_rate, stereo)


def _named(song: SongStems, spec: _Spec, namer: _Namer) -> tuple[str, str]:
    return namer(spec.artist if spec.artist is not None else song.artist, spec.title if spec.title is not None else song.title)


def _record(index: int, track_id: str, artist: str, title: str, subset: str | None, folder: str, paths: dict, sample_rate: int, channels: int, seconds: float, **extra: Any) -> dict:
    rec = {
        "index": index,
        "track_id": track_id,
        "artist": artist,
        "title": title,
        "subset": subset,
        "folder": folder,
        "paths": paths,
        "sample_rate": sample_rate,
        "channels": channels,
        "seconds": seconds,
    }
    rec.update(extra)
    return rec


def _quantized_stems(song: SongStems) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Stems on the PCM_16 grid and their exact sum (the mixture as written)."""
    q = {name: _q16(x) for name, x in song.stems().items()}
    mix = q["vocals"] + q["drums"]
    mix += q["bass"]
    mix += q["other"]
    return q, mix


def _dsd_ids(specs: list[_Spec]) -> list[tuple[int, str]]:
    """(id, subset) per song: explicit ones kept; others Dev (51-100) for even index, Test (1-50) for odd."""
    used = set()
    for s in specs:
        if s.id is not None:
            try:
                s.id = int(s.id)
            except (TypeError, ValueError):
                raise StemforgeError(f"dsd100 entry id must be an integer, got {s.id!r}") from None
            if s.id in used:
                raise StemforgeError(f"dsd100 entry id {s.id} given twice")
            used.add(s.id)
        if s.subset is not None and s.subset not in ("Dev", "Test"):
            raise StemforgeError(f"dsd100 subset must be 'Dev' or 'Test', got {s.subset!r}")
    pools = {"Test": iter(range(1, 51)), "Dev": iter(range(51, 101))}
    overflow = iter(range(101, 10**6))
    out = []
    for s in specs:
        subset = s.subset or (("Test" if s.id <= 50 else "Dev") if s.id is not None else ("Dev" if s.index % 2 == 0 else "Test"))
        ident = s.id
        if ident is None:
            ident = next((k for k in pools[subset] if k not in used), None)
            while ident is None or ident in used:
                ident = next(overflow)
            used.add(ident)
        out.append((ident, subset))
    return out


def write_dsd100(out: Path, specs: list[_Spec], seconds: float, seed: int, progress: Callable | None) -> list[dict]:
    records = []
    namer = _Namer()
    for spec, (ident, subset) in zip(specs, _dsd_ids(specs)):
        song = _song(seed, spec.index, seconds)
        artist, title = _named(song, spec, namer)
        folder = f"{ident:03d} - {artist} - {title}"
        q, mix = _quantized_stems(song)
        paths = {"mixture": _write_wav(out / "Mixtures" / subset / folder / "mixture.wav", mix, song.sample_rate)}
        for name in ("bass", "drums", "other", "vocals"):
            paths[name] = _write_wav(out / "Sources" / subset / folder / f"{name}.wav", q[name], song.sample_rate)
        rec = _record(spec.index, f"{ident:03d}", artist, title, subset, folder, paths, song.sample_rate, 2, seconds, dsd_id=ident)
        records.append(rec)
        if progress:
            progress(rec)
    return records


def _musdb_subsets(specs: list[_Spec]) -> list[str]:
    subsets = []
    for s in specs:
        subset = s.subset or ("train" if s.index % 2 == 0 else "test")
        if subset not in ("train", "test"):
            raise StemforgeError(f"musdb subset must be 'train' or 'test', got {subset!r}")
        subsets.append(subset)
    return subsets


def write_musdb_hq(out: Path, specs: list[_Spec], seconds: float, seed: int, progress: Callable | None) -> list[dict]:
    records = []
    namer = _Namer()
    for spec, subset in zip(specs, _musdb_subsets(specs)):
        song = _song(seed, spec.index, seconds)
        artist, title = _named(song, spec, namer)
        folder = f"{artist} - {title}"
        q, mix = _quantized_stems(song)
        paths = {"mixture": _write_wav(out / subset / folder / "mixture.wav", mix, song.sample_rate)}
        for name in ("drums", "bass", "other", "vocals"):
            paths[name] = _write_wav(out / subset / folder / f"{name}.wav", q[name], song.sample_rate)
        rec = _record(spec.index, folder, artist, title, subset, f"{subset}/{folder}", paths, song.sample_rate, 2, seconds)
        records.append(rec)
        if progress:
            progress(rec)
    return records


def _write_stem_mp4(path: Path, streams: Sequence[np.ndarray], sample_rate: int, bit_rate: int = 256000) -> Path:
    """An MP4 with one AAC stream per array ([2, n] float32), written atomically
    (:func:`stemforge.core.files.atomic_path`)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    frame_size = 1024
    try:
        with files.atomic_path(path, fsync=False) as tmp, av.open(str(tmp), "w", format="mp4") as container:
            encoders = []
            for _ in streams:
                stream = container.add_stream("aac", rate=sample_rate, layout="stereo")
                stream.bit_rate = bit_rate
                encoders.append(stream)
            n = streams[0].shape[-1]
            for start in range(0, n, frame_size):
                for audio, stream in zip(streams, encoders):
                    chunk = np.ascontiguousarray(audio[:, start : start + frame_size], dtype=np.float32)
                    frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                    frame.sample_rate = sample_rate
                    frame.pts = start
                    for packet in stream.encode(frame):
                        container.mux(packet)
            for stream in encoders:
                for packet in stream.encode(None):
                    container.mux(packet)
    except StemforgeError:
        raise
    except Exception as exc:
        raise StemforgeError(f"{path}: cannot write the stem.mp4 ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})") from None
    return path


def write_musdb(out: Path, specs: list[_Spec], seconds: float, seed: int, progress: Callable | None, bit_rate: int = 256000) -> list[dict]:
    records = []
    namer = _Namer()
    for spec, subset in zip(specs, _musdb_subsets(specs)):
        song = _song(seed, spec.index, seconds)
        artist, title = _named(song, spec, namer)
        name = f"{artist} - {title}"
        st = song.stems()
        mix = song.mixture
        path = _write_stem_mp4(out / subset / f"{name}.stem.mp4", [mix, st["drums"], st["bass"], st["other"], st["vocals"]], song.sample_rate, bit_rate)
        rec = _record(
            spec.index, name, artist, title, subset, subset, {"stem_mp4": path}, song.sample_rate, 2, seconds,
            streams=["mixture", "drums", "bass", "other", "vocals"],
        )
        records.append(rec)
        if progress:
            progress(rec)
    return records


def _medleydb_synthetic_meta(singer: str, rng: np.random.Generator, track_id: str, artist: str, title: str) -> dict:
    """MedleyDB metadata (the real schema) for a synthetic track: drums, bass, 1-3 others, 2 voices."""
    lead = f"{singer} singer"
    others = ["piano", "clean electric guitar", "synthesizer", "acoustic guitar", "distorted electric guitar", "electric piano"]
    picks = [others[int(k)] for k in rng.choice(len(others), size=int(rng.integers(1, 4)), replace=False)]
    labels = [("drum set", ""), ("electric bass", "bass")] + [(p, "") for p in picks] + [(lead, "melody"), ("vocalists", "")]
    stems = {}
    for k, (label, component) in enumerate(labels, start=1):
        stems[f"S{k:02d}"] = {
            "component": component,
            "filename": f"{track_id}_STEM_{k:02d}.wav",
            "instrument": label,
            "raw": {"R01": {"filename": f"{track_id}_RAW_{k:02d}_01.wav", "instrument": label}},
        }
    return {
        "album": "Synthetic Sessions",
        "artist": artist,
        "composer": [artist],
        "excerpt": "no",
        "genre": "Pop",
        "has_bleed": "no",
        "instrumental": "no",
        "mix_filename": f"{track_id}_MIX.wav",
        "origin": "stemforge synth",
        "producer": [artist],
        "raw_dir": f"{track_id}_RAW",
        "stem_dir": f"{track_id}_STEMS",
        "stems": stems,
        "title": title,
        "version": 1.2,
        "website": [],
    }


def _medleydb_sources(metadata_dir: Path | None, track_ids: Sequence[str] | None, songs: int) -> list[tuple[str, Path]]:
    if metadata_dir is None:
        if track_ids:
            raise StemforgeError("medleydb: track_ids needs metadata_dir (the folder of real *_METADATA.yaml files)")
        return []
    metadata_dir = Path(metadata_dir)
    if not metadata_dir.is_dir():
        raise StemforgeError(f"medleydb: metadata_dir {metadata_dir} is not a folder")
    found = {}
    for p in sorted(metadata_dir.glob("*.yaml")):
        tid = p.name[: -len("_METADATA.yaml")] if p.name.endswith("_METADATA.yaml") else p.stem
        found[tid] = p
    if not found:
        raise StemforgeError(f"medleydb: no *_METADATA.yaml file in {metadata_dir}")
    if track_ids:
        missing = [t for t in track_ids if t not in found]
        if missing:
            raise StemforgeError(f"medleydb: no metadata in {metadata_dir} for track ids {missing}")
        chosen = [(t, found[t]) for t in track_ids]
    else:
        chosen = sorted(found.items())
    if songs > 0:
        chosen = chosen[:songs]
    return chosen


def write_medleydb(
    out: Path,
    specs: list[_Spec],
    seconds: float,
    seed: int,
    progress: Callable | None,
    metadata_dir: Path | None = None,
    track_ids: Sequence[str] | None = None,
    songs: int = 0,
) -> list[dict]:
    import yaml

    sources = _medleydb_sources(metadata_dir, track_ids, songs)
    sr = 44100
    n_samples = song_samples(seconds, sr)
    count = len(sources) if sources else len(specs)
    namer = _Namer()
    records = []
    coefficients: dict[str, dict] = {}
    coef_path = out / "mixing_coefficients.yaml"
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        if sources:
            track_id, meta_path = sources[i]
            try:
                meta = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                raise StemforgeError(f"{meta_path}: not readable MedleyDB metadata ({exc})") from None
            if not isinstance(meta, dict):
                raise StemforgeError(f"{meta_path}: not readable MedleyDB metadata (not a mapping)")
            artist, title = str(meta.get("artist", "")), str(meta.get("title", ""))
        else:
            spec = specs[i]
            name_rng = child_rng(rng)
            gen_artist, gen_title = song_names(name_rng)
            artist, title = namer(spec.artist if spec.artist is not None else gen_artist, spec.title if spec.title is not None else gen_title)
            track_id = _camel(artist) + "_" + _camel(title)
            singer = "female" if name_rng.random() < 0.5 else "male"
            meta = _medleydb_synthetic_meta(singer, name_rng, track_id, artist, title)
        stems_meta = meta.get("stems") or {}
        keys = sorted(stems_meta, key=lambda k: int(re.sub(r"\D", "", str(k)) or 0))
        labels = [(stems_meta[k] or {}).get("instrument") for k in keys]
        audio, _plan = synthesize_multitrack(rng, n_samples, sr, labels) if keys else ([], None)
        weights = [round(float(w), 4) for w in rng.uniform(0.5, 1.0, size=len(keys))]
        if audio:
            mix = np.zeros_like(audio[0])
            for w, a in zip(weights, audio):
                mix += np.float32(w) * a
            peak = float(max(mix.max(), -mix.min()))
            if peak > 0.89:
                for a in audio:
                    a *= np.float32(0.89 / peak)
            audio = [_q16(a) for a in audio]
            mix = np.zeros_like(audio[0])
            for w, a in zip(weights, audio):
                mix += np.float32(w) * a
        else:
            mix = np.zeros((2, n_samples), dtype=np.float32)
        track_dir = out / "Audio" / track_id
        stem_dir = track_dir / str(meta.get("stem_dir") or f"{track_id}_STEMS")
        paths: dict[str, Any] = {"mixture": _write_wav(track_dir / str(meta.get("mix_filename") or f"{track_id}_MIX.wav"), _q16(mix), sr)}
        stem_paths = {}
        for k, a in zip(keys, audio):
            fname = str((stems_meta[k] or {}).get("filename") or f"{track_id}_STEM_{int(re.sub(r'[^0-9]', '', k) or 0):02d}.wav")
            stem_paths[k] = _write_wav(stem_dir / fname, a, sr)
        paths["stems"] = stem_paths
        meta_out = track_dir / f"{track_id}_METADATA.yaml"
        if sources:
            shutil.copyfile(sources[i][1], meta_out)
        else:
            meta_out.write_text(yaml.safe_dump(meta, sort_keys=True, allow_unicode=True), encoding="utf-8")
        paths["metadata"] = meta_out
        index_weights = {int(re.sub(r"\D", "", k) or 0): w for k, w in zip(keys, weights)}
        coefficients[track_id] = {m: dict(index_weights) for m in ("manual", "audio", "stft")}
        kinds = {k: stem_kind(lbl) for k, lbl in zip(keys, labels)}
        rec = _record(
            i, track_id, artist, title, None, f"Audio/{track_id}", paths, sr, 2, seconds,
            weights={k: w for k, w in zip(keys, weights)}, stem_kinds=kinds, metadata_source=str(sources[i][1]) if sources else None,
        )
        records.append(rec)
        # rewrite the coefficients after every track so a partial tree stays consistent
        _atomic_text(coef_path, yaml.safe_dump(coefficients, sort_keys=True, default_flow_style=None, width=100))
        if progress:
            progress(rec)
    for rec in records:
        rec["paths"]["mixing_coefficients"] = coef_path
    return records


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_text(path, text)


def _two_channel(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """[2, n] from two mono signals ([n] or [1, n])."""
    return np.stack([left.reshape(-1), right.reshape(-1)]).astype(np.float32, copy=False)


def write_ikala(out: Path, specs: list[_Spec], seconds: float, seed: int, progress: Callable | None) -> list[dict]:
    records = []
    used = set()
    for spec in specs:
        if spec.id is not None:
            clip_id = str(spec.id)
            if not re.fullmatch(r"\d{5}_(chorus|verse)", clip_id):
                raise StemforgeError(f"ikala clip id must look like 10161_chorus or 10161_verse, got {clip_id!r}")
        else:
            clip_id = f"{10100 + spec.index // 2}_{('chorus', 'verse')[spec.index % 2]}"
        if clip_id in used:
            raise StemforgeError(f"ikala clip id {clip_id} given twice")
        used.add(clip_id)
        song = _song(seed, spec.index, seconds, 44100, stereo=False)
        audio = _two_channel(_q16(song.accompaniment), _q16(song.vocals))
        path = _write_wav(out / "Wavfile" / f"{clip_id}.wav", audio, song.sample_rate)
        rec = _record(
            spec.index, clip_id, song.artist, song.title, None, "Wavfile", {"audio": path}, song.sample_rate, 2, seconds,
            song_id=clip_id.split("_")[0], section=clip_id.split("_")[1], channels_layout="left=accompaniment, right=voice",
        )
        records.append(rec)
        if progress:
            progress(rec)
    return records


#: MIR-1K singer ids (the corpus names its files after its 19 amateur singers).
_MIR1K_SINGERS = (
    "abjones", "amy", "annar", "ariel", "bobon", "bug", "davidson", "fdps", "geniusturtle",
    "heycat", "jmzen", "khair", "leon", "stool", "tammy", "titon", "yifen",
)


def write_mir1k(out: Path, specs: list[_Spec], seconds: float, seed: int, progress: Callable | None, singers: int = 3, clip_seconds: float = 8.0) -> list[dict]:
    if not isinstance(singers, int) or not 1 <= singers <= len(_MIR1K_SINGERS):
        raise StemforgeError(f"mir1k: singers must be 1..{len(_MIR1K_SINGERS)}, got {singers!r}")
    if not clip_seconds > 0:
        raise StemforgeError(f"mir1k: clip_seconds must be > 0, got {clip_seconds!r}")
    sr = 16000
    records = []
    for spec in specs:
        singer = _MIR1K_SINGERS[spec.index % singers]
        song_no = spec.index // singers + 1
        song_name = f"{singer}_{song_no}"
        if spec.id is not None:
            song_name = str(spec.id)
            if not re.fullmatch(r"[A-Za-z]+_\d+", song_name):
                raise StemforgeError(f"mir1k id must look like abjones_1 (singer_songno), got {song_name!r}")
            singer = song_name.split("_")[0]
        song = _song(seed, spec.index, seconds, sr, stereo=False)
        audio = _two_channel(_q16(song.accompaniment), _q16(song.vocals))
        undivided = _write_wav(out / "UndividedWavfile" / f"{song_name}.wav", audio, sr)
        n = audio.shape[1]
        n_clips = max(1, int(round(seconds / clip_seconds)))
        bounds = np.linspace(0, n, n_clips + 1).round().astype(int)
        for c in range(n_clips):
            clip_id = f"{song_name}_{c + 1:02d}"
            path = _write_wav(out / "Wavfile" / f"{clip_id}.wav", audio[:, bounds[c] : bounds[c + 1]], sr)
            rec = _record(
                spec.index, clip_id, singer, f"{song_name}", None, "Wavfile", {"audio": path, "undivided": undivided}, sr, 2,
                (bounds[c + 1] - bounds[c]) / sr, singer=singer, song=song_name, clip=c + 1,
                start_s=bounds[c] / sr, channels_layout="left=accompaniment, right=voice",
            )
            records.append(rec)
        if progress:
            progress(records[-1])
    return records


def write_ccmixter(out: Path, specs: list[_Spec], seconds: float, seed: int, progress: Callable | None) -> list[dict]:
    records = []
    namer = _Namer()
    for spec in specs:
        stereo = spec.index % 3 != 2
        song = _song(seed, spec.index, seconds, 44100, stereo=stereo)
        artist, title = _named(song, spec, namer)
        folder = f"{artist} - {title}"
        acc, voc = _q16(song.accompaniment), _q16(song.vocals)
        paths = {
            "mixture": _write_wav(out / folder / "mix.wav", acc + voc, song.sample_rate),
            "accompaniment": _write_wav(out / folder / "source-01.wav", acc, song.sample_rate),
            "vocals": _write_wav(out / folder / "source-02.wav", voc, song.sample_rate),
        }
        rec = _record(spec.index, folder, artist, title, None, folder, paths, song.sample_rate, 2 if stereo else 1, seconds)
        records.append(rec)
        if progress:
            progress(rec)
    return records


def write_pairs(
    out: Path,
    specs: list[_Spec],
    seconds: float,
    seed: int,
    progress: Callable | None,
    max_offset_s: float = 8.0,
    max_gain_db: float = 4.0,
    karaoke_rate: int = 48000,
) -> list[dict]:
    from stemforge.core.audio import resample

    sr = 44100
    n_songs = len(specs)
    wrong = int(np.random.default_rng([seed, 999_983]).integers(n_songs)) if n_songs >= 3 else None
    namer = _Namer()
    names = []
    records = []
    pairs_rows = []
    truth_rows = []
    eff_offset = min(float(max_offset_s), 0.25 * seconds)
    max_tail = min(3.0, 0.2 * seconds)
    for spec in specs:
        song = _song(seed, spec.index, seconds)
        artist, title = _named(song, spec, namer)
        names.append((artist, title))
        name = f"{artist} - {title}"
        voc = _q16(song.vocals)
        acc = _q16(song.accompaniment)
        n = acc.shape[1]
        original = voc + acc
        p_orig = _write_wav(out / "originals" / f"{name}.wav", original, sr)
        p_voc = _write_wav(out / "truth" / name / "vocals.wav", voc, sr)
        p_acc = _write_wav(out / "truth" / name / "accompaniment.wav", acc, sr)
        source = acc
        source_name = name
        if spec.index == wrong:
            other_index = (spec.index + 1) % n_songs
            other = _song(seed, other_index, seconds)
            source = _q16(other.accompaniment)
            source_name = f"other song (index {other_index})"
        prng = np.random.default_rng([seed, spec.index, 1])
        sign = 1.0 if spec.index % 2 == 0 else -1.0
        offset_samples = int(round(sign * prng.uniform(0.2, 1.0) * eff_offset * sr))
        tail_samples = int(round(prng.uniform(-max_tail, max_tail) * sr))
        n_kar = max(n // 2, n + offset_samples + tail_samples)
        shifted = np.zeros((source.shape[0], n_kar), dtype=np.float32)
        if offset_samples >= 0:  # karaoke starts with silence, the song's t=0 at offset_s
            seg = source[:, : max(0, n_kar - offset_samples)]
            shifted[:, offset_samples : offset_samples + seg.shape[1]] = seg
        else:  # karaoke starts later in the song
            seg = source[:, -offset_samples : -offset_samples + n_kar]
            shifted[:, : seg.shape[1]] = seg
        gain_db = float(prng.uniform(-max_gain_db, max_gain_db))
        peak = float(max(shifted.max(), -shifted.min())) if shifted.size else 0.0
        if peak > 0 and peak * 10 ** (gain_db / 20) > 0.98:
            gain_db = 20 * math.log10(0.98 / peak)
        shifted *= np.float32(10 ** (gain_db / 20))
        karaoke = _q16(resample(shifted, sr, karaoke_rate))
        p_kar = _write_wav(out / "karaoke" / f"{name}.wav", karaoke, karaoke_rate)
        offset_s = offset_samples / sr
        truth = {
            "artist": artist,
            "title": title,
            "original": f"originals/{name}.wav",
            "karaoke": f"karaoke/{name}.wav",
            "vocals": f"truth/{name}/vocals.wav",
            "accompaniment": f"truth/{name}/accompaniment.wav",
            "offset_s": offset_s,
            "offset_samples": offset_samples,
            "offset_samples_karaoke": offset_s * karaoke_rate,
            "gain_db": round(gain_db, 6),
            "karaoke_seconds": karaoke.shape[1] / karaoke_rate,
            "wrong": spec.index == wrong,
            "karaoke_source": source_name,
        }
        truth_rows.append(truth)
        pairs_rows.append({"original": truth["original"], "karaoke": truth["karaoke"], "artist": artist, "title": title})
        rec = _record(
            spec.index, name, artist, title, None, ".",
            {"original": p_orig, "karaoke": p_kar, "vocals": p_voc, "accompaniment": p_acc}, sr, 2, seconds,
            offset_s=offset_s, offset_samples=offset_samples, gain_db=truth["gain_db"], wrong=truth["wrong"], karaoke_rate=karaoke_rate,
        )
        records.append(rec)
        if progress:
            progress(rec)
    sio = io.StringIO()
    writer = csv.DictWriter(sio, fieldnames=["original", "karaoke", "artist", "title"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(pairs_rows)
    _atomic_text(out / "pairs.csv", sio.getvalue())
    _atomic_text(
        out / "truth.json",
        json.dumps(
            {
                "sign_convention": (
                    "karaoke(t) = 10**(gain_db/20) * accompaniment(t - offset_s): offset_s is the time in the "
                    "karaoke file at which the original's t=0 appears; negative means the karaoke starts "
                    "-offset_s seconds into the song"
                ),
                "original_sample_rate": sr,
                "karaoke_sample_rate": karaoke_rate,
                "pairs": truth_rows,
            },
            indent=2,
        )
        + "\n",
    )
    for rec in records:
        rec["paths"]["pairs_csv"] = out / "pairs.csv"
        rec["paths"]["truth_json"] = out / "truth.json"
    return records


def write_corpus(
    out: str | os.PathLike,
    layout: str,
    songs: int,
    seconds: float,
    seed: int,
    names: list[tuple[str, str]] | None = None,
    **options: Any,
) -> list[dict]:
    """Write ``songs`` synthetic songs of ``seconds`` s under ``out`` in the real layout ``layout``.

    Song ``i`` is synthesized from ``numpy.random.default_rng([seed, i])``, so adding songs
    never changes earlier ones. ``names`` gives (artist, title) for the first songs (real
    song names, e.g. for leakage tests); generated names fill the rest. Returns one dict per
    track written: ``index``, ``track_id``, ``artist``, ``title``, ``subset`` (the layout's
    split folder or None), ``folder``, ``paths`` (role -> Path), ``sample_rate``, ``channels``,
    ``seconds`` and layout-specific keys (see docs/synth.md). WAV files are PCM_16.

    Layouts and their options (``**options``):

    * ``dsd100``: ``Mixtures/{Dev,Test}/NNN - Artist - Title/mixture.wav`` and
      ``Sources/{Dev,Test}/NNN - Artist - Title/{bass,drums,other,vocals}.wav``; even indices
      go to Dev (ids from 051), odd to Test (ids from 001); the mixture is exactly the sum of
      the written sources. ``entries=[{"id": 53, "subset": "Dev", "artist": .., "title": ..}]``
      reproduces real folder names.
    * ``musdb-hq``: ``{train,test}/Artist - Title/{mixture,drums,bass,other,vocals}.wav``;
      ``musdb``: ``{train,test}/Artist - Title.stem.mp4`` (5 AAC streams: mixture, drums,
      bass, other, vocals; ``bit_rate`` per stream, default 256000). Even indices train, odd
      test; ``entries`` with ``subset`` ("train"/"test"), ``artist``, ``title``.
    * ``medleydb``: ``Audio/<id>/<id>_MIX.wav``, ``<id>_STEMS/<id>_STEM_NN.wav``,
      ``<id>_METADATA.yaml`` and ``mixing_coefficients.yaml`` at the root. ``metadata_dir``:
      one track per real metadata file there (sorted; ``songs`` > 0 keeps the first ``songs``,
      0 keeps all; ``track_ids`` picks some), the yaml copied as is. Without it, synthetic
      metadata in the same schema. The MIX is sum_k w_k * STEM_k with w_k uniform in
      [0.5, 1.0] (written under ``manual``, ``audio`` and ``stft``, all equal).
    * ``ikala``: ``Wavfile/<5-digit id>_<chorus|verse>.wav``, left accompaniment, right voice;
      ``entries`` with ``id`` ("10161_chorus") reproduce real ids.
    * ``mir1k``: 16 kHz, ``Wavfile/<singer>_<song>_<clip>.wav`` and
      ``UndividedWavfile/<singer>_<song>.wav``, left accompaniment, right voice; ``singers``
      (default 3) distinct singers, ``clip_seconds`` (default 8) per clip. One dict per clip.
    * ``ccmixter``: ``Artist - Title/{mix,source-01,source-02}.wav`` (source-01 accompaniment,
      source-02 voice); every third song (index % 3 == 2) is mono.
    * ``pairs``: ``originals/<name>.wav`` (44.1 kHz), ``karaoke/<name>.wav`` (accompaniment at
      ``karaoke_rate`` = 48000 Hz, shifted by ``offset_s``, scaled by ``gain_db``, cut or padded),
      ``pairs.csv`` (original,karaoke,artist,title), ``truth/<name>/{vocals,accompaniment}.wav``
      and ``truth.json``. Convention: ``karaoke(t) = 10**(gain_db/20) * accompaniment(t - offset_s)``,
      i.e. offset_s is the time in the karaoke file where the original's t=0 appears (negative:
      the karaoke starts later in the song). Even indices get positive offsets, odd negative;
      ``|offset_s| <= min(max_offset_s (8), seconds / 4)``; ``|gain_db| <= max_gain_db`` (4).
      With 3 songs or more exactly one pair is wrong (its karaoke is another song's).

    ``progress``: optional callable called with each song's dict once it is written.
    Raises StemforgeError for an unknown layout or option and for invalid arguments.
    """
    if layout not in LAYOUTS:
        raise StemforgeError(f"unknown layout {layout!r}; layouts: {', '.join(LAYOUTS)}")
    if isinstance(songs, bool) or not isinstance(songs, (int, np.integer)):
        raise StemforgeError(f"songs must be an integer, got {songs!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise StemforgeError(f"seed must be a non-negative integer, got {seed!r}")
    song_samples(seconds, 16000)
    progress = options.pop("progress", None)
    writer, allowed = globals()[LAYOUTS[layout].writer], set(LAYOUTS[layout].options)
    unknown = set(options) - allowed
    if unknown:
        raise StemforgeError(
            f"layout {layout!r} does not take option(s) {sorted(unknown)}; it takes: {', '.join(sorted(allowed)) or 'none'}"
        )
    entries = options.pop("entries", None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if layout == "medleydb":
        metadata_dir = options.get("metadata_dir")
        if metadata_dir is not None:
            if songs < 0:
                raise StemforgeError(f"songs must be >= 0 with metadata_dir (0: every file), got {songs}")
            return writer(out, [], float(seconds), int(seed), progress, songs=int(songs), **options)
        if songs < 1 and not names:
            raise StemforgeError(f"songs must be >= 1, got {songs}")
    specs = _specs(int(songs), names, entries)
    return writer(out, specs, float(seconds), int(seed), progress, **options)
