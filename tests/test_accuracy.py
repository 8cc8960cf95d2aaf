"""The accuracy guard (issue 15): its metrics, the reference set and its caches, zoo:digits, the workload file.

Real runtimes throughout: ONNX Runtime and OpenVINO on zoo:tiny, ONNX Runtime on zoo:digits (trained here on
scikit-learn's digits), one short real ``optimize`` with trial children. Expected figures are worked out by
hand from the formulas in :mod:`tuner.analysis.accuracy`.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import optuna
import pytest
import yaml
from typer.testing import CliRunner

from tuner.analysis.accuracy import (
    SQNR_CAP_DB,
    accuracy_metrics,
    nmse,
    sqnr_db,
    top1,
    top1_agreement,
    top1_drop,
)
from tuner.cli import app
from tuner.config.spec import load_spec
from tuner.errors import InputError, SpecError
from tuner.metrics import ACCURACY_METRICS, CLOSED_LOOP_METRICS, NUMERIC_METRICS
from tuner.models.zoo import resolve_data, zoo_array_path, zoo_path
from tuner.report.summary import study_report
from tuner.study.run import optimize
from tuner.workloads.pool import PoolKind, run_pool_job

#: a measurement as short as a trial can be (the guard's figures do not depend on it)
FAST = {"warmup_s": 0.1, "window_s": 0.1, "stable_windows": 1, "stability": 0.5, "max_s": 1}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private zoo cache for this module (children inherit it through the environment)."""
    directory = tmp_path_factory.mktemp("accuracy-cache")
    saved = os.environ.get("TUNER_CACHE_DIR")
    os.environ["TUNER_CACHE_DIR"] = str(directory)
    yield directory
    if saved is None:
        os.environ.pop("TUNER_CACHE_DIR", None)
    else:
        os.environ["TUNER_CACHE_DIR"] = saved


@pytest.fixture(scope="module")
def digits(cache: Path) -> Path:
    return zoo_path("digits", cache)


def write(tmp_path: Path, doc: Mapping[str, Any], name: str = "w") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(doc), sort_keys=False))
    return path


def tiny_doc(backend: str = "onnxruntime", options: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": "tiny-acc",
        "workload": {"kind": "pool", "backend": backend, "model": "zoo:tiny", "options": dict(options or {})},
        "search": {"batch_size": [3, 4]},
        "measure": FAST,
        **extra,
    }


def guard_trial(path: Path, **params: Any) -> dict[str, Any]:
    """One pool trial of the workload at ``path`` run in this process: the job as the parent builds it, then
    the child's measurement and guard."""
    from tuner.execution.runner import resolve_model_path

    spec = load_spec(path)
    job = PoolKind().build_job(spec, spec.resolve_params(params), resolve_model_path(spec))
    return run_pool_job(job, lambda _event: None)


# ------------------------------------------------------------------------------------------ the formulas


def test_sqnr_and_nmse_by_hand() -> None:
    # ref [3, 4], var [3, 3]: signal 9 + 16 = 25, noise 0 + 1 = 1
    assert nmse(np.array([3.0, 4.0]), np.array([3.0, 3.0])) == pytest.approx(1 / 25)
    assert sqnr_db(np.array([3.0, 4.0]), np.array([3.0, 3.0])) == pytest.approx(10 * math.log10(25))
    # ref [[1, 2], [2, 0]], var [[1, 1], [2, 2]]: signal 1 + 4 + 4 = 9, noise 1 + 4 = 5
    ref, var = np.array([[1.0, 2.0], [2.0, 0.0]]), np.array([[1.0, 1.0], [2.0, 2.0]])
    assert nmse(ref, var) == pytest.approx(5 / 9)
    assert sqnr_db(ref, var) == pytest.approx(10 * math.log10(9 / 5))
    # identical: no noise -> the cap; float16 outputs compare in float64
    assert sqnr_db(ref, ref.astype(np.float16)) == SQNR_CAP_DB == 200.0
    assert nmse(ref, ref) == 0.0
    # an all-zero reference: no signal
    assert sqnr_db(np.zeros(3), np.array([0.0, 1.0, 0.0])) == -SQNR_CAP_DB
    assert nmse(np.zeros(3), np.zeros(3)) == 0.0 and nmse(np.zeros(3), np.ones(3)) == math.inf
    with pytest.raises(ValueError, match="differ in shape"):
        nmse(np.zeros(3), np.zeros(4))


