"""``stemforge info`` and ``stemforge validate``: look at a DataDir."""

from __future__ import annotations

import typer

from stemforge.cli.common import EXIT_OK, EXIT_PARTIAL, DataArgument, announce_data_dir, cli_errors, err, out


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
    from stemforge.store.check import summary, summary_report

    path = announce_data_dir(data)
    with cli_errors():
        s = summary(DataDir.open(path))
    if json_out:
        out(json.dumps(s, indent=2, default=float))
        return
    summary_report(s, out, err)


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
