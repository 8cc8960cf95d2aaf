"""Workload kinds are registered like backends: by name, in the ``tuner.workloads`` entry-point group.

The built-ins (``pool``, ``pipeline``, ``command``) come through the group; an unknown kind is a one-line
error naming the file, the line, the key, the value, the nearest kind and the valid ones. A third-party kind
is a real distribution: the test writes its source and ``pyproject.toml`` (setuptools, the
``[project.entry-points."tuner.workloads"]`` table an author writes), builds its wheel with ``pip wheel``,
installs it with pip (``--no-deps --no-index --target``) into a private site directory, and runs
``python -m tuner`` in a subprocess with that directory on ``PYTHONPATH``: the shared environment is never
modified.
"""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from _plugin_build import build_wheel, install_wheel, tuner, write_tree

from tuner import plugins
from tuner.config.spec import parse_spec
from tuner.errors import SpecError, TunerError
from tuner.execution.worker import execute
from tuner.workloads.base import WorkloadKind
from tuner.workloads.command.kind import CommandKind
from tuner.workloads.pipeline.kind import PipelineKind
from tuner.workloads.pool import PoolKind
from tuner.workloads.registry import GROUP, available_kinds, get_kind

# ------------------------------------------------------------------------------------------ built-ins


def test_builtins_come_through_the_entry_point_group() -> None:
    registered = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    assert GROUP == "tuner.workloads"
    assert registered["pool"] == "tuner.workloads.pool:PoolKind"
    assert registered["pipeline"] == "tuner.workloads.pipeline.kind:PipelineKind"
    assert registered["command"] == "tuner.workloads.command.kind:CommandKind"
    # the fallback for a never-installed source tree names the same targets
    assert dict(plugins.WORKLOAD_KINDS.builtins).items() <= registered.items()
    assert {"pool", "pipeline", "command"} <= set(available_kinds())
    for name, cls in (("pool", PoolKind), ("pipeline", PipelineKind), ("command", CommandKind)):
        assert get_kind(name) is cls
        assert cls.name == name and issubclass(cls, WorkloadKind)
    assert PoolKind.runs_in_worker and PipelineKind.runs_in_worker and not CommandKind.runs_in_worker


def test_unknown_kind_names_file_line_key_value_nearest_and_valid_ones() -> None:
    text = "name: w\nworkload:\n  kind: pipline\n  backend: sim\n"
    with pytest.raises(SpecError) as info:
        parse_spec(text, path=Path("w.yaml"))
    message = str(info.value)
    assert message.startswith("w.yaml:3: workload.kind: unknown workload kind 'pipline' (valid: ")
    assert "command, pipeline, pool" in message and "did you mean 'pipeline'?" in message
    assert "\n" not in message


def test_a_kind_that_is_not_a_workload_kind_is_refused_by_name() -> None:
    entries = {"sim": "tuner.backends.sim:SimBackend", "ghost": "no_such_module_xyz:Kind"}
    with pytest.raises(plugins.PluginError, match=r"workload kind 'sim': tuner.backends.sim:SimBackend is not a sub"):
        plugins.load(plugins.WORKLOAD_KINDS, "sim", entries=entries)
    with pytest.raises(plugins.PluginError, match=r"'Writing a workload kind'"):
        plugins.load(plugins.WORKLOAD_KINDS, "sim", entries=entries)
    with pytest.raises(plugins.PluginError, match=r"workload kind 'ghost' could not be imported"):
        plugins.load(plugins.WORKLOAD_KINDS, "ghost", entries=entries)
    with pytest.raises(plugins.PluginError, match=r"unknown workload kind 'gost' \(valid: ghost, sim\); did you mean"):
        plugins.load(plugins.WORKLOAD_KINDS, "gost", entries=entries)


def test_keys_of_a_builtin_kind_are_refused_for_another_kind() -> None:
    text = "workload:\n  kind: pool\n  backend: sim\n  command: [echo]\n"
    with pytest.raises(SpecError) as info:
        parse_spec(text, path=Path("w.yaml"))
    assert str(info.value) == "w.yaml:4: workload.command: only for kind: command (this workload is kind: pool)"


def test_the_study_asks_the_kind_how_many_host_threads_a_config_computes_on() -> None:
    sim = parse_spec("workload: {kind: pool, backend: sim}\n", path=Path("w.yaml"))
    ort = parse_spec("workload: {kind: pool, backend: onnxruntime, model: zoo:tiny}\n", path=Path("w.yaml"))
    params = {"pool_size": 3, "threads": 2, "requests_per_sync": 1, "batch_size": 1}
    assert PoolKind().host_threads(sim, params, usable_cores=2) is None  # sim waits on its modelled device
    demand = PoolKind().host_threads(ort, params, usable_cores=2)
    assert demand is not None and demand.count == 6
    assert demand.origin == "pool_size 3 x threads 2 on onnxruntime"
    assert CommandKind().host_threads(sim, params, usable_cores=2) is None  # no workload.host_threads declared


# -------------------------------------------------------------------------------- a third-party kind