def test_top1_agreement_and_drop_on_a_toy() -> None:
    # four samples, three classes: arg-max ref 0, 1, 2, 1; var 0, 2, 2, 1
    ref = np.array([[5.0, 1, 0], [0, 3, 1], [0, 1, 9], [1, 2, 0]])
    var = np.array([[4.0, 1, 0], [0, 1, 3], [0, 1, 8], [0, 2, 1]])
    labels = np.array([0, 1, 1, 1])
    assert top1_agreement(ref, var) == 0.75  # samples 0, 2, 3 agree
    assert top1(ref, labels) == 0.75  # 0, 1, 3 right
    assert top1(var, labels) == 0.5  # 0, 3 right
    assert top1_drop(ref, var, labels) == 0.25
    metrics = accuracy_metrics(ref, var, classifier=True, labels=labels)
    assert list(metrics) == list(ACCURACY_METRICS)
    assert metrics["accuracy_top1"] == 0.5 and metrics["accuracy_top1_drop"] == 0.25
    assert list(accuracy_metrics(ref, var, classifier=False)) == ["accuracy_sqnr_db", "accuracy_nmse"]
    with pytest.raises(ValueError, match="2 scores"):
        top1_agreement(np.zeros((4, 1)), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="3 labels for 4 samples"):
        top1(ref, labels[:3])


def test_guard_metrics_are_contract_metrics_but_not_demanded_of_every_trial() -> None:
    for name in ACCURACY_METRICS:
        assert name in NUMERIC_METRICS  # usable in objectives and constraints
        assert name not in CLOSED_LOOP_METRICS  # measured only with the guard on


# ------------------------------------------------------------------------------------------ zoo:digits


def test_digits_is_trained_cached_and_classifies_its_held_out_split(digits: Path, cache: Path) -> None:
    x_file, y_file = zoo_array_path("digits", "test_x", cache), zoo_array_path("digits", "test_y", cache)
    assert (digits.name, x_file.name, y_file.name) == ("digits-v1.onnx", "digits-v1-test-x.npy", "digits-v1-test-y.npy")
    stamps = [p.stat().st_mtime_ns for p in (digits, x_file, y_file)]
    assert zoo_path("digits", cache) == digits  # cached: not trained again
    assert [p.stat().st_mtime_ns for p in (digits, x_file, y_file)] == stamps
    x, y = np.load(x_file), np.load(y_file)
    assert x.dtype == np.float32 and x.shape[1:] == (1, 8, 8) and 0.0 <= x.min() and x.max() <= 1.0
    assert y.dtype == np.int64 and y.shape == (x.shape[0],) and set(np.unique(y)) == set(range(10))
    assert x.shape[0] == round(1797 * 0.25)  # the held-out quarter of scikit-learn's 1797 digits
    session = ort.InferenceSession(str(digits), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("input", ["batch", 1, 8, 8])]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [("logits", ["batch", 10])]
    logits = session.run(None, {"input": x})[0]
    assert np.mean(logits.argmax(axis=1) == y) >= 0.95
    # the data references of the workload file
    assert resolve_data("zoo:digits/test_y", Path("/nowhere")) == y_file


def test_digits_without_scikit_learn_says_which_extra_in_one_line(tmp_path: Path) -> None:
    # the real missing-import path: importing sklearn raises ImportError in the child
    program = (
        "import sys\nsys.modules['sklearn'] = None\nfrom tuner.cli import main\n"
        "sys.argv = ['tuner', 'run', 'zoo:digits']\nmain()\n"
    )
    env = {**os.environ, "TUNER_CACHE_DIR": str(tmp_path / "empty-cache")}
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0
    assert len(lines) == 1, proc.stderr
    assert "zoo:digits" in lines[0] and "pip install 'tuner[precision]'" in lines[0] and "scikit-learn" in lines[0]


# ------------------------------------------------------------------------------------------ the workload file


@pytest.mark.parametrize(
    ("accuracy", "line", "expected"),
    [
        ({"samples": 0}, 5, "accuracy.samples = 0: Input should be greater than or equal to 1"),
        ({"data": "x.txt"}, 5, "accuracy.data = 'x.txt': expected a .npy or .npz file, or zoo:<name>/<array>"),
        ({"labels": "y.npz", "data": "x.npy"}, 5, "accuracy.labels = 'y.npz': expected a .npy file of integer labels"),
        ({"labels": "y.npy"}, 5, "accuracy.labels = 'y.npy': labels need data"),
        ({"sample": 3}, 5, "accuracy.sample: unknown key (did you mean 'samples'?)"),
        ({"data": "missing.npy"}, 5, "accuracy.data = 'missing.npy': file not found (looked for"),
        ({"data": "zoo:digits/test_z"}, 5, "accuracy.data = 'zoo:digits/test_z': zoo:digits ships no array 'test_z'"),
        ({"data": "zoo:tiny/x"}, 5, "accuracy.data = 'zoo:tiny/x': zoo:tiny ships no arrays"),
    ],
)
def test_bad_accuracy_values_name_file_line_and_key(
    tmp_path: Path, accuracy: dict[str, Any], line: int, expected: str
) -> None:
    text = "workload:\n  backend: onnxruntime\n  model: zoo:tiny\naccuracy:\n" + "".join(
        f"  {k}: {v}\n" for k, v in accuracy.items()
    )
    path = tmp_path / "w.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert expected in message


