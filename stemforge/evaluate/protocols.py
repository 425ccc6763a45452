"""The three protocols of ``stemforge evaluate`` as a request, before and after the scoring:

* which protocol a request is and whether its other options belong to it
  (:func:`resolve_protocol`: an :class:`~stemforge.core.errors.OptionError` naming the flag, before
  anything is opened);
* the methods it scores (:func:`methods`: checkpoints by their names, :func:`method_names`, and
  folders of stems on disk) and the tracks it counts (:func:`count_tracks`);
* what its report says of itself (:func:`label_datadir_report`) and the columns and legend its
  summary table is printed with (:func:`summary_columns`, :func:`legend`, :data:`METRICS_NOTE`).

The scoring itself is :mod:`.datadir` (the DataDir protocol), :mod:`.musdb18` and
:mod:`.references`. Imports nothing heavy at the top: the CLI's ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stemforge.core.errors import OptionError, OutputPathError, StemforgeError

PROTOCOLS = ("datadir", "musdb18", "references")
SPLITS = ("train", "valid", "test", "all")

#: Printed under every table of SIR/SAR/ISR (evaluate, demo): why frame-wise SIR/SAR/ISR can look wrong although
#: they are museval's values (docs/separation.md, "Reading the metrics").
METRICS_NOTE = [
    "Reading SIR/SAR/ISR: SDR compares an estimate with its reference directly; SIR (the other stem leaking in), SAR",
    "(artifacts) and ISR (distortion of the stem) split its error with 512-tap filters fitted to the references.",
    "Whole-track SIR/SAR (BSS Eval v3) are stable. The frame-wise ones (v4 image mode, as museval) use the fitted",
    "filters themselves, which band-limited references leave ill-determined (a resampled DataDir holds nothing above",
    "0.94 of its Nyquist, MUSDB18's AAC stems almost nothing above 16 kHz): frame-wise SIR/SAR/ISR can then be",
    "arbitrary, even below SDR, while SDR stays right. museval gives the same numbers (the tests check): compare",
    "methods by SDR and NSDR. Each frame-wise column is a median on its own (per track over frames, then over tracks).",
]


def resolve_protocol(
    protocol: str | None,
    *,
    models: list[Path],
    estimates: list[Path],
    root: Path | None = None,
    reference_dir: Path | None = None,
    subset: str = "test",
    tracks: int | None = None,
    filename: str | None = None,
    compare: bool = False,
    split: str = "test",
    limit: int | None = None,
    frames: bool = False,
    workers: int = 0,
) -> str:
    """The protocol of a request (``protocol``, or: references with ``reference_dir``, musdb18 with
    ``root``, else datadir), once every option is one that protocol takes; the defaults are
    the command's. Raises :class:`OptionError` whose ``option`` is the flag (or the argument,
    ``MODEL``) at fault and whose ``reason`` is one line."""
    if protocol is None:
        protocol = "references" if reference_dir is not None else "musdb18" if root is not None else "datadir"
    if protocol not in PROTOCOLS:
        raise OptionError("--protocol", f"must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if limit is not None and limit < 1:
        raise OptionError("--limit", f"must be at least 1, got {limit}")
    if workers < 0:
        raise OptionError("--workers", f"must be 0 (one per core) or more, got {workers}")
    if filename is not None:
        _check_filename(filename, estimates)
    if protocol == "datadir":
        if root is not None or reference_dir is not None or estimates or compare or tracks is not None or subset != "test":
            raise OptionError(
                "--protocol",
                "--root, --reference-dir, --subset, --tracks, --estimates and --compare belong to --protocol musdb18 or references",
            )
        if not 1 <= len(models) <= 2:
            raise OptionError("MODEL [DATA]", "the datadir protocol takes MODEL [DATA]")
        if split not in SPLITS:
            raise OptionError("--split", "must be train, valid, test or all")
        return protocol
    if protocol == "musdb18":
        if root is None:
            raise OptionError("--root", "the musdb18 protocol needs the MUSDB18 folder")
        if reference_dir is not None:
            raise OptionError("--reference-dir", "--reference-dir is the references protocol's; MUSDB18 is read from --root")
        if subset not in ("test", "train"):
            raise OptionError("--subset", f"must be test or train, got {subset!r}")
    else:
        if reference_dir is None:
            raise OptionError("--reference-dir", "the references protocol needs the folder of reference stems")
        if root is not None or subset != "test":
            raise OptionError("--reference-dir", "--root and --subset are the musdb18 protocol's")
    if tracks is not None and tracks < 1:
        raise OptionError("--tracks", f"must be at least 1, got {tracks}")
    if split != "test" or limit is not None or frames or workers:
        raise OptionError("--protocol", "--split, --limit, --frames and --workers belong to the datadir protocol (use --tracks)")
    n_methods = len(models) + len(estimates)
    if n_methods == 0:
        raise OptionError("MODEL", "give a MODEL or --estimates DIR")
    if n_methods > 1 and not compare:
        raise OptionError("--compare", f"{n_methods} methods given: add --compare to score them in one table")
    return protocol


def _check_filename(filename: str, estimates: list[Path]) -> None:
    """``--filename``: only with ``--estimates``, and a template ``separate`` accepts."""
    from stemforge.separate.naming import check_template

    if not estimates:
        raise OptionError("--filename", "names where --estimates are: give --estimates DIR")
    try:
        check_template(filename)
    except OutputPathError as exc:
        raise OptionError("--filename", str(exc).removeprefix(f"--filename {filename!r}: ")) from None


def method_names(models: list[Path]) -> list[str]:
    """Row names for checkpoints: the file's stem, with its folder when two stems collide
    (``runs/a/model.pt`` and ``runs/b/model.pt`` -> ``a/model``, ``b/model``)."""
    stems = [p.stem for p in models]
    return [f"{p.parent.name}/{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in models]


def methods(protocol: str, models: list[Path], estimates: list[Path], root: Path, filename: str | None = None,
            device: str = "auto", **options: Any) -> list:
    """The methods of a musdb18 or references request: each checkpoint of ``models`` (a
    :class:`~stemforge.separate.separator.Separator` on ``device`` with the separator
    ``options``, named by :func:`method_names`), then each folder of ``estimates`` (its stems
    written with the ``filename`` template; references: matched to the songs under ``root``)."""
    from stemforge.evaluate import musdb18, references
    from stemforge.separate.separator import Separator

    found = []
    for name, path in zip(method_names(models), models):
        found.append(musdb18.model_method(Separator.from_checkpoint(path, device=device, **options), name=name))
    for folder in estimates:
        if protocol == "musdb18":
            found.append(musdb18.EstimatesDir(folder, template=filename).method())
        else:
            found.append(references.estimates_dir(folder, root, template=filename).method())
    return found


def count_tracks(protocol: str, root: Path, subset: str, tracks: int | None) -> tuple[int, str]:
    """How many tracks a musdb18 or references request scores, and what its progress is called."""
    from stemforge.evaluate import musdb18, references

    if protocol == "musdb18":
        return len(musdb18.find_tracks(root, subset, tracks)), f"musdb18 {subset}"
    return len(references.find_songs(root, tracks)), "references"


def datadir_tracks(datadir: Any, split: str) -> int:
    """How many tracks the DataDir protocol scores in ``split`` (``all``: every split); a
    :class:`StemforgeError` saying which splits the DataDir holds, and how to pick one, when none."""
    n = len(datadir.select(split=None if split == "all" else split))
    if n:
        return n
    held = datadir.select()["split"].value_counts()
    have = [name for name in ("train", "valid", "test") if name in held]
    if not have:
        raise StemforgeError(f"{datadir.path}: the DataDir holds no track to evaluate (ingest a corpus first)")
    counts = ", ".join(f"{name} {held[name]}" for name in have)
    raise StemforgeError(
        f"{datadir.path}: no track in split {split!r}; it holds {counts} track(s): "
        f"choose one with --split {have[-1]} (or --split all)"
    )


def label_datadir_report(report: Any, datadir: Any, model: Path, split: str) -> None:
    """Name the DataDir protocol in ``report.meta`` (``protocol``, ``label``: the geometry and
    that it is not comparable with MUSDB18 tables; ``title``: the chart's)."""
    report.meta["protocol"] = "datadir"
    report.meta["label"] = (
        f"DataDir protocol: {report.meta['sample_rate'] / 1000:g} kHz {'mono' if datadir.config.channels == 1 else 'stereo'}, "
        "DataDir references (not comparable with MUSDB18 tables)"
    )
    report.meta["title"] = f"{model.name} on {split} ({report.meta['tracks']} tracks)"


def summary_columns(protocol: str, frames: bool = False) -> list[str]:
    """The summary columns printed for ``protocol`` (datadir: the frame medians with ``frames``)."""
    if protocol != "datadir":
        return ["method", "stem", "tracks", "sdr", "sir", "sar", "isr"]
    columns = ["method", "stem", "tracks", "gnsdr", "gsir", "gsar", "gnsdr_v2", "gsir_v2", "gsar_v2"]
    return columns + ["sdr_frames", "sir_frames", "sar_frames"] if frames else columns


def legend(protocol: str, frames: bool = False) -> list[str]:
    """The lines printed under ``protocol``'s summary table: what its columns are and how to read
    them (:data:`METRICS_NOTE` wherever frame-wise SIR/SAR are printed)."""
    if protocol != "datadir":
        return [
            "medians over tracks of each track's median over 1 s frames (dB); mixture = the input as both stems (floor);",
            "oracle = ideal ratio mask |V|/(|V|+|A|) on the 4096/1024 Hann STFT at 44.1 kHz, per channel (ceiling).",
            *METRICS_NOTE,
        ]
    lines = [
        "gnsdr/gsir/gsar: duration-weighted means over tracks of whole-track NSDR/SIR/SAR (dB), NSDR = SDR(estimate) -",
        "SDR(mixture); BSS Eval v3: mir_eval's bss_eval_sources (512-tap distortion filters, whole track, vocals and",
        "accompaniment together). *_v2: BSS Eval v2 gain-only (bss_decomp_gain, also in Huang et al.'s MIR-1K code).",
    ]
    if frames:
        lines.append("*_frames: median over tracks of the median over 1 s frames (BSS Eval v4, as museval).")
    lines.append("mixture = the input as both estimates; oracle = ideal ratio mask at the DataDir's STFT.")
    return lines + METRICS_NOTE if frames else lines  # how to read the frame-wise SIR/SAR, where they are printed