PLUGIN_SOURCE = '''\
"""A third-party tuner workload kind: a counter instead of a runtime, so every figure is known in advance.

Each of pool_size x requests_per_sync slots completes ``rate`` requests per second, by definition; the
kind reports what such a device would give, from the trial's worker child.
"""
import sys

from tuner.workloads.base import WorkloadKind, worker_job

OPTIONS = ("rate",)


class CountKind(WorkloadKind):
    name = "count"

    def check(self, ctx):
        for key, value in ctx.workload.options.items():
            if key not in OPTIONS:
                raise ctx.error(
                    ("workload", "options", key), f"unknown option of kind 'count'{ctx.nearest(key, OPTIONS)}"
                )
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ctx.error(("workload", "options", key), "expected a positive number", show_value=True)

    def cpu_bound(self, spec):
        return False

    def build_job(self, spec, params, model_path):
        job = worker_job(spec, params, model_path)
        return {"params": job["params"], "rate": float(job["options"].get("rate", 100.0))}

    def run_in_child(self, job, emit):
        p = job["params"]
        rps = job["rate"] * p["pool_size"] * p["requests_per_sync"]
        emit({"event": "load"})
        emit({"event": "measure_start"})
        emit({"event": "measure_end"})
        metrics = {
            "qps": rps * p["batch_size"],
            "rps": rps,
            "latency_p50_ms": 1000.0 / job["rate"],
            "requests": int(rps * 2),
            "measured_s": 2.0,
            "stable": True,
            "window_qps": [rps * p["batch_size"]] * 2,
        }
        main = getattr(sys.modules["__main__"].__spec__, "name", None)
        return {"metrics": metrics, "applied": {"kind": "count", "main": main}, "versions": {"{dist}": "0.1"}}
'''

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1"
dependencies = ["tuner"]

[project.entry-points."tuner.workloads"]
{name} = "{module}:CountKind"
"""


def build_and_install(root: Path, *, dist: str, module: str, name: str) -> Path:
    """Write the plugin's source tree, build its wheel with pip, install it into a private site; return the site."""
    src = write_tree(
        root,
        dist=dist,
        module=module,
        source=PLUGIN_SOURCE.replace("{dist}", dist),
        pyproject=PYPROJECT.format(dist=dist, module=module, name=name),
    )
    return install_wheel(build_wheel(src, root / "wheels"), root / "site")


WORKLOAD = """\
workload:
  kind: count
  options: {rate: 250}
search:
  pool_size: [1, 2, 3]
  requests_per_sync: [1, 2]
"""


@pytest.fixture(scope="module")
def count_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kind-plugin")
    return build_and_install(root, dist="tuner-count-kind", module="tuner_count_kind", name="count")


def test_an_installed_kind_is_run_by_name_in_the_trial_child(count_site: Path, tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text(WORKLOAD)
    proc = tuner(
        ["run", "w.yaml", "--json", "--set", "pool_size=3", "--set", "requests_per_sync=2", "--set", "batch_size=4"],
        count_site,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    metrics = doc["metrics"]
    assert metrics["rps"] == 250.0 * 3 * 2 and metrics["qps"] == 250.0 * 3 * 2 * 4  # the plugin's figures
    assert metrics["latency_p50_ms"] == 4.0
    assert doc["applied"] == {"kind": "count", "main": "tuner.execution.worker"}  # it ran in the worker child
    assert doc["versions"] == {"tuner-count-kind": "0.1"}
    assert metrics["peak_rss_mb"] > 0  # the parent watched the child's process tree
    assert doc["params"] == {"pool_size": 3, "threads": 1, "requests_per_sync": 2, "batch_size": 4}


def test_an_installed_kind_checks_its_part_of_the_file_with_file_line_and_key(count_site: Path, tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text(WORKLOAD.replace("{rate: 250}", "{rat: 250}"))
    proc = tuner(["run", "w.yaml"], count_site, tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == ["error: w.yaml:3: workload.options.rat: unknown option of kind 'count' (did you mean 'rate'?)"]

    (tmp_path / "w.yaml").write_text(WORKLOAD.replace("{rate: 250}", "{rate: -1}"))
    proc = tuner(["run", "w.yaml"], count_site, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "w.yaml:3: workload.options.rate = -1: expected a positive number" in proc.stderr

    # the built-in kinds' own keys stay theirs
    (tmp_path / "w.yaml").write_text(WORKLOAD + "  stages.decode.workers: [1, 2]\n")
    proc = tuner(["run", "w.yaml"], count_site, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "w.yaml:7: search.stages.decode.workers: stages are for kind: pipeline" in proc.stderr


def test_without_the_package_the_kind_is_unknown_and_the_valid_ones_are_listed(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text(WORKLOAD)
    proc = tuner(["run", "w.yaml"], tmp_path / "no-site", tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [
        "error: w.yaml:2: workload.kind: unknown workload kind 'count' (valid: command, pipeline, pool)"
    ], proc.stderr


def test_a_package_claiming_a_builtin_kind_is_an_error_naming_both(tmp_path: Path) -> None:
    site = build_and_install(tmp_path, dist="tuner-fake-pool", module="tuner_fake_pool", name="pool")
    (tmp_path / "w.yaml").write_text("workload: {kind: pool, backend: sim}\n")
    proc = tuner(["run", "w.yaml"], site, tmp_path)
    assert proc.returncode == 2, proc.stderr
    err = " ".join(proc.stderr.split())
    assert "w.yaml:1: workload.kind: workload kind name 'pool' is registered twice" in err
    assert "tuner.workloads.pool:PoolKind" in err and "tuner_fake_pool:CountKind" in err
    assert "tuner-fake-pool" in err
    assert "Traceback" not in proc.stderr


def test_the_worker_child_refuses_a_kind_that_runs_itself() -> None:
    with pytest.raises(TunerError, match="workload kind 'command' does not run in a worker process"):
        execute({"kind": "command", "argv": ["true"], "params": {}}, lambda _e: None)
