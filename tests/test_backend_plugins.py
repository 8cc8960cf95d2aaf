"""Backend plugins: a separately installed package is found by name through the ``tuner.backends`` group.

The plugin is a real distribution built the way its author would build it: the test writes its source and
its ``pyproject.toml`` (setuptools build backend, the entry point under
``[project.entry-points."tuner.backends"]``), builds the wheel from that pyproject with
``pip wheel --no-deps --no-index --no-build-isolation`` (setuptools from this environment: no network) and
installs it with pip (``--no-deps --no-index --target``) into a private site directory. ``tuner`` then runs
in a subprocess with that directory on ``PYTHONPATH`` — so the shared environment is never modified and
nothing needs cleaning up beyond ``tmp_path``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from _plugin_build import build_wheel, install_wheel, tuner, write_tree

from tuner.backends import registry
from tuner.errors import BackendError

PLUGIN_SOURCE = '''\
"""A minimal tuner backend plugin: each request sleeps 2 ms (a stand-in for a vendor runtime)."""
import time

from pydantic import BaseModel, ConfigDict, Field

from tuner.backends import Backend, Instance, RuntimeConfig


class EchoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    delay_ms: float = Field(2.0, ge=0)


class EchoInstance(Instance):
    def __init__(self, config, delay_s):
        super().__init__(config)
        self.delay_s = delay_s

    def prepare_inputs(self):
        return self.config.batch_size

    def infer(self, inputs):
        time.sleep(self.delay_s)
        return inputs

    def applied_options(self):
        return {"delay_ms": self.delay_s * 1000.0, "plugin": "tuner-echo-plugin"}


class EchoBackend(Backend):
    name = "{name}"
    options_model = EchoOptions
    needs_model = False
    cpu_bound = False

    def open(self, config: RuntimeConfig) -> EchoInstance:
        return EchoInstance(config, self.options.delay_ms / 1000.0)

    def versions(self):
        return {"tuner-echo-plugin": "0.1"}
'''

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1"
dependencies = ["tuner"]

[project.entry-points."tuner.backends"]
{name} = "{module}:EchoBackend"

[tool.setuptools]
packages = ["{module}"]
"""


def make_plugin(root: Path, *, dist: str, module: str, name: str) -> Path:
    """Write the plugin's source tree and build its wheel from its pyproject; return the wheel's path."""
    src = write_tree(
        root,
        dist=dist,
        module=module,
        source=PLUGIN_SOURCE.replace("{name}", name),
        pyproject=PYPROJECT.format(dist=dist, module=module, name=name),
    )
    wheel = build_wheel(src, root / f"{dist}-wheels")
    assert wheel.name == f"{dist.replace('-', '_')}-0.1-py3-none-any.whl"
    # the entry point in the wheel is the one the pyproject declares (setuptools wrote it, not the test)
    with zipfile.ZipFile(wheel) as zf:
        entry_points = zf.read(f"{dist.replace('-', '_')}-0.1.dist-info/entry_points.txt").decode()
        assert f"{module}/__init__.py" in zf.namelist()
    assert entry_points.split() == ["[tuner.backends]", name, "=", f"{module}:EchoBackend"]
    return wheel


WORKLOAD = """\
workload:
  kind: pool
  backend: {name}
  options: {{delay_ms: 2}}
search:
  pool_size: [1, 2]
  requests_per_sync: [1, 2]
measure: {{warmup_s: 0.2, window_s: 0.2, stable_windows: 2, stability: 0.5, max_s: 3}}
"""


@pytest.fixture(scope="module")
def echo_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plugin")
    wheel = make_plugin(root, dist="tuner-echo-plugin", module="tuner_echo_plugin", name="echo")
    site = root / "site"
    install_wheel(wheel, site)
    return site


def test_installed_plugin_is_picked_up_by_name(echo_site: Path, tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text(WORKLOAD.format(name="echo"))
    proc = tuner(
        ["run", "w.yaml", "--json", "--set", "pool_size=2", "--set", "requests_per_sync=2"], echo_site, tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["metrics"]["qps"] > 100  # 2 runtimes x 2 in flight x 2 ms: ~2000/s when nothing else runs
    assert doc["applied"]["plugin"] == "tuner-echo-plugin"
    assert doc["versions"] == {"tuner-echo-plugin": "0.1"}


def test_plugin_options_are_validated_by_its_model(echo_site: Path, tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text(WORKLOAD.format(name="echo").replace("delay_ms: 2", "delay_mss: 2"))
    proc = tuner(["run", "w.yaml"], echo_site, tmp_path)
    assert proc.returncode == 2
    assert "workload.options.delay_mss: unknown option of backend 'echo'" in proc.stderr
    assert "did you mean 'delay_ms'" in proc.stderr


def test_without_the_plugin_the_name_is_unknown_and_valid_ones_are_listed(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text(WORKLOAD.format(name="echo"))
    proc = tuner(["run", "w.yaml"], tmp_path / "no-site", tmp_path)
    assert proc.returncode == 2
    assert "unknown backend 'echo'" in proc.stderr
    assert "onnxruntime" in proc.stderr and "sim" in proc.stderr


def test_a_plugin_taking_a_builtin_name_is_an_error_naming_both(tmp_path: Path) -> None:
    wheel = make_plugin(tmp_path, dist="tuner-fake-sim", module="tuner_fake_sim", name="sim")
    site = tmp_path / "site"
    install_wheel(wheel, site)
    (tmp_path / "w.yaml").write_text(WORKLOAD.format(name="sim").replace("options: {delay_ms: 2}", "options: {}"))
    proc = tuner(["run", "w.yaml"], site, tmp_path)
    assert proc.returncode == 2
    err = " ".join(proc.stderr.split())
    assert "backend name 'sim' is registered twice" in err
    assert "tuner.backends.sim:SimBackend" in err and "tuner_fake_sim:EchoBackend" in err
    assert "tuner-fake-sim" in err


# --------------------------------------------------------------------------- registry, in-process


def test_registry_rejects_targets_that_are_not_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = {
        "notabackend": "json:dumps",
        "noattr": "json:no_such_thing",
        "nomodule": "no_such_module_xyz:X",
        "bare": "json",
    }
    monkeypatch.setattr(registry, "_entry_points", lambda: fake)
    with pytest.raises(BackendError, match="not a subclass of tuner.backends.Backend"):
        registry.get_backend("notabackend")
    with pytest.raises(BackendError, match="has no attribute 'no_such_thing'"):
        registry.get_backend("noattr")
    with pytest.raises(BackendError, match="could not be imported"):
        registry.get_backend("nomodule")
    with pytest.raises(BackendError, match="module:Class"):
        registry.get_backend("bare")
    with pytest.raises(BackendError, match=r"unknown backend 'notabackendd'.*did you mean 'notabackend'"):
        registry.get_backend("notabackendd")


def test_builtins_come_through_the_entry_point_group() -> None:
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group=registry.GROUP)}
    assert {"onnxruntime", "openvino", "sim"} <= names
    assert set(registry._BUILTIN_FALLBACK) <= names
