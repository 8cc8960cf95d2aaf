"""A plugin package as its author ships it: a source tree with its own pyproject, built and installed with pip.

Shared by the backend-plugin and workload-kind tests: ``pip wheel --no-deps --no-index --no-build-isolation``
builds the wheel from the tree's ``pyproject.toml`` (setuptools from this environment, no network),
``pip install --no-deps --no-index --target SITE`` installs it into a private site directory, and
:func:`tuner` runs ``python -m tuner`` with that site on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def write_tree(root: Path, *, dist: str, module: str, source: str, pyproject: str) -> Path:
    """``root/dist/{pyproject.toml, module/__init__.py}``; returns the tree."""
    src = root / dist
    (src / module).mkdir(parents=True)
    (src / module / "__init__.py").write_text(source)
    (src / "pyproject.toml").write_text(pyproject)
    return src


def build_wheel(src: Path, out: Path) -> Path:
    """Build the tree's wheel with pip from its own pyproject; returns the one wheel."""
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index", "--no-build-isolation"]
    proc = subprocess.run([*cmd, "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = out.glob("*.whl")
    return wheel


def install_wheel(wheel: Path, site: Path) -> Path:
    """Install the wheel into ``site`` with pip; returns ``site``."""
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(site)]
    proc = subprocess.run([*cmd, str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert list(site.glob("*.dist-info/entry_points.txt")), "pip did not install the entry points"
    return site


def tuner(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m tuner ARGS`` in ``cwd`` with the plugin's ``site`` importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-m", "tuner", *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd
    )
