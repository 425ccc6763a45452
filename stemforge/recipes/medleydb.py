"""MedleyDB (1.0 and 2.0, plus the EXTRA and BACH10 sets): multitracks with per-stem labels.

Layout::

    ROOT/
      Audio/<id>/<id>_MIX.wav
      Audio/<id>/<id>_STEMS/<id>_STEM_01.wav ...
      Audio/<id>/<id>_METADATA.yaml              (or ROOT/Metadata/<id>_METADATA.yaml)

``ROOT`` may also be the ``Audio`` folder itself. Every file is 44.1 kHz (stereo or mono) PCM.

Metadata is read within bounds (:func:`read_metadata`: 1 MiB, 200,000 nodes with aliases counted
as copies, 64 levels) and the names it gives (``stem_dir``, ``filename``, ``mix_filename``) must
stay inside the Audio folder (:func:`stemforge.recipes.base.inside_root`); a file that breaks
either fails its own track with a one-line reason, and the other tracks go on.

What is vocals: a stem is vocal when its instrument label(s) are in the taxonomy's ``voices``
family and selected by ``voices``: ``"singing"`` (default) keeps male/female singer,
vocalists, choir, male/female rapper; ``"all"`` adds speakers, screamers, crowd and
beatboxing. A stem carrying a selected voice label *and* an instrument label (list-valued
labels, EXTRA) is not a clean target: the track is skipped with that reason. A track without
a vocal stem is skipped as instrumental (decided by the labels, not by the ``instrumental``
flag, which is wrong on a few tracks); a track whose stems are all vocal is skipped as a
cappella (no accompaniment).

vocals = sum of the vocal stems, accompaniment = sum of the other stems, each stem weighted by
its mixing coefficient (the manual coefficient when the track has one for every stem, else the
mean of the audio and stft estimates; from ``ROOT/mixing_coefficients.yaml`` when the corpus
has one, in the schema of MedleyDB's ``mixing_coefficients_version2.yaml``, else from the
shipped ``manifests/medleydb_mixing_coefficients.csv``, built from that file). The MIX is
that weighted sum, so by default (``mixture="derived"``) the stored mixture is vocals +
accompaniment, exactly consistent with the targets, as MedleyDB's own mixing tools build it;
``mixture="file"`` stores ``<id>_MIX.wav`` instead and ``mix_residual_db`` says how well the
weighted stems match it. Tracks without coefficients (BACH10, unknown ids) sum their stems with
gain 1 and always derive the mixture (column ``mix_source``: ``file`` / ``derived``).

Versions come from ``manifests/medleydb_tracks.csv`` (V1, V2, EXTRA, BACH10; the metadata's own
``version`` field is the metadata format, 1.2 everywhere); ids not in that table are
``unknown``. Default: every version found.

Split: artist-conditional (one artist never on both sides), deterministic, from the reference
track list (not from what is on disk, so a partial copy gets the same splits as the full
corpus): the artists of the tracks MUSDB18 holds for validation -> valid, the others assigned
whole, heaviest first, to approach ``valid_fraction`` and ``test_fraction`` of the tracks with a
voice stem (see :func:`stemforge.recipes.splits.balanced_split`). MUSDB18 trains on some tracks that
land in valid or test here: ingesting both moves those MUSDB18 rows (song identity).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from stemforge.core.errors import DatasetLayoutError, OptionError
from stemforge.recipes.splits import balanced_split, check_fractions, hash_split
from stemforge.recipes.base import StemRef, TrackSource, check_choice, inside_root

NAME = "medleydb"
LAYOUT = __doc__
LICENSE = "MedleyDB: CC BY-NC-SA 4.0"
VERSIONS = ("V1", "V2", "EXTRA", "BACH10", "unknown")
VOICE_MODES = ("singing", "all")
MIXTURE_MODES = ("derived", "file")
VALID_FRACTION = 0.1
TEST_FRACTION = 0.15
_SALT = "medleydb-artist-split-v1"


# -- reference tables ------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _tracks() -> dict[str, dict]:
    from stemforge.recipes.reference import reference_manifest

    return {r["track_id"]: r for r in reference_manifest("medleydb_tracks").to_dict("records")}


@lru_cache(maxsize=1)
def _coefficients() -> dict[str, dict[int, float]]:
    from stemforge.recipes.reference import reference_manifest

    out: dict[str, dict[int, float]] = {}
    for tid, stem, gain in reference_manifest("medleydb_mixing_coefficients")[["track_id", "stem", "gain"]].itertuples(index=False):
        out.setdefault(tid, {})[int(stem)] = float(gain)
    return out


def resolve_coefficients(entry: dict) -> tuple[dict[int, float], str]:
    """One track's entry of a MedleyDB mixing-coefficients YAML -> (stem index -> gain, method).

    ``manual`` when it has a coefficient for every stem, else the mean of ``audio`` and ``stft``
    (the estimates MedleyDB fitted to the MIX), else whichever of them exists.
    """
    manual = {int(k): float(v) for k, v in (entry.get("manual") or {}).items()}
    est = {name: {int(k): float(v) for k, v in (entry.get(name) or {}).items()} for name in ("audio", "stft")}
    stems = set(manual) | set(est["audio"]) | set(est["stft"])
    if manual and set(manual) >= stems:
        return manual, "manual"
    if est["audio"] and est["stft"]:
        return {s: (est["audio"].get(s, est["stft"].get(s, 1.0)) + est["stft"].get(s, est["audio"].get(s, 1.0))) / 2.0 for s in stems}, "mean(audio,stft)"
    only = est["audio"] or est["stft"] or manual
    return dict(only), "audio" if est["audio"] else ("stft" if est["stft"] else "manual")


COEFFICIENT_FILES = ("mixing_coefficients.yaml", "mixing_coefficients_version2.yaml")


def _corpus_coefficients(root: Path) -> dict[str, dict[int, float]]:
    """Coefficients shipped with the corpus (a YAML at its root), which take precedence."""
    for name in COEFFICIENT_FILES:
        p = root / name
        if p.is_file():
            data = read_yaml(p, MAX_COEFFICIENT_BYTES, "mixing coefficients") or {}
            if not isinstance(data, dict):
                raise DatasetLayoutError(f"{p}: mixing coefficients must map track id -> {{manual, audio, stft}}")
            try:
                return {str(tid): resolve_coefficients(e or {})[0] for tid, e in data.items() if isinstance(e, dict)}
            except (TypeError, ValueError, AttributeError) as exc:
                raise DatasetLayoutError(f"{p}: mixing coefficients must map stem index -> number ({_one_line(exc)})") from None
    return {}


@lru_cache(maxsize=1)
def voice_labels() -> dict[str, frozenset[str]]:
    """``{"singing": labels, "all": labels}`` from the shipped taxonomy's voices family."""
    from stemforge.recipes.reference import reference_manifest

    tax = reference_manifest("medleydb_taxonomy")
    voices = tax[tax["family"] == "voices"]
    return {
        "singing": frozenset(voices.loc[voices["voice_group"] == "singing", "label"]),
        "all": frozenset(voices["label"]),
    }