def test_guard_metrics_need_what_measures_them(tmp_path: Path) -> None:
    # top-1 needs labels: the constraint's own line
    doc = tiny_doc(constraints={"accuracy_top1_drop": {"max": 0.01}})
    with pytest.raises(SpecError, match=r"w.yaml:\d+: constraints.accuracy_top1_drop: .* labelled reference data"):
        load_spec(write(tmp_path, doc))
    # a backend that feeds no model (sim) cannot be guarded
    sim = {"workload": {"backend": "sim"}, "constraints": {"accuracy_nmse": {"max": 0.01}}}
    with pytest.raises(SpecError, match="backend 'sim' feeds no model inputs"):
        load_spec(write(tmp_path, sim))
    # only kind: pool runs the guard
    command = {"workload": {"kind": "command", "command": ["true"], "parse": "json"}, "accuracy": {}}
    with pytest.raises(SpecError, match=r"w.yaml:\d+: accuracy: the accuracy guard runs in kind: pool only"):
        load_spec(write(tmp_path, command))


def test_the_guard_turns_on_and_its_section_is_in_the_study_hash(tmp_path: Path) -> None:
    plain = load_spec(write(tmp_path, tiny_doc()))
    assert not plain.model.accuracy_on()
    by_metric = load_spec(write(tmp_path, tiny_doc(objectives=[{"qps": "maximize"}, {"accuracy_nmse": "minimize"}])))
    assert by_metric.model.accuracy_on()
    by_option = load_spec(write(tmp_path, tiny_doc(search={"options.precision": ["fp32", "fp16"]})))
    assert by_option.model.accuracy_on()
    declared = load_spec(write(tmp_path, tiny_doc(accuracy={"samples": 8})))
    more = load_spec(write(tmp_path, tiny_doc(accuracy={"samples": 9})))
    assert declared.model.accuracy_on() and len({plain.spec_hash, declared.spec_hash, more.spec_hash}) == 3


# ------------------------------------------------------------------------------------------ the guard


def test_openvino_bf16_differs_from_the_fp32_reference(tmp_path: Path, cache: Path) -> None:
    doc = tiny_doc("openvino", {"inference_precision": "bf16"}, accuracy={"samples": 10})
    out = guard_trial(write(tmp_path, doc), batch_size=4)  # 3 requests, the last padded (2 samples kept)
    m = out["metrics"]
    assert m["qps"] > 0
    assert m["accuracy_nmse"] > 0
    assert 0 < m["accuracy_sqnr_db"] < SQNR_CAP_DB
    assert m["accuracy_sqnr_db"] == pytest.approx(-10 * math.log10(m["accuracy_nmse"]))
    assert 0 <= m["accuracy_top1_agreement"] <= 1
    assert "accuracy_top1" not in m  # no labels
    applied = out["applied"]["accuracy"]
    assert applied["output"] == "logits" and applied["samples"] == 10
    assert applied["reference_runtime"].startswith("onnxruntime")


def test_onnxruntime_fp32_matches_its_reference_and_the_caches_are_reused(tmp_path: Path, cache: Path) -> None:
    path = write(tmp_path, tiny_doc(accuracy={"samples": 7, "seed": 3}))
    first = guard_trial(path, batch_size=3)  # 3 requests, the last padded (1 sample kept)
    assert first["metrics"]["accuracy_sqnr_db"] == SQNR_CAP_DB  # the same session options: identical outputs
    assert first["metrics"]["accuracy_nmse"] == 0.0 and first["metrics"]["accuracy_top1_agreement"] == 1.0
    made = first["applied"]["accuracy"]
    assert (made["reference_set"], made["reference"], made["result"]) == ("computed", "computed", "computed")
    references = sorted((cache / "accuracy").glob("ref-*.npy"))
    # another config of the same options: nothing computed again
    second = guard_trial(path, batch_size=4)
    made = second["applied"]["accuracy"]
    assert (made["reference_set"], made["reference"], made["result"]) == ("cached", "cached", "cached")
    assert second["metrics"]["accuracy_sqnr_db"] == SQNR_CAP_DB
    assert sorted((cache / "accuracy").glob("ref-*.npy")) == references
    # another reference set (samples changed): the set, its reference and the result are made again
    changed = guard_trial(write(tmp_path, tiny_doc(accuracy={"samples": 5, "seed": 3})), batch_size=4)
    made = changed["applied"]["accuracy"]
    assert (made["reference_set"], made["reference"], made["result"]) == ("computed", "computed", "computed")
    assert len(sorted((cache / "accuracy").glob("ref-*.npy"))) == len(references) + 1
    # other options (a precision variant would be one): the result is computed again, the reference reused
    basic = tiny_doc("onnxruntime", {"graph_optimization_level": "basic"}, accuracy={"samples": 5, "seed": 3})
    made = guard_trial(write(tmp_path, basic), batch_size=4)["applied"]["accuracy"]
    assert (made["reference"], made["result"]) == ("cached", "computed")


