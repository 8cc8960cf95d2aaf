"""What the benchmarks share: running ``python -m tuner`` as a child, and one config's ``tuner run --json``.

Benchmarks are run as scripts (``python bench/X.py``), so this folder is on ``sys.path`` and they import it as
``_cli``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def tuner(args: list[str], cwd: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """``python -m tuner ARGS`` in ``cwd``, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "tuner", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout_s
    )


def run_config(
    workload: Path, params: Mapping[str, Any], folder: Path, timeout_s: float
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], float]:
    """One ``tuner run WORKLOAD --set K=V ... --json`` (a fresh child measuring ``params``): the process, its
    JSON document (``{}`` when it printed none) and the wall seconds it took."""
    sets = [item for key, value in sorted(params.items()) for item in ("--set", f"{key}={value}")]
    t0 = time.monotonic()
    proc = tuner(["run", str(workload), *sets, "--json"], folder, timeout_s)
    wall = round(time.monotonic() - t0, 1)
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        doc = {}
    return proc, doc if isinstance(doc, dict) else {}, wall
