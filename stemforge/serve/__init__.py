"""``stemforge serve``: the drag-and-drop separation page and its JSON API.

:func:`create_app` builds the FastAPI app around a separator; :class:`ServeSettings` holds its
limits; :class:`~stemforge.serve.jobs.JobStore` runs the jobs in a bounded thread pool.
See docs/serve.md ("Code") for the modules.
"""

from stemforge.serve.app import create_app
from stemforge.serve.jobs import JOB_OUTPUTS, Job, JobState, JobStore, QueueFullError
from stemforge.serve.schemas import ErrorMessage, JobStatus, ServerInfo, Stem, StemFiles
from stemforge.serve.settings import ServeSettings

__all__ = [
    "JOB_OUTPUTS",
    "ErrorMessage",
    "Job",
    "JobState",
    "JobStatus",
    "JobStore",
    "QueueFullError",
    "ServeSettings",
    "ServerInfo",
    "Stem",
    "StemFiles",
    "create_app",
]