def test_labelled_digits_give_top1_and_no_drop_at_fp32(tmp_path: Path, digits: Path) -> None:
    doc = {
        "workload": {"backend": "onnxruntime", "model": "zoo:digits"},
        "search": {"batch_size": 16},
        "accuracy": {"data": "zoo:digits/test_x", "labels": "zoo:digits/test_y"},
        "constraints": {"accuracy_top1_drop": {"max": 0.01}},
        "measure": FAST,
    }
    out = guard_trial(write(tmp_path, doc))
    m = out["metrics"]
    labels = np.load(zoo_array_path("digits", "test_y"))
    assert out["applied"]["accuracy"]["samples"] == len(labels)
    assert m["accuracy_top1"] >= 0.95 and m["accuracy_top1_drop"] == 0.0
    assert m["accuracy_top1"] == out["applied"]["accuracy"]["reference_top1"]


def test_bad_reference_data_is_an_error_naming_the_key(tmp_path: Path, cache: Path) -> None:
    x = np.zeros((6, 3, 32, 32), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "floats.npy", np.zeros(6))
    np.save(tmp_path / "five.npy", np.zeros(5, dtype=np.int64))
    np.save(tmp_path / "flat.npy", np.zeros((6, 3072), dtype=np.float32))
    cases = [
        ({"data": "x.npy", "labels": "floats.npy"}, "accuracy.labels: .* holds float64 \\[6\\]; expected a 1-D array"),
        ({"data": "x.npy", "labels": "five.npy"}, "accuracy.labels: .* holds 5 labels for 6 samples"),
        ({"data": "x.npy", "samples": 7}, "accuracy.samples = 7: .* holds 6 samples"),
        ({"data": "flat.npy"}, "accuracy.data: .* holds shape \\[6, 3072\\] for input 'input'"),
        ({"data": "x.npy", "output": "scores"}, "accuracy.output = 'scores': .* \\(its outputs: logits\\)"),
    ]
    for accuracy, pattern in cases:
        path = write(tmp_path, tiny_doc(accuracy=accuracy))
        with pytest.raises(InputError, match=f"^{path}: {pattern}"):
            guard_trial(path, batch_size=3)


# ------------------------------------------------------------------------------------------ a real study


def test_a_guard_constraint_makes_trials_infeasible_never_best_or_knee(tmp_path: Path, cache: Path) -> None:
    # OpenVINO f32 is within float32 rounding of ONNX Runtime's fp32 reference (~130 dB); bf16 is not (~50 dB)
    doc = tiny_doc(
        "openvino",
        accuracy={"samples": 8},
        search={"options.inference_precision": ["bf16", "f32"]},
        constraints={"accuracy_sqnr_db": {"min": 90}},
        study={
            "storage": "studies/acc.db",
            "trials": 2,
            "sampler": "grid",
            "confirm": {"rounds": 0},
            "drift": {"every": 0},
        },
    )
    spec = load_spec(write(tmp_path, doc))
    result = optimize(spec)
    assert result.measured == 2
    study = optuna.load_study(study_name=result.study_name, storage=spec.storage_url())
    by_precision = {t.params["options.inference_precision"]: t for t in study.get_trials()}
    bf16, f32 = by_precision["bf16"].user_attrs, by_precision["f32"].user_attrs
    assert bf16["feasible"] is False and bf16["constraints"][0] > 0
    assert f32["feasible"] is True and f32["constraints"] == [-1.0]
    assert bf16["accuracy_sqnr_db"] < 90 <= f32["accuracy_sqnr_db"] < SQNR_CAP_DB
    assert bf16["accuracy_nmse"] > f32["accuracy_nmse"] > 0
    report = study_report(study)
    assert report["best"]["number"] == report["knee"]["number"] == by_precision["f32"].number
    assert [r["number"] for r in report["infeasible"]] == [by_precision["bf16"].number]
    assert report["best"]["metrics"]["accuracy_sqnr_db"] == f32["accuracy_sqnr_db"]
    # tuner report's tables show the guard's figures of the studies that have them
    from tuner.cli._common import out_console

    saved = out_console._width
    out_console.width = 220
    try:
        shown = CliRunner().invoke(app, ["report", spec.storage_url()])
    finally:
        out_console._width = saved
    assert shown.exit_code == 0, shown.stderr
    assert "sqnr dB" in shown.stdout and "top1 agree" in shown.stdout
