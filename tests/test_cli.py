"""The ``tuner`` command itself: ``--version``, a ``--help`` that imports nothing heavy, and the process-wide
set-up (Optuna's log level, warning filters) done by the command only -- never by importing the library."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

from _pg import load_study, run, sim_workload
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("onnxruntime", "openvino", "optuna", "numpy")
#: what ``tuner --help`` must not import (each costs from tens of milliseconds to seconds)
HEAVY = ("optuna", "onnxruntime", "openvino", "numpy", "sqlalchemy", "plotly", "matplotlib")
_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$")


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ}
    )


def _installed(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _imported(stderr: str) -> list[str]:
    """The modules ``python -X importtime`` says were imported."""
    return [m.group(1) for line in stderr.splitlines() if (m := _IMPORT_LINE.match(line))]


def test_version_names_tuner_and_every_runtime_installed() -> None:
    result = _python("-m", "tuner", "--version")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"tuner {metadata.version('tuner')}"
    assert f"python {platform.python_version()}" in lines
    for pkg in RUNTIMES:
        version = _installed(pkg)
        if version is None:
            assert not any(line.split()[0] == pkg for line in lines), lines
        else:
            assert f"{pkg} {version}" in lines, lines
    assert "optuna" in {line.split()[0] for line in lines}  # a hard dependency: always there


def test_help_imports_no_runtime_nor_optuna() -> None:
    result = _python("-X", "importtime", "-m", "tuner", "--help")
    assert result.returncode == 0, result.stderr
    assert "--version" in result.stdout and "optimize" in result.stdout
    imported = _imported(result.stderr)
    assert "tuner.cli" in imported, "no importtime lines parsed"
    heavy = sorted({name for name in imported if name.split(".")[0] in HEAVY})
    assert not heavy, f"tuner --help imports {heavy}"


def test_version_reads_package_metadata_without_loading_the_runtimes() -> None:
    result = _python("-X", "importtime", "-m", "tuner", "--version")
    assert result.returncode == 0, result.stderr
    imported = _imported(result.stderr)
    assert "tuner.platform" in imported
    loaded = sorted({name for name in imported if name.split(".")[0] in ("onnxruntime", "openvino", "optuna")})
    assert not loaded, f"tuner --version imports {loaded}"


def test_importing_the_library_changes_no_process_wide_state() -> None:
    script = textwrap.dedent(
        """
        import logging, warnings, optuna

        def state():
            optuna_logger = logging.getLogger("optuna")
            return {
                "optuna verbosity": optuna.logging.get_verbosity(),
                "optuna logger": (optuna_logger.level, list(optuna_logger.handlers), optuna_logger.propagate),
                "root logger": (logging.getLogger().level, list(logging.getLogger().handlers)),
                "warning filters": list(warnings.filters),
            }

        before = state()
        import tuner.study.storage, tuner.study.run, tuner.study.ledger, tuner.study.optuna_internals
        import tuner.report.load, tuner.report.sql_read
        after = state()
        changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
        assert not changed, changed
        print("unchanged")
        """
    )
    result = _python("-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "unchanged"


def test_the_command_prints_no_optuna_logs_or_warnings_for_a_failing_trial(tmp_path: Path) -> None:
    db = tmp_path / "studies" / "quiet.db"
    # 400 MiB per runtime breaks the 300 MiB cap: that trial fails; the other one is measured
    workload = sim_workload(
        tmp_path,
        "quiet",
        search={"options.memory_mb_per_runtime": [1, 400]},
        study={"trials": 2, "sampler": "grid", "memory_limit_mb": 300, "max_consecutive_failures": 10},
    )
    result = run("optimize", workload, "--storage", db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    states = [t.state for t in load_study(f"sqlite:///{db}", "quiet").get_trials(deepcopy=False)]
    assert TrialState.FAIL in states and TrialState.COMPLETE in states, states
    # Optuna's own lines look like "[W 2026-01-01 12:00:00,000] Trial 1 failed ..." (and [I ...] for info)
    assert not re.search(r"^\[[IWD] \d{4}-", result.stderr, re.M), result.stderr
    assert "Traceback" not in result.stderr and "ExperimentalWarning" not in result.stderr, result.stderr
