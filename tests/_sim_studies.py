"""Two real studies made with the ``sim`` device twin, shared by test_report, test_compare and test_export.

The same workload ``sim-npu`` on two "platforms": a 3-unit twin (RK3588-like) and a 2-unit twin
(RK3576-like), each run through :func:`tuner.study.run.optimize` (grid sampler, 6 configurations,
tiny measure settings) into its own SQLite file. Both really run on this machine, so the second
study's platform fingerprint is REWRITTEN after creation (``platform`` / ``platform_tag`` study user
attributes) to look like a different board -- that is what makes them two platforms for compare and
for ``--verify``'s platform check. The first keeps this machine's real fingerprint.

Built once per test session (memoised: the test modules each ask for it through a module fixture).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

WORKLOAD = """\
name: sim-npu
workload:
  kind: pool
  backend: sim
  options:
    units: {units}
    service_ms: 3.2
    host_overhead_ms: 4.53
    noise: 0.02
    memory_mb_per_runtime: 2
    load_ms: 0
search:
  pool_size: [1, 3, 6]
  batch_size: [1, 2]
objectives:
  - qps: maximize
  - latency_p99_ms: minimize
knee:
  tolerance: 0.10
measure:
  warmup_s: 0.1
  window_s: 0.15
  stable_windows: 2
  stability: 0.25
  max_s: 1.5
study:
  sampler: grid
  trials: 6
  trial_timeout_s: 60
  seed: 0
  confirm: {{rounds: 0}}   # these studies feed the report/compare/export tests: the search's trials only
  drift: {{every: 0}}
"""

#: the fingerprint written into study B (a different board; the numbers are the device twin's)
FAKE_PLATFORM = {
    "host": "rk3576-evb",
    "machine": "aarch64",
    "cpu_model": "Rockchip RK3576 (device twin)",
    "cpu_logical": 8,
    "cpu_physical": 8,
    "usable_cores": 8,
    "memory_mb": 7940,
    "os": "Linux 6.1.75-rockchip",
    "board": "Rockchip RK3576 EVB1 V10 Board (sim)",
    "accelerators": ["rockchip-npu"],
    "runtimes": {"python": "3.11.7"},
    "tuner": "0.1.0",
}


@dataclass(frozen=True)
class SimStudies:
    root: Path
    a_db: Path  # 3 units, this machine's fingerprint
    b_db: Path  # 2 units, FAKE_PLATFORM
    a_spec: Path
    b_spec: Path
    a_name: str
    b_name: str
    b_tag: str


_CACHE: dict[str, SimStudies] = {}


def _build(root: Path) -> SimStudies:
    from tuner.config.spec import load_spec
    from tuner.platform import platform_tag
    from tuner.study.run import optimize

    out = {}
    for key, units in (("a", 3), ("b", 2)):
        spec_path = root / f"sim-npu-{units}units.yaml"
        spec_path.write_text(WORKLOAD.format(units=units))
        db = root / f"{key}.db"
        result = optimize(load_spec(spec_path), storage=str(db))
        assert result.measured == 6, result.stop_reason
        out[key] = (spec_path, db, result.study_name)
    b_tag = platform_tag(FAKE_PLATFORM)
    study = optuna.load_study(study_name=out["b"][2], storage=f"sqlite:///{out['b'][1]}")
    # make study B look like another board (see the module docstring)
    study.set_user_attr("platform", FAKE_PLATFORM)
    study.set_user_attr("platform_tag", b_tag)
    return SimStudies(
        root=root,
        a_db=out["a"][1],
        b_db=out["b"][1],
        a_spec=out["a"][0],
        b_spec=out["b"][0],
        a_name=out["a"][2],
        b_name=out["b"][2],
        b_tag=b_tag,
    )


def sim_studies(tmp_path_factory: pytest.TempPathFactory) -> SimStudies:
    if "studies" not in _CACHE:
        _CACHE["studies"] = _build(tmp_path_factory.mktemp("sim-studies"))
    return _CACHE["studies"]


def combined_storage(studies: SimStudies, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """One storage holding both studies (B renamed after its platform), for several-studies cases."""
    if "combined" not in _CACHE:
        path = tmp_path_factory.mktemp("combined") / "both.db"
        url = f"sqlite:///{path}"
        names = [studies.a_name, f"sim-npu@{studies.b_tag}"]
        optuna.copy_study(from_study_name=studies.a_name, from_storage=f"sqlite:///{studies.a_db}", to_storage=url)
        optuna.copy_study(
            from_study_name=studies.b_name,
            from_storage=f"sqlite:///{studies.b_db}",
            to_storage=url,
            to_study_name=names[1],
        )
        _CACHE["combined"] = (path, names)  # type: ignore[assignment]
    return _CACHE["combined"]  # type: ignore[return-value]
