"""The pipeline's infer stage ``inputs:`` (issue 13): declared shapes size the crops, other inputs ride along.

* the declaration is validated with the stage (one-line errors with the stage's line);
* the image input's declared height and width are the preprocess stage's default crop (square or not), so
  a searched ``image_size`` really changes what the pipeline feeds;
* every other model input (a scalar) is fed from its declaration alongside the batch of images;
* a study over ``image_size: [32, 64]`` measures both sizes, each trial recording the shape it fed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import optuna
import pytest
from _wait import wait_until
from onnx import TensorProto, helper

from tuner.backends.onnxruntime import OnnxRuntimeBackend
from tuner.config.inputs import InputDecl, plan_inputs
from tuner.config.spec import load_spec
from tuner.errors import SpecError
from tuner.models.zoo import zoo_path
from tuner.workloads.pipeline.engine import Pipeline
from tuner.workloads.pipeline.images import list_images, synthetic_images
from tuner.workloads.pipeline.stage_work import preprocess_image
from tuner.workloads.pipeline.stages import validate_stages

STAGES: list[dict[str, Any]] = [
    {"type": "read"},
    {"type": "decode"},
    {"type": "preprocess"},
    {"type": "batch"},
    {"type": "infer"},
    {"type": "postprocess", "top_k": 2},
]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six small synthetic JPEGs (96x64)."""
    return synthetic_images(count=6, width=96, height=64, quality=80, seed=0, cache_dir=tmp_path_factory.mktemp("img"))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo-cache")


@pytest.fixture(scope="module")
def gain_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``images`` float32 [batch, 3, height, width], rank-0 ``gain`` -> ``scores`` = mean(images * gain) [batch, 3]."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["images", "gain"], ["scaled"]),
            helper.make_node("ReduceMean", ["scaled"], ["scores"], axes=[2, 3], keepdims=0),
        ],
        "gain",
        [
            helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"]),
            helper.make_tensor_value_info("gain", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("gain") / "gain.onnx"
    onnx.save(model, str(path))
    return path


def run(p: Pipeline, completions: int) -> None:
    """Load, run until the sink has seen ``completions`` items (however long that takes), stop, check counts."""
    p.load()
    p.start()
    try:
        wait_until(lambda: len(p.completions) >= completions or p.failed() is not None, f"{completions} completions")
    finally:
        p.stop()
        p.close()
    p.check_counts()


def plan(inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    return plan_inputs({k: InputDecl.model_validate(v) for k, v in inputs.items()}, params, Path.cwd())


# ------------------------------------------------------------------------------------- validation

PIPE = """\
workload:
  kind: pipeline
  backend: onnxruntime
  model: {model}
  stages:
    - type: read
    - type: decode
    - type: preprocess
    - type: batch
    - type: infer
      inputs:
        images: {{shape: [batch, 3, image_size, image_size]}}
    - type: postprocess
search:
  image_size: [32, 64]
"""


def spec_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "w.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}:"), message
    return message.removeprefix(f"{path}:")


def test_an_infer_stage_takes_inputs(tmp_path: Path, zoo: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(PIPE.format(model=zoo_path("detector_hw", cache_dir=zoo)))
    spec = load_spec(path)
    assert spec.axes["image_size"].values == (32, 64)
    # the stage's options do not carry the declaration: the trial's plan does
    (infer,) = [s for s in validate_stages(spec.workload.stages) if s.type == "infer"]
    assert infer.options == {}


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            "{shape: [batch, 0, 32, 32]}",
            "12: workload.stages[4].inputs.images.shape = ['batch', 0, 32, 32]: dimension 1 = 0: "
            "expected a positive integer",
        ),
        (
            "{shape: [batch, 3, 32, 32], shap: 1}",
            "12: workload.stages[4].inputs.images.shap: unknown key of an input (did you mean 'shape'?)",
        ),
        ("{data: {int: {low: 3, high: 1}}}", "12: workload.stages[4].inputs.images.data = "),
        ("{dtype: float8}", "12: workload.stages[4].inputs.images.dtype = 'float8': expected one of"),
    ],
)
def test_stage_input_mistakes_are_one_line_errors_at_the_stage(
    tmp_path: Path, zoo: Path, edit: str, expected: str
) -> None:
    # fixed dimensions: a declaration that does not validate names no dimension axis the search could declare
    text = PIPE.format(model=zoo_path("detector_hw", cache_dir=zoo)).split("search:")[0]
    old = "{shape: [batch, 3, image_size, image_size]}"
    message = spec_error(tmp_path, text.replace(old, edit, 1))
    assert message.startswith(expected), message


def test_stage_inputs_that_are_no_mapping_fail_at_the_stage(tmp_path: Path, zoo: Path) -> None:
    text = PIPE.format(model=zoo_path("detector_hw", cache_dir=zoo)).split("search:")[0]
    declared = "      inputs:\n        images: {shape: [batch, 3, image_size, image_size]}\n"
    text = text.replace(declared, "      inputs: [1]\n")
    message = spec_error(tmp_path, text)
    assert message.startswith("11: workload.stages[4].inputs = [1]: "), message


# ------------------------------------------------------------------------------------- preprocess