def artist_group(artist: str) -> str:
    """The artist as a split group: case, spaces and punctuation ignored ("Matthew Entwistle"
    and "MatthewEntwistle" are one artist; "Music Delta [0]" and "[1]" stay two)."""
    return re.sub(r"[^a-z0-9\[\]]+", "", str(artist).lower())


def artist_splits(valid_fraction: float = VALID_FRACTION, test_fraction: float = TEST_FRACTION) -> dict[str, str]:
    """Artist group -> split over the whole reference list (see the module docstring)."""
    return _artist_splits(float(valid_fraction), float(test_fraction))


@lru_cache(maxsize=8)
def _artist_splits(valid_fraction: float, test_fraction: float) -> dict[str, str]:
    weights: dict[str, float] = {}
    fixed: dict[str, str] = {}
    for r in _tracks().values():
        g = artist_group(r["split_artist"])
        weights[g] = weights.get(g, 0.0) + (1.0 if r["voice_stems"] else 0.0)
        if r.get("musdb18_split", "") == "valid":
            fixed[g] = "valid"
    weights = {g: w for g, w in weights.items() if w > 0 or g in fixed}
    return balanced_split(weights, valid_fraction, test_fraction, salt=_SALT, fixed=fixed)


#: Bounds on a YAML file the recipe reads. The 330 real METADATA files are at most 11 KB and 800
#: nodes, 5 levels deep, with no anchor or alias; the corpus's mixing coefficients are one file
#: of about 200 tracks.
MAX_METADATA_BYTES = 1 << 20
MAX_COEFFICIENT_BYTES = 16 << 20
MAX_YAML_NODES = 200_000
MAX_YAML_DEPTH = 64


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _expanded_size(root, max_nodes: int, max_depth: int) -> int:
    """Nodes of a composed YAML graph counted as if every alias were a copy of its anchor
    (what constructing and then walking the data costs), without expanding anything: each
    shared node is sized once. ValueError beyond ``max_nodes`` or ``max_depth``, or for a
    recursive alias (a node inside itself)."""
    import yaml

    def children(node):
        if isinstance(node, yaml.SequenceNode):
            return node.value
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return []

    sizes: dict[int, int] = {}
    entered: set[int] = set()
    stack = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            entered.discard(key)
            size = 1 + sum(sizes[id(c)] for c in children(node))
            if size > max_nodes:
                raise ValueError(f"expands to more than {max_nodes} nodes (aliases counted as copies)")
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in entered:
            raise ValueError("holds a recursive alias (a node inside itself)")
        if depth > max_depth:
            raise ValueError(f"nests deeper than {max_depth} levels")
        entered.add(key)
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children(node) if id(c) not in sizes)
    return sizes[id(root)]


