"""``stemforge info`` and ``stemforge validate``: look at a DataDir."""

from __future__ import annotations

import typer

from stemforge.cli.common import EXIT_OK, EXIT_PARTIAL, DataArgument, announce_data_dir, cli_errors, err, format_table, out


def info(
    data: DataArgument = None,
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Tracks and hours per dataset x split, ingested vs remix hours, shards, bytes, the geometry
    (rate, channels, n_fft, hop, preset) and bytes per hour of audio, config, duplicates.

    Example: stemforge info ./stemforge-data
    """
    import json

    from stemforge.store import DataDir
    from stemforge.store.check import summary

    path = announce_data_dir(data)
    with cli_errors():
        s = summary(DataDir.open(path))
    if json_out:
        out(json.dumps(s, indent=2, default=float))
        return
    out(f"DataDir {s['path']}  ({s['tracks']} tracks, {s['hours']:.2f} h, {s['shards']} shards, {s['bytes'] / 1e6:.1f} MB)")
    preset = f"preset {s['preset']}" if s["preset"] else "no preset"
    out(f"geometry: {s['geometry']} ({preset})")
    g = s["geometry_bytes_per_hour"]
    measured = f"{s['bytes_per_hour'] / 1e9:.2f} GB measured" if s["bytes_per_hour"] else "nothing stored yet"
    out(
        f"bytes per hour of audio: {measured}; {g['total'] / 1e9:.2f} GB by the layout "
        f"(magnitudes {g['magnitudes'] / 1e9:.2f} GB, waveforms {g['waveforms'] / 1e9:.2f} GB)"
    )
    out(f"config {s['config_hash']}: " + ", ".join(f"{k}={v}" for k, v in s["config"].items()))
    out("")
    out(format_table(s["table"]))
    if s["kinds"]:
        out("")
        out(format_table(s["kinds"]))
    if s["duplicates"]:
        out("")
        out(f"duplicates ({len(s['duplicates'])}, stored once; the other row points to it):")
        for uid, of in s["duplicates"]:
            out(f"  {uid} -> {of}")
    out("")
    if s["leaks"]:
        for line in s["leaks"]:
            err(f"leak: {line}")
    else:
        out("no song is in more than one split")


def validate(
    data: DataArgument = None,
    quick: bool = typer.Option(False, "--quick", help="Skip reading every value (shapes, dtypes and hashes only)."),
) -> None:
    """Check every row has its arrays (shapes, dtypes, config hash, finite values) and no shard is
    orphaned or half-written. Exit 0 when valid, 1 with a list of problems otherwise.

    Example: stemforge validate ./stemforge-data
    """
    from stemforge.store import DataDir
    from stemforge.store.check import validate as run

    path = announce_data_dir(data)
    with cli_errors():
        res = run(DataDir.open(path), check_values=not quick)
    for w in res.warnings:
        err(f"warning: {w}")
    if res.ok:
        out(f"valid: {res.n_rows} rows, every array present and consistent")
        raise typer.Exit(EXIT_OK)
    for p in res.problems:
        err(f"problem: {p}")
    err(f"invalid: {len(res.problems)} problem(s) in {res.n_rows} rows")
    raise typer.Exit(EXIT_PARTIAL)


def register(app: typer.Typer) -> None:
    app.command("info")(info)
    app.command("validate")(validate)
