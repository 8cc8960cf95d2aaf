"""``tuner export`` of a study whose workload declares its inputs (issue 13): the shapes a deployment needs.

One real SQLite study (the ``sim`` device twin, so it measures in well under a second per trial) of a
workload that declares ``images: [batch, 3, image_size, image_size]`` for the zoo's ``detector_hw`` (open
height and width) with ``image_size`` searched over 32 and 64. Each trial's export must carry its own shapes:
Triton ``dims`` (batch left out, ``max_batch_size`` = the batch), OpenVINO ``reshape`` and
``benchmark_app -shape``, the ONNX Runtime ``inputs`` block, and the ``tuner`` workload re-feeding them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from tuner.cli import app
from tuner.config.inputs import declared_inputs, plan_inputs
from tuner.config.spec import load_spec
from tuner.export.formats import render
from tuner.export.model_io import named_shapes, shape_text
from tuner.export.select import Selection
from tuner.export.triton import parse_config_pbtxt
from tuner.models.zoo import zoo_path

WORKLOAD = """\
name: detector
workload:
  kind: pool
  backend: sim
  model: {model}
  options: {{units: 2, service_ms: 1.0, host_overhead_ms: 0.5, noise: 0.0, load_ms: 0}}
  inputs:
    images: {{shape: [batch, 3, image_size, image_size]}}
search:
  image_size: [32, 64]
  batch_size: 2
measure: {{warmup_s: 0.05, window_s: 0.1, stable_windows: 2, stability: 0.5, max_s: 1.0}}
study:
  sampler: grid
  trials: 2
  trial_timeout_s: 60
  confirm: {{rounds: 0}}
  drift: {{every: 0}}
"""


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo-cache")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, zoo: Path) -> tuple[Path, dict[int, int]]:
    """The study's storage and its trials: trial number -> the image_size it measured."""
    from tuner.study.run import optimize

    root = tmp_path_factory.mktemp("inputs-study")
    spec_path = root / "detector.yaml"
    spec_path.write_text(WORKLOAD.format(model=zoo_path("detector_hw", cache_dir=zoo)))
    db = root / "detector.db"
    result = optimize(load_spec(spec_path), storage=str(db))
    assert result.measured == 2, result.stop_reason
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{db}")
    trials = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{db}").trials
    sizes = {t.number: int(t.user_attrs["config"]["image_size"]) for t in trials}
    assert sorted(sizes.values()) == [32, 64]
    return db, sizes


