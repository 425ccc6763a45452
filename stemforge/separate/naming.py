"""Where separated stems are written: an input file's track name and the output paths that a
``--filename`` template gives, always inside the output folder.

The track name (the template's ``{track}``) is the input's file name without its audio suffix
(``song.mp3`` -> ``song``, ``x.stem.mp4`` -> ``x``). When that is a generic name that corpora
give every song (:data:`GENERIC_NAMES`: ``mixture``, ``mix``, ``original``, ``song``, ...), the
name of the folder holding the file is used instead, so MUSDB18-HQ's ``Artist - Title/mixture.wav``
and ccMixter's ``<song>/mix.wav`` are named after their song, not all ``mixture`` or ``mix``.
The rule is :func:`stemforge.core.names.song_name`, which ``stemforge serve`` names its downloads by.

Outputs land only under the output folder: a template that is absolute or holds a ``..``
component, a track name that is ``.`` or ``..`` (an input named ``...wav``), or a path that would
leave the folder through a symbolic link raises :class:`~stemforge.core.errors.OutputPathError`.

:func:`plan_outputs` plans a batch: every input's paths, and a one-line reason for each input
that cannot be written (its name, two inputs claiming one file, an existing file, unreadable
audio) while the others go on.
"""

from __future__ import annotations

import errno
import os
import string
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Callable, Iterable

from stemforge.core.errors import OutputPathError, StemforgeError
from stemforge.core.names import GENERIC_NAMES, song_name  # noqa: F401  (GENERIC_NAMES: the rule's, re-exported)

#: The fields a template may use: the track name, the stem (vocals/accompaniment), the suffix.
TEMPLATE_FIELDS = ("track", "stem", "ext")
DEFAULT_TEMPLATE = "{track}/{stem}.{ext}"


def track_name(path: str | os.PathLike) -> str:
    """The ``{track}`` of an input file (see the module docstring for the generic-name rule)."""
    path = Path(path)
    return song_name(path.name, path.absolute().parent.name)


def check_template(template: str) -> None:
    """Raise OutputPathError unless ``template`` is a relative path template that uses only
    :data:`TEMPLATE_FIELDS`, holds ``{stem}`` (two stems need two files) and no ``..``."""
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise OutputPathError(f"--filename {template!r}: not a valid template ({exc})") from None
    unknown = names - set(TEMPLATE_FIELDS)
    if unknown:
        fields = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
        raise OutputPathError(f"--filename {template!r}: unknown field(s) {sorted(unknown)}; use {fields}")
    if "stem" not in names:
        raise OutputPathError(f"--filename {template!r}: must contain {{stem}} (the two stems need two files)")
    _check_relative(template.format(track="track", stem="vocals", ext="wav"), f"--filename {template!r}")


def check_outdir(outdir: str | os.PathLike) -> Path:
    """``outdir`` resolved (symbolic links followed) when stems can go under it: it is a folder,
    or does not exist yet (it is created). Raises OutputPathError naming it otherwise: a symbolic
    link loop, a dangling link, a file or a FIFO where the folder should be, a path through a
    file."""
    outdir = Path(outdir)
    where = "choose another output folder (-o)"
    resolved = _resolve(outdir, f"{outdir}: the output folder", where)
    if resolved.exists() and not resolved.is_dir():
        raise OutputPathError(f"{outdir}: the output folder is a file, not a folder; {where}")
    if not resolved.exists() and os.path.islink(outdir):
        raise OutputPathError(f"{outdir}: the output folder is a dangling symbolic link; {where}")
    return resolved


