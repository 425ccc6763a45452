"""An alias bomb in MedleyDB metadata costs no memory, measured in a fresh process. The metadata
bounds themselves: tests/unit/recipes/test_reliability_recipes.py."""

from __future__ import annotations

import json
import subprocess
import sys


from support.reliability_recipes import _bomb, _medleydb, _meta_path


_MEASURE = """
import json, resource, sys, time
from pathlib import Path
from stemforge.recipes import medleydb
root, meta, bomb = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
medleydb.discover(root)  # warm: reference tables, imports
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
meta.write_text(bomb)
t = time.perf_counter()
errors = [s.error for s in medleydb.discover(root) if s.error]
print(json.dumps({"grown_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base,
                  "seconds": time.perf_counter() - t, "errors": errors}))
"""


def test_alias_bomb_costs_no_memory(tmp_path):
    """A 10-level bomb (10**10 scalars, under 1 KB) in a fresh process: refused, peak memory
    grows by less than 32 MB over the process's baseline, in well under a second of work."""
    recs = _medleydb(tmp_path / "m", songs=2)
    meta = _meta_path(recs[0])
    bomb = _bomb(10) + meta.read_text().replace("title: ", "title: *l9\nold_title: ", 1)
    assert len(bomb.encode()) < 4096
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path / "m"), str(meta), bomb],
        capture_output=True, text=True, timeout=120, check=True,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(figures["errors"]) == 1 and "expands to more than" in figures["errors"][0]
    assert figures["grown_kb"] < 32 * 1024, figures
    assert figures["seconds"] < 10, figures