def export(db: Path, number: int, fmt: str, out: Path) -> str:
    result = CliRunner().invoke(app, ["export", str(db), "--pick", f"trial:{number}", "--format", fmt, "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    return out.read_text()


def test_triton_dims_follow_each_trials_declared_shape(study: tuple[Path, dict[int, int]], tmp_path: Path) -> None:
    db, sizes = study
    for number, size in sizes.items():
        config = parse_config_pbtxt(export(db, number, "triton", tmp_path / f"{number}.pbtxt"))
        assert config.max_batch_size == 2  # the batch: left out of dims (Triton's implicit batching)
        (image,) = config.input
        assert image.name == "images" and list(image.dims) == [3, size, size]
        data_types = image.DESCRIPTOR.fields_by_name["data_type"].enum_type.values_by_name
        assert image.data_type == data_types["TYPE_FP32"].number
        (scores,) = config.output
        assert scores.name == "scores" and list(scores.dims) == [10]
        assert list(config.dynamic_batching.preferred_batch_size) == [2]


def test_openvino_export_reshapes_to_the_declared_shape(
    study: tuple[Path, dict[int, int]], tmp_path: Path, zoo: Path
) -> None:
    db, sizes = study
    for number, size in sizes.items():
        doc = json.loads(export(db, number, "openvino", tmp_path / f"{number}.ov.json"))
        assert doc["reshape"] == {"images": [2, 3, size, size]}
        assert f"-shape 'images[2,3,{size},{size}]'" in doc["benchmark_app"] and " -b " not in doc["benchmark_app"]
    ov = pytest.importorskip("openvino")
    core = ov.Core()
    model = core.read_model(str(zoo_path("detector_hw", cache_dir=zoo)))
    model.reshape({name: ov.PartialShape(shape) for name, shape in doc["reshape"].items()})
    compiled = core.compile_model(model, doc["device"], doc["compile_properties"])
    assert list(compiled.inputs[0].get_shape()) == [2, 3, size, size]


def test_onnxruntime_export_says_what_the_study_fed(
    study: tuple[Path, dict[int, int]], tmp_path: Path, zoo: Path
) -> None:
    import onnxruntime as ort

    db, sizes = study
    session = ort.InferenceSession(str(zoo_path("detector_hw", cache_dir=zoo)), providers=["CPUExecutionProvider"])
    for number, size in sizes.items():
        doc = json.loads(export(db, number, "onnxruntime", tmp_path / f"{number}.ort.json"))
        entry = doc["inputs"]["images"]
        assert entry == {"shape": [2, 3, size, size], "dtype": "float32", "batch_axis": 0, "data": {"kind": "normal"}}
        feed = {name: np.zeros(e["shape"], dtype=e["dtype"]) for name, e in doc["inputs"].items()}
        (scores,) = session.run(None, feed)
        assert scores.shape == (2, 10)


def test_tuner_export_refeeds_the_same_shapes(study: tuple[Path, dict[int, int]], tmp_path: Path) -> None:
    db, sizes = study
    for number, size in sizes.items():
        path = tmp_path / f"{number}.yaml"
        export(db, number, "tuner", path)
        spec = load_spec(path)
        assert spec.searched_axes() == {} and spec.default_params()["image_size"] == size
        plan = plan_inputs(declared_inputs(spec.workload), spec.default_params(), spec.base_dir)
        assert plan["images"]["shape"] == [2, 3, size, size] and plan["images"]["batch_axis"] == 0


def test_the_shape_text_is_one_format() -> None:
    from tuner.export.model_io import Tensor

    assert shape_text([1, 3, 320, 320]) == "[1,3,320,320]" and shape_text([]) == "[]"
    tensors = (Tensor("images", "float32", (1, 3, 320, 320)), Tensor("sr", "int64", (), None))
    assert named_shapes(tensors) == "images[1,3,320,320],sr[]"


# ------------------------------------------------------------------------- without a study


def _selection(workload_text: str, params: dict, workload_path: str | None = None) -> Selection:
    return Selection(
        study="w@x86_64-2c-abcdef",
        storage="sqlite:////tmp/w.db",
        pick="best",
        number=4,
        params=params,
        metrics={"qps": 123.0, "latency_p99_ms": 9.5},
        feasible=True,
        workload_text=workload_text,
        workload_path=workload_path,
        workload_name="w",
        platform={"cpu_model": "X", "cpu_logical": 2},
        platform_tag="x86_64-2c-abcdef",
        spec_hash="h",
    )


PARAMS = {"pool_size": 2, "threads": 1, "requests_per_sync": 1, "batch_size": 4}


def test_triton_without_implicit_batching_when_the_batch_is_not_first(zoo: Path) -> None:
    model = zoo_path("speech_state", cache_dir=zoo)
    text = f"""\
workload:
  backend: onnxruntime
  model: {model}
  inputs:
    audio: {{shape: [batch, 512]}}
    sr: {{shape: [], data: {{value: 16000}}}}
    state: {{shape: [2, batch, 64], data: zeros}}
"""
    pbtxt = render(_selection(text, PARAMS), "triton")
    config = parse_config_pbtxt(pbtxt)
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert "# max_batch_size 0: input 'sr' [] has no batch dimension, input 'state' [2,4,64] has its batch on" in pbtxt
    dims = {i.name: list(i.dims) for i in config.input}
    assert dims == {"audio": [-1, 512], "sr": [1], "state": [2, -1, 64]}  # full shapes, the open batch -1
    sr = next(i for i in config.input if i.name == "sr")
    assert sr.HasField("reshape") and list(sr.reshape.shape) == []  # a scalar: one element reshaped to rank 0
    assert {o.name: list(o.dims) for o in config.output} == {"prob": [-1, 1], "new_state": [2, -1, 64]}
    doc = json.loads(render(_selection(text, PARAMS), "openvino"))
    assert doc["reshape"] == {"audio": [4, 512], "sr": [], "state": [2, 4, 64]}
    assert "-shape 'audio[4,512],sr[],state[2,4,64]'" in doc["benchmark_app"]
    ort_doc = json.loads(render(_selection(text, PARAMS), "onnxruntime"))
    sr_entry = {"shape": [], "dtype": "int64", "batch_axis": None, "data": {"kind": "value", "value": 16000}}
    assert ort_doc["inputs"]["sr"] == sr_entry


def test_triton_dims_from_the_model_when_nothing_is_declared(tiny_model: Path) -> None:
    text = f"workload: {{backend: onnxruntime, model: {tiny_model}}}\n"
    config = parse_config_pbtxt(render(_selection(text, PARAMS), "triton"))
    assert config.max_batch_size == 4
    assert [(i.name, list(i.dims)) for i in config.input] == [("input", [3, 32, 32])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("logits", [10])]
    doc = json.loads(render(_selection(text, PARAMS), "openvino"))
    assert doc["reshape"] == {"input": [4, 3, 32, 32]}


def test_an_open_dimension_nobody_declared_stays_open(zoo: Path) -> None:
    text = f"workload: {{backend: onnxruntime, model: {zoo_path('detector_hw', cache_dir=zoo)}}}\n"
    pbtxt = render(_selection(text, PARAMS), "triton")
    config = parse_config_pbtxt(pbtxt)
    assert [(i.name, list(i.dims)) for i in config.input] == [("images", [3, -1, -1])]
    assert "not fully sized" in pbtxt


def test_without_the_model_file_the_declared_shapes_still_go_out(tmp_path: Path) -> None:
    text = (
        "workload:\n  backend: onnxruntime\n  model: gone.onnx\n  inputs:\n    x: {shape: [batch, 8], dtype: float32}\n"
    )
    sel = _selection(text, PARAMS, workload_path=str(tmp_path / "w.yaml"))
    pbtxt = render(sel, "triton")
    config = parse_config_pbtxt(pbtxt)
    assert [(i.name, list(i.dims)) for i in config.input] == [("x", [8])] and not config.output
    assert "'gone.onnx' not found" in pbtxt
    assert json.loads(render(sel, "openvino"))["reshape"] == {"x": [4, 8]}
    # no dtype declared and no model: Triton would need a data_type, so the entries stay out
    bare = _selection(text.replace(", dtype: float32", ""), PARAMS)
    assert not parse_config_pbtxt(render(bare, "triton")).input


def test_tuner_export_makes_declared_data_paths_absolute(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "x.npy", np.zeros((3, 8), dtype=np.float32))
    text = (
        "name: w\nworkload:\n  backend: sim\n  inputs:\n"
        "    x: {shape: [batch, 8], data: {file: data/x.npy}}\n"
        "    y: {shape: [batch, 2], data: {file: missing.npy}}\n"
    )
    sel = _selection(text, PARAMS, workload_path=str(tmp_path / "w.yaml"))
    out = tmp_path / "elsewhere" / "deploy.yaml"
    out.parent.mkdir()
    rendered = render(sel, "tuner")
    out.write_text(rendered)
    spec = load_spec(out)
    assert spec.workload.inputs["x"].data.path == str((tmp_path / "data" / "x.npy").resolve())
    assert "workload.inputs.y.data.file 'missing.npy' is relative to the original workload file's folder" in rendered