def _resolve(path: Path, what: str, advice: str) -> Path:
    """``path.resolve()``; a symbolic link loop (RuntimeError before Python 3.13, ELOOP after)
    or another OSError as OutputPathError ``what: reason; advice``."""
    try:
        return path.resolve()
    except RuntimeError:
        raise OutputPathError(f"{what} is a symbolic link loop (too many levels of symbolic links); {advice}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputPathError(f"{what} is a symbolic link loop (too many levels of symbolic links); {advice}") from None
        raise OutputPathError(f"{what} cannot be used ({exc.strerror or exc}); {advice}") from None


def output_paths(
    outdir: str | os.PathLike, template: str, source: str | os.PathLike, stems: Iterable[str], ext: str
) -> dict[str, Path]:
    """``stem -> outdir / template`` for the input ``source``, each checked to stay inside ``outdir``.

    Raises OutputPathError naming ``source`` when its track name is unusable (``.``, ``..``,
    empty) or a path would leave ``outdir`` (absolute, ``..``, or through a symbolic link).
    """
    check_template(template)
    outdir = Path(outdir)
    track = track_name(source)
    if track in ("", ".", "..") or "/" in track or "\\" in track:
        raise OutputPathError(
            f"{source}: its name gives the track name {track!r}, which is not a folder or file name "
            "inside the output folder (rename the file, or use a --filename without {track})"
        )
    root = check_outdir(outdir)
    paths: dict[str, Path] = {}
    for stem in stems:
        relative = template.format(track=track, stem=stem, ext=ext)
        _check_relative(relative, str(source))
        path = outdir / relative
        if not _resolve(path, f"{source}: its output {path}", "remove the link or use --filename").is_relative_to(root):
            raise OutputPathError(f"{source}: its output {path} would be written outside {outdir} (a symbolic link?)")
        paths[stem] = path
    return paths


def _check_relative(relative: str, what: str) -> None:
    pure = PurePath(relative)
    if pure.is_absolute() or pure.anchor or relative.startswith(("/", "\\")):
        raise OutputPathError(f"{what}: gives the absolute path {relative!r}; outputs go only under the output folder")
    if ".." in pure.parts or ".." in relative.replace("\\", "/").split("/"):
        raise OutputPathError(f"{what}: gives {relative!r}, which climbs out of the output folder ('..')")
    if not pure.parts:
        raise OutputPathError(f"{what}: gives an empty path")


@dataclass
class PlannedOutput:
    """Where one input's stems go: ``paths`` (stem -> path), or ``error`` (one line starting with
    the input's name, no paths) when they cannot be written; ``info`` is what the plan's
    ``probe`` returned for it."""

    source: Path
    paths: dict[str, Path] = field(default_factory=dict)
    error: str | None = None
    info: Any = None


def plan_outputs(
    outdir: str | os.PathLike,
    template: str,
    sources: Iterable[str | os.PathLike],
    stems: Iterable[str],
    ext: str,
    *,
    force: bool = False,
    probe: Callable[[Path], Any] | None = None,
) -> list[PlannedOutput]:
    """The outputs of every input, in order (see :func:`output_paths`).

    An input fails (``error`` set) when :func:`output_paths` refuses it, when one of its paths
    is also an earlier input's, when one exists and ``force`` is False, or when ``probe(source)``
    (reading the audio's duration, say) raises StemforgeError; a failed input claims no path,
    so a later input may use its paths. A bad ``template``, or an ``outdir`` that cannot be a
    folder (:func:`check_outdir`: a symbolic link loop, a file), raises OutputPathError (for the batch).
    """
    check_template(template)
    check_outdir(outdir)
    stems = tuple(stems)
    claimed: dict[Path, Path] = {}
    plans: list[PlannedOutput] = []
    for source in map(Path, sources):
        try:
            paths = output_paths(outdir, template, source, stems, ext)
            for path in paths.values():
                if path in claimed:
                    raise OutputPathError(f"its output {path} is also the output of {claimed[path]} (use --filename)")
                if path.exists() and not force:
                    raise OutputPathError(f"{path} exists (use --force to overwrite)")
            info = probe(source) if probe is not None else None
        except StemforgeError as exc:
            text = str(exc)
            plans.append(PlannedOutput(source, error=text if text.startswith(str(source)) else f"{source}: {text}"))
            continue
        claimed.update(dict.fromkeys(paths.values(), source))
        plans.append(PlannedOutput(source, paths, info=info))
    return plans