def safe_load_yaml(text: str, max_nodes: int = MAX_YAML_NODES, max_depth: int = MAX_YAML_DEPTH):
    """``yaml.safe_load`` bounded: the document is composed (libyaml's C parser when PyYAML has
    it, 10x faster on 330 files), sized with aliases and merge keys counted as copies, and
    constructed only when it stays within ``max_nodes`` nodes and ``max_depth`` levels, so an
    alias bomb of a few KB is refused in milliseconds instead of taking minutes and GBs.

    Raises ValueError (over a bound, a recursive alias) or ``yaml.YAMLError`` (not YAML).
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, max_nodes, max_depth)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: Path, max_bytes: int = MAX_METADATA_BYTES, what: str = "YAML"):
    """One YAML file of the corpus, bounded: at most ``max_bytes`` bytes, then
    :func:`safe_load_yaml`. Raises DatasetLayoutError with a one-line reason naming ``path``
    (``"PATH: unreadable WHAT (reason)"``).
    """
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ValueError(f"{size} bytes, more than the {max_bytes} a file of this kind may have")
        return safe_load_yaml(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise DatasetLayoutError(f"{path}: unreadable {what} (nests too deep)") from None
    except Exception as exc:  # yaml.YAMLError, ValueError, OSError, UnicodeDecodeError: one reason
        raise DatasetLayoutError(f"{path}: unreadable {what} ({_one_line(exc)})") from None


def read_metadata(path: Path) -> dict:
    """A track's ``<id>_METADATA.yaml``, bounded (:func:`read_yaml`) and checked for what
    discovery reads: a mapping whose ``stems`` map stem ids (returned as strings) to mappings
    with a scalar ``filename``, and scalar ``stem_dir``/``mix_filename`` when given.

    Raises DatasetLayoutError naming ``path`` with a one-line reason; discovery turns it into
    that track's error, and the other tracks go on.
    """
    meta = read_yaml(path, MAX_METADATA_BYTES, "metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("stems"), dict):
        raise DatasetLayoutError(f"{path}: unreadable metadata (no 'stems' mapping)")
    scalar = (str, int, float)
    for key in ("stem_dir", "mix_filename"):
        if meta.get(key) is not None and not isinstance(meta[key], scalar):
            raise DatasetLayoutError(f"{path}: unreadable metadata ({key} is not a file name)")
    stems = {}
    for sid, stem in meta["stems"].items():
        if not isinstance(stem, dict) or not isinstance(stem.get("filename"), scalar) or isinstance(stem["filename"], bool):
            raise DatasetLayoutError(f"{path}: unreadable metadata (stem {sid} has no filename)")
        stems[str(sid)] = {**stem, "filename": str(stem["filename"])}
    return {**meta, "stems": stems}


def _stem_index(sid: str) -> int:
    """``"S03"`` -> 3, the key of the mixing coefficients; -1 (no coefficient) for other ids."""
    m = re.fullmatch(r"S?(\d+)", sid)
    return int(m.group(1)) if m else -1


# -- labels ----------------------------------------------------------------------------------
def _labels(stem: dict) -> list[str]:
    lab = stem.get("instrument", "")
    if isinstance(lab, (list, tuple)):
        return [str(x) for x in lab]
    return [str(lab)] if lab not in (None, "") else []


def classify_stems(metadata: dict, voices: str = "singing") -> tuple[list[str], list[str], str | None]:
    """Split a track's stems into (vocal stem ids, other stem ids, skip reason or None).

    A stem is vocal when one of its labels is a selected voice label and none is an instrument;
    a selected voice label next to an instrument label makes the track unusable (reason
    "mixed-label voice stem"). No vocal stem: "instrumental"; no other stem: "a cappella".
    """
    check_choice("voices", voices, VOICE_MODES)
    selected = voice_labels()[voices]
    family = voice_labels()["all"]
    stems = metadata.get("stems") or {}
    vocal, other = [], []
    for sid in sorted(stems):
        labels = _labels(stems[sid] or {})
        chosen = [x for x in labels if x in selected]
        instruments = [x for x in labels if x not in family]
        if chosen and instruments:
            return vocal, other, f"mixed-label voice stem: {sid} is labelled {' + '.join(labels)}"
        (vocal if chosen else other).append(sid)
    if not vocal:
        what = "a singing voice" if voices == "singing" else "a voice"
        return vocal, other, f"instrumental: no stem labelled as {what} (instrumental flag: {metadata.get('instrumental', '?')})"
    if not other:
        return vocal, other, "a cappella: every stem is a voice, no accompaniment"
    return vocal, other, None


# -- discovery -------------------------------------------------------------------------------
def _audio_dir(root: Path) -> Path:
    if (root / "Audio").is_dir():
        return root / "Audio"
    if any(p.is_dir() and (p / f"{p.name}_MIX.wav").exists() for p in root.iterdir()):
        return root
    found = sorted(p.name for p in root.iterdir())[:8]
    raise DatasetLayoutError(
        f"{root}: not a MedleyDB root: expected Audio/<id>/<id>_MIX.wav, Audio/<id>/<id>_STEMS/*.wav and "
        f"<id>_METADATA.yaml; found {found or 'nothing'}"
    )


def _metadata_path(root: Path, track_dir: Path) -> Path | None:
    tid = track_dir.name
    for p in (track_dir / f"{tid}_METADATA.yaml", root / "Metadata" / f"{tid}_METADATA.yaml"):
        if p.exists():
            return p
    return None


def check_options(
    versions: str | tuple[str, ...] | None = None,
    exclude_bleed: bool = False,
    voices: str = "singing",
    mixture: str = "derived",
    valid_fraction: float = VALID_FRACTION,
    test_fraction: float = TEST_FRACTION,
) -> None:
    """OptionError naming the first option :func:`discover` refuses: ``voices`` not in
    :data:`VOICE_MODES`, ``mixture`` not in :data:`MIXTURE_MODES`, a version (comma-separated,
    any case; ``"all"``, empty or None: every version) not in :data:`VERSIONS`, bad fractions."""
    check_choice("voices", voices, VOICE_MODES)
    check_choice("mixture", mixture, MIXTURE_MODES)
    known = {v.lower() for v in VERSIONS}
    bad = [v for v in _version_items(versions) if v.lower() not in known]
    if bad:
        raise OptionError("versions", f"unknown MedleyDB version {bad[0]!r}; known: {', '.join(VERSIONS)}")
    check_fractions(valid_fraction, test_fraction)


def _version_items(value: str | tuple[str, ...] | None) -> tuple[str, ...]:
    if value is None or value == "" or value == "all":
        return ()
    return tuple(v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip())


def discover(
    root: str | Path,
    versions: str | tuple[str, ...] | None = None,
    exclude_bleed: bool = False,
    voices: str = "singing",
    mixture: str = "derived",
    valid_fraction: float = VALID_FRACTION,
    test_fraction: float = TEST_FRACTION,
) -> list[TrackSource]:
    """Every track folder under ``Audio/`` of the selected versions (default: all found).

    Tracks excluded by rule come back with ``skip_reason`` (instrumental, a cappella,
    mixed-label voice stem, bleed when ``exclude_bleed``); broken ones with ``error``
    (unreadable metadata, a missing stem file). Tracks of versions not selected are left out.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: corpus root not found (or not a folder)")
    check_options(versions, exclude_bleed, voices, mixture, valid_fraction, test_fraction)
    norm = {v.lower(): v for v in VERSIONS}
    wanted = tuple(norm[v.lower()] for v in _version_items(versions)) or None
    audio = _audio_dir(root)
    ref = _tracks()
    options = _Options(
        voices, mixture, exclude_bleed, valid_fraction, test_fraction,
        coefficients={**_coefficients(), **_corpus_coefficients(root)}, splits=artist_splits(valid_fraction, test_fraction),
    )
    tracks: list[TrackSource] = []
    n_dirs = 0
    for track_dir in sorted(p for p in audio.iterdir() if p.is_dir()):
        info = ref.get(track_dir.name)
        version = info["version"] if info else "unknown"
        if wanted is not None and version not in wanted:
            continue
        n_dirs += 1
        track = _track(root, audio, track_dir, info, options)
        if track is not None:
            tracks.append(track)
    if n_dirs == 0 and not tracks:
        if wanted is not None and any(p.is_dir() for p in audio.iterdir()):
            raise DatasetLayoutError(f"{audio}: no track of version(s) {', '.join(wanted)} found")
        raise DatasetLayoutError(
            f"{root}: not a MedleyDB root: expected Audio/<id>/<id>_MIX.wav, <id>_STEMS/*.wav and <id>_METADATA.yaml; "
            "found no track folder"
        )
    return tracks


