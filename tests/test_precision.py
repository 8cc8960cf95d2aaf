"""Precision variants (issue 15): int8 / int8-dynamic / fp16 models built once, cached by what changes them,
opened by the backends, built before any trial, reported in applied options and exports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from tuner.backends.base import RuntimeConfig
from tuner.backends.onnxruntime import OnnxRuntimeBackend
from tuner.config.spec import parse_spec
from tuner.errors import BackendError, InputError, ModelError
from tuner.execution.runner import prepare_backend
from tuner.models.precision import QuantizationSettings, calibration_feeds, calibration_samples, ort_variant
from tuner.models.signature import read_signature

X = np.random.default_rng(7).standard_normal((2, 3, 32, 32)).astype(np.float32)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private tuner cache (zoo graphs and variants) for one test."""
    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def run_ort(model: Path, options: dict[str, Any], batch: int = 2) -> tuple[np.ndarray, dict[str, Any]]:
    backend = OnnxRuntimeBackend(model, options)
    inst = backend.open(RuntimeConfig(threads=1, batch_size=batch))
    try:
        return inst.infer({"input": X[:batch]})[0], inst.applied_options()
    finally:
        inst.close()


# ------------------------------------------------------------------------------------------ ONNX Runtime


def test_each_ort_variant_builds_loads_runs_and_is_reported(tiny_model: Path, cache: Path) -> None:
    ref, applied = run_ort(tiny_model, {})
    assert applied["precision"] == "fp32" and applied["variant"] is None
    ops = {}
    for precision in ("int8", "int8-dynamic", "fp16"):
        out, applied = run_ort(tiny_model, {"precision": precision, "quantization": {"samples": 4}})
        variant = applied["variant"]
        assert applied["precision"] == precision and variant["precision"] == precision
        path = Path(variant["path"])
        assert path.is_file() and path.parent == cache / "variants" and path != tiny_model
        assert variant["source"] == str(tiny_model) and len(variant["sha256"]) == 64
        assert out.shape == ref.shape and np.isfinite(out).all()
        assert not np.array_equal(out, ref)  # another model ran ...
        assert np.abs(out - ref).max() < 0.2 * np.abs(ref).max()  # ... computing the same function
        model = onnx.load(str(path))
        ops[precision] = {n.op_type for n in model.graph.node}
        inputs = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
        assert inputs == {"input": onnx.TensorProto.FLOAT}  # fp16 too: the feeds stay float32
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops["int8"]
    assert "DynamicQuantizeLinear" in ops["int8-dynamic"] or "ConvInteger" in ops["int8-dynamic"]
    assert "Cast" in ops["fp16"]
    fp16 = onnx.load(str(Path(run_ort(tiny_model, {"precision": "fp16"})[1]["variant"]["path"])))
    assert {t.data_type for t in fp16.graph.initializer} == {onnx.TensorProto.FLOAT16}


