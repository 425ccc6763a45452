"""Preloaded by the multiprocessing fork server (``multiprocessing.set_forkserver_preload``, see
:func:`stemforge.core.parallel.map_ordered`): ties the fork server to the command that started
it (:func:`stemforge.core.lifeline.bind_forkserver`). Importing it anywhere else does nothing."""

import sys

from stemforge.core import lifeline


def _in_forkserver() -> bool:
    """Whether this import runs inside ``multiprocessing.forkserver.main`` (its preloading)."""
    forkserver = sys.modules.get("multiprocessing.forkserver")
    if forkserver is None:
        return False
    code = forkserver.main.__code__
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


if _in_forkserver():
    lifeline.bind_forkserver()
