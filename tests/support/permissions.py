"""What tests/unit/core/test_permissions.py and tests/integration/test_permissions_demo.py share."""

from __future__ import annotations

import stat
from pathlib import Path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _assert_modes(paths, expected: int) -> None:
    paths = list(paths)
    assert paths, "nothing to check"
    wrong = {str(p): oct(_mode(p)) for p in paths if _mode(p) != expected}
    assert not wrong, f"expected {oct(expected)}: {wrong}"