@dataclass(frozen=True)
class _Options:
    """What :func:`discover` was asked for, with the coefficients and artist splits it uses."""

    voices: str
    mixture: str
    exclude_bleed: bool
    valid_fraction: float
    test_fraction: float
    coefficients: dict
    splits: dict


def _track(root: Path, audio: Path, track_dir: Path, info: dict | None, opts: _Options) -> TrackSource | None:
    """The TrackSource of one track folder (``skip_reason`` or ``error`` set when it cannot be
    ingested), or None when the folder is not a track folder."""
    tid = track_dir.name
    version = info["version"] if info else "unknown"
    meta_path = _metadata_path(root, track_dir)
    base = dict(dataset=NAME, track_id=tid, root=str(audio), license=LICENSE, options=(("voices", opts.voices), ("mixture", opts.mixture)))
    if meta_path is None:
        if not (track_dir / f"{tid}_MIX.wav").exists():
            return None  # not a track folder
        return TrackSource(**base, error=f"{track_dir / (tid + '_METADATA.yaml')}: metadata file missing")
    try:
        meta = read_metadata(meta_path)
    except DatasetLayoutError as exc:
        return TrackSource(**base, error=str(exc))
    artist, title = str(meta.get("artist") or ""), str(meta.get("title") or tid)
    split_artist = info["split_artist"] if info else artist
    group = artist_group(split_artist or tid)
    split = opts.splits.get(group) or hash_split(group, opts.valid_fraction, opts.test_fraction, _SALT)
    vocal, other, reason = classify_stems(meta, opts.voices)
    bleed = str(meta.get("has_bleed", "no")).lower() == "yes"
    if reason is None and opts.exclude_bleed and bleed:
        reason = "bleed: the stems have bleed (has_bleed: yes) and --exclude-bleed is set"
    stem_dir = str(meta.get("stem_dir") or f"{tid}_STEMS")
    gains = opts.coefficients.get(tid) or {}
    try:  # every name the metadata gives must stay inside the corpus, used or not
        paths = {sid: inside_root(audio, tid, stem_dir, meta["stems"][sid]["filename"]) for sid in vocal + other}
        mix_rel = inside_root(audio, tid, str(meta.get("mix_filename") or f"{tid}_MIX.wav"))
    except DatasetLayoutError as exc:
        return TrackSource(**base, artist=artist, title=title, split=split, group=group, error=f"{meta_path}: {exc}")

    def ref_of(sid: str) -> StemRef:
        return StemRef(paths[sid], gain=gains.get(_stem_index(sid), 1.0))

    error = None
    if reason is None:
        error = next((f"{audio / paths[sid]}: missing stem ({sid})" for sid in vocal + other if not (audio / paths[sid]).exists()), None)
    use_mix = tid in opts.coefficients and opts.mixture == "file"
    if reason is None and error is None and use_mix and not (audio / mix_rel).exists():
        error = f"{audio / mix_rel}: missing mixture"
    return TrackSource(
        **base,
        artist=artist,
        title=title,
        split=split,
        mixture=(StemRef(mix_rel),) if use_mix else (),
        vocals=tuple(ref_of(s) for s in vocal) if reason is None else (),
        accompaniment=tuple(ref_of(s) for s in other) if reason is None else (),
        vocals_kind="stem",
        skip_reason=reason,
        error=error if reason is None else None,
        extra=(
            ("medleydb_version", version),
            ("vocal_stems", ";".join(vocal)),
            ("has_bleed", "yes" if bleed else "no"),
            ("mix_source", "file" if use_mix else "derived"),
        ),
        group=group,
    )
