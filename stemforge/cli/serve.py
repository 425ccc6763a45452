"""``stemforge serve``: the drag-and-drop separation page (FastAPI + uvicorn)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from stemforge.cli.common import MaskPower, WienerIterations, check_device, cli_errors, err, separator_options


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    ctx: typer.Context,
    model: Path = typer.Argument(..., help="Checkpoint to separate with (model.pt)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port (0: any free port)."),
    max_upload_mb: float = typer.Option(100.0, "--max-upload-mb", min=0.001, help="Largest upload, in MiB."),
    max_seconds: float = typer.Option(900.0, "--max-seconds", min=0.1, help="Longest song, in seconds."),
    max_rate: int = typer.Option(
        48_000, "--max-rate", min=8000, max=384_000, metavar="HZ", help="Highest sample rate a job works at; a song above it is resampled to it while decoded."
    ),
    max_channels: int = typer.Option(2, "--max-channels", min=1, max=2, help="Most channels of a song: 2 (stereo) or 1 (mono only); more are refused with 422."),
    jobs: int = typer.Option(1, "--jobs", min=1, max=64, help="Separations running at once (worker threads)."),
    expire_minutes: float = typer.Option(60.0, "--expire-minutes", min=0.01, help="Keep finished jobs and their files this long."),
    max_queue: int = typer.Option(100, "--max-queue", min=0, help="Jobs that may wait for a worker; beyond, uploads get 503."),
    device: str = typer.Option("cpu", "--device", help="Torch device of the model (cpu, cuda, cuda:1, ...).", callback=check_device),
    work_dir: Path = typer.Option(None, "--work-dir", help="Folder for the jobs' files (default: a temporary folder, removed at exit)."),
    allow_host: list[str] = typer.Option(
        [], "--allow-host", metavar="NAME", help="Another host name clients may use (repeatable; '*': any). Always allowed: --host, localhost, 127.0.0.1, ::1."
    ),
    allow_origin: list[str] = typer.Option(
        [], "--allow-origin", metavar="ORIGIN", help="Another page origin (scheme://host[:port]) that may create and delete jobs (repeatable; '*': any)."
    ),
    upload_timeout_s: float = typer.Option(
        30.0, "--upload-timeout", min=0.1, metavar="SECONDS", help="Seconds a request may take to send its head, and the longest pause in an upload."
    ),
    upload_min_rate_kib: float = typer.Option(
        16.0, "--upload-min-rate", min=0.001, metavar="KIB_PER_S", help="Slowest average upload accepted after the first --upload-timeout seconds, in KiB/s."
    ),
    mask_power: MaskPower = None,
    wiener_iterations: WienerIterations = 0,
) -> None:
    """Serve a web page where one drops a song and gets its vocals and accompaniment back.

    The page shows upload and separation progress, plays the mixture and both stems, shows their
    spectrograms and offers them for download; a JSON API lies beneath (/openapi.json).
    Separation runs in --jobs worker threads; more uploads wait in a queue and see their place.
    Finished jobs and their files are removed after --expire-minutes. See docs/serve.md.

    Only requests naming an allowed host are answered (DNS rebinding), and only pages of the
    server's own origin (or an --allow-origin) may create or delete jobs (CSRF).

    Example: stemforge serve model.pt --port 8000 --jobs 2 --max-upload-mb 50
    """
    options = separator_options(False, mask_power, wiener_iterations)
    with cli_errors():
        import dataclasses

        import torch
        import uvicorn

        from stemforge.separate.separator import Separator
        from stemforge.serve import ServeSettings, create_app
        from stemforge.serve.app import model_info
        from stemforge.serve.connection import is_loopback, listen, server_config
        from stemforge.serve.hosts import LOOPBACK_HOSTS

        fields = {f.name for f in dataclasses.fields(ServeSettings)}  # the options named as its fields
        settings = ServeSettings(
            **{name: value for name, value in ctx.params.items() if name in fields},
            allowed_hosts=tuple(dict.fromkeys([host, *LOOPBACK_HOSTS, *allow_host])),
            allowed_origins=tuple(allow_origin),
            warm_up=True,
        )
        # Each worker gets its share of the cores, so --jobs workers do not oversubscribe them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))
        # One window (2048 frames, about 65 s of audio) per model call, so that a job's progress
        # moves through the model stage instead of jumping at its end; the results are the same.
        separator = Separator.from_checkpoint(model, device=device, batch_size=1, **options)
        app = create_app(separator, settings, model_info=model_info(model, separator))
        sock = listen(host, port)
        port = sock.getsockname()[1]
        if not is_loopback(host):
            err(f"warning: listening on {host}: anyone who can reach this machine can upload songs")
            if not allow_host:
                err("note: clients must name this machine by an allowed host (--allow-host NAME for each name they use)")
        shown = f"[{host}]" if ":" in host else host
        err(
            f"serving {model} at http://{shown}:{port}/ (jobs {jobs}, uploads up to {max_upload_mb:g} MiB "
            f"and {max_seconds:g} s, results kept {expire_minutes:g} min); Ctrl-C stops"
        )
        server = uvicorn.Server(server_config(app, settings))
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()

