"""The limits and sizes of a ``stemforge serve`` server (:class:`ServeSettings`).

The app keeps them as ``app.state.settings``; the routes read them from there
(:func:`stemforge.serve.routes.settings_of`). The CLI builds them from its options
(``stemforge serve --max-upload-mb ...``, docs/serve.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stemforge.core.errors import StemforgeError
from stemforge.serve.hosts import LOOPBACK_HOSTS, normalize_origin


@dataclass(frozen=True)
class ServeSettings:
    """Limits and sizes of a server.

    Attributes:
        max_upload_mb: largest upload accepted, in MiB (the file itself).
        max_seconds: longest song accepted, in seconds.
        max_rate: the highest rate a job works at (Hz); a song above it is resampled to it
            block by block while it is decoded. With ``max_seconds`` and ``max_channels`` it
            bounds what a job holds: at most ``max_seconds x max_rate x max_channels`` samples
            per array (see docs/serve.md, "Limits in samples").
        max_channels: most channels of a song (more: 422).
        jobs: separations running at once (worker threads).
        expire_minutes: how long finished jobs and their files are kept.
        max_queue: jobs that may wait for a worker; beyond, POST answers 503.
        work_dir: folder for the jobs' files; None makes a temporary one, removed at shutdown.
        allowed_hosts: host names (``Host`` header, without port) the server answers; others
            get 400. ``*`` allows any, ``*.example.org`` a domain. Default: loopback names.
        allowed_origins: origins (``scheme://host[:port]``) besides the server's own from which
            a page may create or delete jobs; others get 403. ``*`` allows any.
        upload_timeout_s: no read of an upload's body may wait longer than this (seconds), and
            the body gets this long plus its size over ``upload_min_rate_kib``; beyond, 408.
            (The request head has the same deadline when the CLI runs the server:
            :func:`stemforge.serve.connection.head_timeout_protocol`.)
        upload_min_rate_kib: slowest average upload rate accepted past ``upload_timeout_s``,
            in KiB/s.
        warm_up: separate one second of noise when the server starts, so that the first job
            does not pay for the model's first call (lazy initialisation in torch).
    """

    max_upload_mb: float = 100.0
    max_seconds: float = 900.0
    max_rate: int = 48_000
    max_channels: int = 2
    jobs: int = 1
    expire_minutes: float = 60.0
    max_queue: int = 100
    work_dir: Path | None = None
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    allowed_origins: tuple[str, ...] = ()
    upload_timeout_s: float = 30.0
    upload_min_rate_kib: float = 16.0
    warm_up: bool = False

    def __post_init__(self) -> None:
        if not self.max_upload_mb > 0:
            raise StemforgeError(f"max_upload_mb must be positive, got {self.max_upload_mb}")
        if not self.max_seconds > 0:
            raise StemforgeError(f"max_seconds must be positive, got {self.max_seconds}")
        if not 8000 <= self.max_rate <= 384_000:
            raise StemforgeError(f"max_rate must be between 8000 and 384000 Hz, got {self.max_rate}")
        if self.max_channels < 1:
            raise StemforgeError(f"max_channels must be >= 1, got {self.max_channels}")
        if self.jobs < 1:
            raise StemforgeError(f"jobs must be >= 1, got {self.jobs}")
        if not self.expire_minutes > 0:
            raise StemforgeError(f"expire_minutes must be positive, got {self.expire_minutes}")
        if self.max_queue < 0:
            raise StemforgeError(f"max_queue must be >= 0, got {self.max_queue}")
        if not self.upload_timeout_s > 0:
            raise StemforgeError(f"upload_timeout_s must be positive, got {self.upload_timeout_s}")
        if not self.upload_min_rate_kib > 0:
            raise StemforgeError(f"upload_min_rate_kib must be positive, got {self.upload_min_rate_kib}")
        if not self.allowed_hosts:
            raise StemforgeError("allowed_hosts must name at least one host (or '*')")
        for origin in self.allowed_origins:
            if origin != "*":
                try:
                    normalize_origin(origin)
                except ValueError as exc:
                    raise StemforgeError(str(exc)) from None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_samples(self) -> int:
        """Most samples (per array, all channels) a job holds: ``max_seconds x max_rate x max_channels``."""
        return int(self.max_seconds * self.max_rate) * self.max_channels


__all__ = ["ServeSettings"]