def test_preprocess_makes_non_square_crops() -> None:
    img = np.full((64, 96, 3), 128, dtype=np.uint8)
    out = preprocess_image(img, resize=56, size=(32, 48))
    assert out.shape == (3, 32, 48) and out.dtype == np.float32
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    assert np.allclose(out, ((128 / 255 - mean) / std)[:, None, None], atol=1e-5)
    assert preprocess_image(img, resize=56, size=(32, 48), layout="nhwc").shape == (32, 48, 3)
    with pytest.raises(ValueError, match="smaller than the crop"):
        preprocess_image(img, resize=40, size=(32, 96))


# ----------------------------------------------------------------------------------- the pipeline


@pytest.mark.parametrize(("height", "width"), [(48, 48), (32, 48)])
def test_the_declared_height_and_width_are_the_crop_and_other_inputs_ride_along(
    image_dir: Path, gain_model: Path, height: int, width: int
) -> None:
    params = {"batch_size": 2, "image_size": height}
    inputs = plan(
        {
            "images": {"shape": ["batch", 3, "image_size", width]},
            "gain": {"shape": [], "data": {"value": 2.0}},
        },
        params,
    )
    p = Pipeline(
        validate_stages(STAGES),
        images=list_images(image_dir),
        params=params,
        backend=OnnxRuntimeBackend(gain_model, {}),
        inputs=inputs,
    )
    run(p, 8)
    shown = {"size": height} if height == width else {"height": height, "width": width}
    assert p.applied["preprocess_input"] == {"layout": "nchw", **shown}
    assert p.applied["pipeline_input"] == {"name": "images", "shape": [2, 3, height, width], "dtype": "float32"}
    assert p.applied["input_shapes"] == {"images": [2, 3, height, width], "gain": []}
    # the scalar is fed as declared next to every batch of images
    feeder = p._feeds[0]
    fed = feeder(np.zeros((2, 3, height, width), dtype=np.float32))
    assert set(fed) == {"images", "gain"} and float(fed["gain"]) == 2.0 and fed["images"].shape == (2, 3, height, width)


def test_openvino_inputs_keyed_by_port_get_the_images_too(image_dir: Path, zoo: Path) -> None:
    pytest.importorskip("openvino")
    from tuner.backends.openvino import OpenVinoBackend

    params = {"batch_size": 2, "image_size": 40}
    inputs = plan({"images": {"shape": ["batch", 3, "image_size", 56]}}, params)
    p = Pipeline(
        validate_stages(STAGES),
        images=list_images(image_dir),
        params=params,
        backend=OpenVinoBackend(zoo_path("detector_hw", cache_dir=zoo), {}),
        inputs=inputs,
    )
    run(p, 8)
    assert p.applied["preprocess_input"] == {"layout": "nchw", "height": 40, "width": 56}
    assert p.applied["pipeline_input"] == {"name": "images", "shape": [2, 3, 40, 56], "dtype": "float32"}
    assert p.applied["input_shapes"] == {"images": [2, 3, 40, 56]}


def test_an_explicit_preprocess_size_that_contradicts_the_declaration_fails(image_dir: Path, gain_model: Path) -> None:
    stages = [dict(s) for s in STAGES]
    stages[2] = {"type": "preprocess", "size": 40}
    params = {"batch_size": 1, "image_size": 32}
    inputs = plan({"images": {"shape": ["batch", 3, "image_size", "image_size"]}}, params)
    p = Pipeline(
        validate_stages(stages),
        images=list_images(image_dir),
        params=params,
        backend=OnnxRuntimeBackend(gain_model, {}),
        inputs=inputs,
    )
    p.load()
    p.start()
    try:
        wait_until(lambda: p.failed() is not None, "the infer stage refusing 40x40 batches")
    finally:
        p.abort()
        p.close()
    assert "(1, 3, 40, 40) but the model input is (1, 3, 32, 32)" in str(p.failed())


def test_a_study_over_image_size_measures_each_size(tmp_path: Path, zoo: Path) -> None:
    from tuner.study.run import optimize

    text = PIPE.format(model=zoo_path("detector_hw", cache_dir=zoo)).replace(
        "  stages:\n", "  synthetic: {count: 4, width: 96, height: 64, quality: 85}\n  stages:\n"
    )
    text += (
        "measure: {warmup_s: 0.2, window_s: 0.2, stable_windows: 2, stability: 0.5, max_s: 3}\n"
        "study: {sampler: grid, trials: 2, trial_timeout_s: 90, confirm: {rounds: 0}, drift: {every: 0}}\n"
    )
    path = tmp_path / "w.yaml"
    path.write_text(text)
    db = tmp_path / "w.db"
    result = optimize(load_spec(path), storage=str(db))
    assert result.measured == 2, result.stop_reason
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{db}")
    trials = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{db}").trials
    seen = {}
    for trial in trials:
        size = int(trial.user_attrs["config"]["image_size"])
        applied = trial.user_attrs["applied"]
        assert applied["preprocess_input"] == {"layout": "nchw", "size": size}
        assert applied["pipeline_input"]["shape"] == [1, 3, size, size]
        assert applied["input_shapes"] == {"images": [1, 3, size, size]}
        assert trial.user_attrs["qps"] > 0
        seen[size] = trial.number
    assert sorted(seen) == [32, 64]