def test_the_cache_is_keyed_by_what_changes_the_variant(tiny_model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c"
    first = ort_variant(tiny_model, "int8", QuantizationSettings(samples=4), cache_dir=cache)
    stat = first.path.stat()
    again = ort_variant(tiny_model, "int8", QuantizationSettings(samples=4), cache_dir=cache)
    assert first.built and not again.built and again.path == first.path
    assert (again.path.stat().st_ino, again.path.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    paths = {first.path}
    for changed in (
        QuantizationSettings(samples=5),
        QuantizationSettings(samples=4, method="entropy"),
        QuantizationSettings(samples=4, seed=1),
        QuantizationSettings(samples=4, per_channel=False),
    ):
        other = ort_variant(tiny_model, "int8", changed, cache_dir=cache)
        assert other.built and other.path not in paths
        paths.add(other.path)
    # a calibration file: its path, then its content, make new variants
    data = tmp_path / "calib.npy"
    np.save(data, np.zeros((3, 3, 32, 32), np.float32))
    from_file = QuantizationSettings(samples=4, data={"input": {"file": str(data)}})
    a = ort_variant(tiny_model, "int8", from_file, cache_dir=cache)
    assert a.built and a.path not in paths and a.settings["data"]["input"]["path"] == str(data)
    np.save(data, np.ones((3, 3, 32, 32), np.float32))
    b = ort_variant(tiny_model, "int8", from_file, cache_dir=cache)
    assert b.built and b.path != a.path
    # settings that do not apply to a precision do not make another file
    dyn = ort_variant(tiny_model, "int8-dynamic", QuantizationSettings(samples=4), cache_dir=cache)
    assert not ort_variant(tiny_model, "int8-dynamic", QuantizationSettings(samples=9), cache_dir=cache).built
    assert dyn.settings == {"per_channel": True, "reduce_range": False}


def test_calibration_samples_follow_the_declared_inputs_at_batch_one(tiny_model: Path, tmp_path: Path) -> None:
    plan = {"input": {"shape": [8, 3, 32, 32], "batch_axis": 0, "dtype": None, "data": {"kind": "zeros"}}}
    feeds = calibration_feeds(read_signature(tiny_model), plan, QuantizationSettings())
    assert feeds[0].shape == (1, 3, 32, 32) and feeds[0].data == {"kind": "zeros"}
    samples = calibration_samples(feeds, 3, seed=0)
    assert len(samples) == 3 and all(not s["input"].any() and s["input"].shape == (1, 3, 32, 32) for s in samples)
    # a data source of quantization.data replaces the plan's; a file is sliced or tiled to the sample count
    data = tmp_path / "c.npy"
    np.save(data, np.arange(2 * 3 * 32 * 32, dtype=np.float32).reshape(2, 3, 32, 32))
    settings = QuantizationSettings(data={"input": {"file": str(data)}})
    samples = calibration_samples(calibration_feeds(read_signature(tiny_model), plan, settings), 3, seed=0)
    assert [float(s["input"].flat[0]) for s in samples] == [0.0, 3072.0, 0.0]
    normal = calibration_feeds(read_signature(tiny_model), {}, QuantizationSettings())
    a, b = calibration_samples(normal, 2, seed=5), calibration_samples(normal, 2, seed=5)
    assert np.array_equal(a[1]["input"], b[1]["input"]) and not np.array_equal(a[0]["input"], a[1]["input"])
    with pytest.raises(InputError, match=r"quantization\.data\.images: the model has no input 'images'"):
        calibration_feeds(read_signature(tiny_model), {}, QuantizationSettings(data={"images": "zeros"}))


def test_bad_precision_and_quantization_values_name_the_option(tiny_model: Path) -> None:
    with pytest.raises(BackendError, match=r"option 'precision' = 'int4'.*'fp32', 'int8', 'int8-dynamic' or 'fp16'"):
        OnnxRuntimeBackend(tiny_model, {"precision": "int4"})
    with pytest.raises(
        BackendError, match=r"option 'quantization\.method' = 'kl'.*'minmax', 'entropy' or 'percentile'"
    ):
        OnnxRuntimeBackend(tiny_model, {"quantization": {"method": "kl"}})
    with pytest.raises(BackendError, match=r"option 'quantization\.samples' = 0"):
        OnnxRuntimeBackend(tiny_model, {"quantization": {"samples": 0}})
    with pytest.raises(BackendError, match=r"quantization\.bins"):
        OnnxRuntimeBackend(tiny_model, {"quantization": {"bins": 128}})
    with pytest.raises(BackendError, match=r"input: file 'calib\.npy' is a relative path.*absolute path"):
        OnnxRuntimeBackend(tiny_model, {"quantization": {"data": {"input": {"file": "calib.npy"}}}})


def test_a_model_with_external_data_is_refused_clearly(tiny_model: Path, tmp_path: Path) -> None:
    model = onnx.load(str(tiny_model))
    path = tmp_path / "ext" / "m.onnx"
    path.parent.mkdir()
    onnx.save_model(model, str(path), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    with pytest.raises(ModelError, match=r"m\.onnx keeps its weights in external data files.*not supported"):
        ort_variant(path, "int8", cache_dir=tmp_path / "c")
    assert not (tmp_path / "c" / "variants").exists() or not any((tmp_path / "c" / "variants").iterdir())


def test_a_missing_optional_package_is_one_line_naming_the_extra(tiny_model: Path, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['onnxconverter_common'] = None; sys.modules['nncf'] = None\n"
        "from pathlib import Path\n"
        "from tuner.errors import BackendError\n"
        "from tuner.models.precision import openvino_int8_variant, ort_variant\n"
        "for build in (lambda p, cache_dir: ort_variant(p, 'fp16', cache_dir=cache_dir), openvino_int8_variant):\n"
        "    try:\n"
        f"        build(Path({str(tiny_model)!r}), cache_dir=Path({str(tmp_path)!r}))\n"
        "    except BackendError as err:\n"
        "        print(err)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "precision fp16 on onnxruntime needs onnxconverter-common: pip install 'tuner[precision]'",
        "precision int8 on openvino needs nncf: pip install 'tuner[precision]'",
    ]


# ------------------------------------------------------------------------------------------ OpenVINO


def _open_ov(model: Path, options: dict[str, Any]) -> dict[str, Any]:
    from tuner.backends.openvino import OpenVinoBackend

    inst = OpenVinoBackend(model, options).open(RuntimeConfig(threads=1, batch_size=1))
    try:
        inst.infer({0: X[:1]})
        return inst.applied_options()
    finally:
        inst.close()


def test_openvino_precision_hints_run_and_say_what_ran(tiny_model: Path) -> None:
    ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'tuner[openvino]')")
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    applied = _open_ov(tiny_model, {"precision": "f32"})
    assert applied["precision"] == "f32" and applied["INFERENCE_PRECISION_HINT"] == "f32"
    applied = _open_ov(tiny_model, {"precision": "bf16"})
    assert applied["precision_asked"] == "bf16"
    if "BF16" in capabilities:  # AVX-512 BF16 / AMX: the CPU really runs it
        assert applied["INFERENCE_PRECISION_HINT"] == "bf16" and set(applied["executed_precisions"]) == {"bf16"}
    # whatever the CPU made of the hint, "precision" is what the compute layers executed in
    for asked in ("bf16", "f16"):
        applied = _open_ov(tiny_model, {"precision": asked})
        top = max(applied["executed_precisions"].items(), key=lambda kv: kv[1])[0]
        assert applied["precision"] == top and applied["variant"] is None


def test_openvino_int8_is_an_nncf_variant_built_once(tiny_model: Path, cache: Path) -> None:
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'tuner[openvino]')")
    pytest.importorskip("nncf", reason="nncf is not installed (pip install 'tuner[precision]')")
    applied = _open_ov(tiny_model, {"precision": "int8", "quantization": {"samples": 4}})
    assert applied["precision"] == "int8" and applied["precision_asked"] == "int8"
    assert set(applied["executed_precisions"]) & {"u8", "i8"}
    xml = Path(applied["variant"]["path"])
    assert xml.suffix == ".xml" and xml.with_suffix(".bin").is_file() and xml.parent == cache / "variants"
    mtime = xml.stat().st_mtime_ns
    assert _open_ov(tiny_model, {"precision": "int8", "quantization": {"samples": 4}})["variant"]["path"] == str(xml)
    assert xml.stat().st_mtime_ns == mtime


def test_openvino_contradictory_precision_settings_are_refused(tiny_model: Path) -> None:
    from tuner.backends.openvino import OpenVinoBackend

    with pytest.raises(BackendError, match="precision bf16 contradicts inference_precision f32"):
        OpenVinoBackend(tiny_model, {"precision": "bf16", "inference_precision": "f32"})
    with pytest.raises(BackendError, match="quantization.method is an onnxruntime setting"):
        OpenVinoBackend(tiny_model, {"precision": "int8", "quantization": {"method": "entropy"}})
    # the existing option keeps working, and agrees with the same precision
    assert OpenVinoBackend(tiny_model, {"inference_precision": "bf16"}).options.hint() == "bf16"  # type: ignore[attr-defined]
    assert OpenVinoBackend(tiny_model, {"precision": "f16", "inference_precision": "f16"}).options.hint() == "f16"  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------ pre-flight, study


def _spec(tmp_path: Path, model: Path, search: str, options: str = "{quantization: {samples: 4}}") -> Any:
    text = (
        f"name: prec\nworkload: {{kind: pool, backend: onnxruntime, model: {model}, options: {options}}}\n"
        f"search: {{pool_size: 1, threads: 1, requests_per_sync: 1, batch_size: 1, {search}}}\n"
        "objectives: [{qps: maximize}]\n"
        "measure: {warmup_s: 0.1, window_s: 0.2, stable_windows: 2, stability: 0.9, max_s: 2}\n"
        f"study: {{sampler: grid, trials: 2, storage: {tmp_path / 's.db'}, confirm: {{rounds: 0}}, "
        "drift: {every: 0}}\n"
    )
    return parse_spec(text, path=tmp_path / "prec.yaml")


def test_a_build_failure_is_a_clear_error_before_any_trial(tiny_model: Path, tmp_path: Path, cache: Path) -> None:
    spec = _spec(tmp_path, tiny_model, "options.precision: [fp32, int8]", "{quantization: {data: {images: zeros}}}")
    with pytest.raises(InputError, match=r"prec\.yaml: onnxruntime options .*'precision': 'int8'.*quantization\.data"):
        prepare_backend(spec, tiny_model)
    ext = tmp_path / "m.onnx"
    onnx.save_model(onnx.load(str(tiny_model)), str(ext), save_as_external_data=True, size_threshold=0)
    spec = _spec(tmp_path, ext, "options.precision: [fp32, fp16]")
    with pytest.raises(ModelError, match=r"prec\.yaml: .*'precision': 'fp16'.*m\.onnx keeps its weights in external"):
        prepare_backend(spec, ext)


def test_optimize_builds_every_variant_before_the_first_trial_and_export_names_it(
    tiny_model: Path, tmp_path: Path, cache: Path
) -> None:
    from tuner.export.formats import render
    from tuner.export.select import select
    from tuner.models.precision import file_sha256
    from tuner.report.load import REPORT_SKIP, load_one_study, parse_ref
    from tuner.report.summary import study_report
    from tuner.study.run import optimize

    spec = _spec(tmp_path, tiny_model, "options.precision: [int8, fp16]")
    events: list[dict[str, Any]] = []
    result = optimize(spec, on_event=events.append)
    names = [e["event"] for e in events]
    built = [e["message"] for e in events if e["event"] == "notice" and "variant" in e["message"]]
    assert len(built) == 2 and all("before any trial" in m for m in built)
    assert names.index("notice") < names.index("study") < names.index("trial_start")
    variants = sorted((cache / "variants").glob("*.onnx"))
    assert len(variants) == 2
    mtimes = {p: p.stat().st_mtime_ns for p in variants}
    ref = parse_ref(result.storage)
    data = load_one_study(ref, skip_attrs=REPORT_SKIP)
    for trial in data.trials:
        fresh = load_one_study(ref).trials[trial.number].user_attrs["applied"]
        assert Path(fresh["variant"]["path"]) in mtimes and fresh["precision"] == trial.params["options.precision"]
    assert {p: p.stat().st_mtime_ns for p in variants} == mtimes  # the trials opened them, built nothing
    report = study_report(data, trials=data.trials)
    for number in (0, 1):
        doc = json.loads(render(select(data, report, f"trial:{number}"), "onnxruntime"))
        path = Path(doc["model"]["path"])
        assert path in mtimes and doc["model"]["sha256"] == file_sha256(path)
        assert doc["model"]["precision"] == data.trials[number].params["options.precision"]
