"""Declared inputs on real runtimes (issue 13): every data source, every error, searchable dimensions.

The models are the zoo's user-model graphs (``detector_hw``: open height/width; ``text_seq``: int64 ids and
mask over an open sequence; ``speech_state``: audio, a scalar sample rate and a state whose batch is
dimension 1; ``two_inputs``: two fixed inputs of different ranks), built into a private cache, plus a few
built here with the onnx helper. Arrays are checked against hand-built expectations (an image decoded here
with PIL), errors are checked where a user meets them: the parent's pre-flight (before any trial, the
message starting with the workload file), the backend's ``open`` (at load), the first request (a value the
model rejects), and the real ``tuner run`` / ``tuner optimize`` commands. Measured runs go through
:func:`tuner.execution.runner.measure_config`, i.e. a real trial child.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper
from PIL import Image

from tuner.backends.base import RuntimeConfig
from tuner.backends.onnxruntime import OnnxRuntimeBackend
from tuner.config.inputs import declared_inputs, plan_inputs
from tuner.config.spec import Spec, load_spec
from tuner.errors import InputError, ModelError
from tuner.execution.runner import build_job, measure_config, resolve_model_path
from tuner.models.feeds import Feed, check_feeds, make_array, resolve_feeds
from tuner.models.graphs import TEXT_SEQ_VOCAB
from tuner.models.signature import read_signature
from tuner.models.zoo import check_model_file, zoo_path
from tuner.workloads.pool import PoolWorkload

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(
    not HAS_OPENVINO, reason="openvino is not installed (pip install 'tuner[openvino]')"
)

#: fast steady-state settings: these tests check what runs, not how fast
MEASURE = {"warmup_s": 0.2, "window_s": 0.3, "stable_windows": 2, "stability": 0.5, "max_s": 5}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``zoo(name)``: the zoo graph's file, built once into this module's private cache."""
    cache = tmp_path_factory.mktemp("zoo-inputs")
    return lambda name: zoo_path(name, cache_dir=cache)


def write_workload(
    folder: Path,
    model: Path | str,
    *,
    inputs: dict[str, Any] | None = None,
    search: dict[str, Any] | None = None,
    backend: str = "onnxruntime",
    extra: dict[str, Any] | None = None,
) -> Path:
    workload: dict[str, Any] = {"backend": backend, "model": str(model)}
    if inputs is not None:
        workload["inputs"] = inputs
    doc: dict[str, Any] = {"name": "inputs", "workload": workload, "measure": MEASURE}
    if search:
        doc["search"] = search
    doc.update(extra or {})
    path = folder / "w.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def spec_of(folder: Path, model: Path | str, **kwargs: Any) -> Spec:
    return load_spec(write_workload(folder, model, **kwargs))


def feeds_of(spec: Spec, model: Path, **params: Any) -> tuple[Feed, ...]:
    """What a trial of ``params`` would feed: the plan of the file checked against the model file."""
    resolved = spec.resolve_params(params)
    plan = plan_inputs(declared_inputs(spec.workload), resolved, spec.base_dir)
    return check_feeds(read_signature(model), plan, int(resolved.get("batch_size", 1)))


def plan_of(spec: Spec, **params: Any) -> dict[str, Any]:
    return plan_inputs(declared_inputs(spec.workload), spec.resolve_params(params), spec.base_dir)


def arrays_of(spec: Spec, model: Path, seed: int = 0, **params: Any) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {feed.name: make_array(feed, rng) for feed in feeds_of(spec, model, **params)}


def preflight_error(spec: Spec) -> str:
    """The one-line error of the parent's pre-flight (before any study or trial)."""
    with pytest.raises(InputError) as info:
        resolve_model_path(spec)
    message = str(info.value)
    assert message.startswith(f"{spec.path}: "), message
    assert "\n" not in message
    return message


def measure(spec: Spec, **params: Any) -> Any:
    result = measure_config(spec, spec.resolve_params(params), timeout_s=120)
    assert result.ok, result.failure and result.failure.describe()
    return result


def tuner(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tuner", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env={**os.environ},
    )


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return lines[0][len("error: ") :]


def save_model(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def nhwc_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pixels`` float32 [batch, 24, 24, 3] (channels last) -> Relu: a model for ``layout: NHWC``."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["pixels"], ["out"])],
        "nhwc",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 24, 24, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 24, 24, 3])],
    )
    return save_model(graph, tmp_path_factory.mktemp("nhwc") / "nhwc.onnx")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small images of different sizes and formats (PNG RGB, JPEG RGB, PNG greyscale), and a stray file."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (50, 20, 3), dtype=np.uint8)).save(folder / "b.jpg", quality=90)
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / "c.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def decode(path: Path, height: int, width: int) -> np.ndarray:
    """One image as HWC float32 in 0..1, resized the way ``images:`` says: RGB, bilinear."""
    with Image.open(path) as img:
        rgb = img.convert("RGB").resize((width, height), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.float32) / 255.0


# ------------------------------------------------------------------------------------------ data sources


def test_undeclared_float_inputs_get_normal_data(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    model = zoo("two_inputs")
    spec = spec_of(tmp_path, model)
    arrays = arrays_of(spec, model, seed=3, batch_size=2)
    expected = np.random.default_rng(3)
    assert arrays["image"].dtype == np.float32 and arrays["image"].shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(arrays["image"], expected.standard_normal((2, 3, 32, 32)).astype(np.float32))
    np.testing.assert_array_equal(arrays["features"], expected.standard_normal((2, 10)).astype(np.float32))


def test_declared_integer_inputs_default_to_int_0_1_and_take_a_range(
    zoo: Callable[[str], Path], tmp_path: Path
) -> None:
    model = zoo("text_seq")
    inputs = {
        "input_ids": {"shape": ["batch", "seq_len"], "data": {"int": {"low": 5, "high": 7}}},
        "attention_mask": {"shape": ["batch", "seq_len"]},
    }
    spec = spec_of(tmp_path, model, inputs=inputs, search={"seq_len": [64]})
    arrays = arrays_of(spec, model, batch_size=4)
    ids, mask = arrays["input_ids"], arrays["attention_mask"]
    assert ids.dtype == mask.dtype == np.int64
    assert ids.shape == mask.shape == (4, 64)
    assert set(np.unique(ids)) == {5, 6, 7}  # inclusive on both ends
    assert set(np.unique(mask)) == {0, 1}  # never random garbage ids


def test_zeros_value_and_uniform(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    model = zoo("speech_state")
    inputs = {
        "audio": {"shape": ["batch", "samples"], "data": {"uniform": {"low": -0.5, "high": 0.25}}},
        "sr": {"shape": [], "data": {"value": 16000}},
        "state": {"shape": [2, "batch", 64], "data": "zeros"},
    }
    spec = spec_of(tmp_path, model, inputs=inputs, search={"samples": [512]})
    arrays = arrays_of(spec, model, batch_size=3)
    audio, sr, state = arrays["audio"], arrays["sr"], arrays["state"]
    assert audio.shape == (3, 512) and audio.dtype == np.float32
    assert audio.min() >= -0.5 and audio.max() <= 0.25 and audio.std() > 0.1
    assert sr.shape == () and sr.dtype == np.int64 and int(sr) == 16000
    assert state.shape == (2, 3, 64) and state.dtype == np.float32 and not state.any()


def test_file_npy_is_sliced_or_tiled_to_the_batch(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    model = zoo("two_inputs")
    rows = np.arange(30, dtype=np.float64).reshape(3, 10)  # float64 on disk: cast to the input's float32
    np.save(tmp_path / "features.npy", rows)
    spec = spec_of(tmp_path, model, inputs={"features": {"data": {"file": "features.npy"}}})  # relative path
    tiled = arrays_of(spec, model, batch_size=5)["features"]
    assert tiled.dtype == np.float32 and tiled.shape == (5, 10)
    np.testing.assert_array_equal(tiled, rows[[0, 1, 2, 0, 1]].astype(np.float32))
    sliced = arrays_of(spec, model, batch_size=2)["features"]
    np.testing.assert_array_equal(sliced, rows[:2].astype(np.float32))


def test_file_is_tiled_along_a_batch_that_is_not_first(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    model = zoo("speech_state")
    state = np.stack([np.full((2, 64), i, dtype=np.float32) for i in range(2)], axis=1)  # [2, 2 samples, 64]
    np.save(tmp_path / "state.npy", state)
    inputs = {
        "audio": {"shape": ["batch", 256]},
        "sr": {"shape": [], "data": {"value": 8000}},
        "state": {"shape": [2, "batch", 64], "data": {"file": str(tmp_path / "state.npy")}},
    }
    spec = spec_of(tmp_path, model, inputs=inputs)
    got = arrays_of(spec, model, batch_size=3)["state"]
    assert got.shape == (2, 3, 64)
    np.testing.assert_array_equal(got[:, :, 0], [[0, 1, 0], [0, 1, 0]])


def test_file_npz_picks_the_array_named_like_the_input_or_its_only_one(
    zoo: Callable[[str], Path], tmp_path: Path
) -> None:
    model = zoo("two_inputs")
    features = np.ones((4, 10), dtype=np.float32)
    np.savez(tmp_path / "named.npz", image=np.zeros((1, 3, 32, 32), np.float32), features=features)
    np.savez(tmp_path / "single.npz", whatever=2 * features)
    named = spec_of(tmp_path, model, inputs={"features": {"data": {"file": "named.npz"}}})
    np.testing.assert_array_equal(arrays_of(named, model, batch_size=2)["features"], features[:2])
    single = spec_of(tmp_path, model, inputs={"features": {"data": {"file": "single.npz"}}})
    np.testing.assert_array_equal(arrays_of(single, model, batch_size=2)["features"], 2 * features[:2])


def test_images_nchw_with_mean_and_std(zoo: Callable[[str], Path], image_dir: Path, tmp_path: Path) -> None:
    model = zoo("detector_hw")
    data = {"images": str(image_dir), "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    inputs = {"images": {"shape": ["batch", 3, "image_size", "image_size"], "data": data}}
    spec = spec_of(tmp_path, model, inputs=inputs, search={"image_size": [48]})
    got = arrays_of(spec, model, batch_size=4)["images"]
    assert got.shape == (4, 3, 48, 48) and got.dtype == np.float32
    mean = np.asarray(IMAGENET_MEAN, np.float32)
    std = np.asarray(IMAGENET_STD, np.float32)
    files = sorted(p for p in image_dir.iterdir() if p.suffix != ".txt")  # a.png, b.jpg, c.png
    for i, path in enumerate(files):
        expected = ((decode(path, 48, 48) - mean) / std).transpose(2, 0, 1)
        np.testing.assert_allclose(got[i], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got[3], got[0])  # the folder is smaller than the batch: it cycles
    grey = got[2]
    for c in range(3):  # a greyscale file becomes three equal channels before normalising
        np.testing.assert_allclose(grey[c] * std[c] + mean[c], grey[0] * std[0] + mean[0], atol=1e-5)
        assert grey[c].min() >= (0 - mean[c]) / std[c] - 1e-5 and grey[c].max() <= (1 - mean[c]) / std[c] + 1e-5


def test_images_nhwc_scaled_to_0_1(nhwc_model: Path, image_dir: Path, tmp_path: Path) -> None:
    inputs = {"pixels": {"data": {"images": str(image_dir), "layout": "NHWC"}}}
    spec = spec_of(tmp_path, nhwc_model, inputs=inputs)
    got = arrays_of(spec, nhwc_model, batch_size=2)["pixels"]
    assert got.shape == (2, 24, 24, 3) and got.dtype == np.float32
    assert got.min() >= 0.0 and got.max() <= 1.0
    np.testing.assert_allclose(got[0], decode(image_dir / "a.png", 24, 24), atol=1e-6)
    np.testing.assert_allclose(got[1], decode(image_dir / "b.jpg", 24, 24), atol=1e-6)
    # and a real session takes them
    feeds = feeds_of(spec, nhwc_model, batch_size=2)
    inst = OnnxRuntimeBackend(nhwc_model, {}).open(RuntimeConfig(batch_size=2, inputs=plan_of(spec, batch_size=2)))
    try:
        assert inst.feeds == feeds
        (out,) = inst.infer(inst.prepare_inputs())
        np.testing.assert_allclose(out, got, atol=1e-6)
        assert inst.applied_options()["input_shapes"] == {"pixels": [2, 24, 24, 3]}
    finally:
        inst.close()


def test_the_job_carries_the_plan_as_json(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    model = zoo("detector_hw")
    inputs = {"images": {"shape": ["batch", 3, "image_size", "image_size"]}}
    spec = spec_of(tmp_path, model, inputs=inputs, search={"image_size": [32, 64], "batch_size": [1, 2]})
    job = build_job(spec, {**spec.default_params(), "image_size": 64, "batch_size": 2}, model)
    assert job["inputs"] == {"images": {"shape": [2, 3, 64, 64], "batch_axis": 0, "dtype": None, "data": None}}
    assert json.loads(json.dumps(job)) == job
    assert build_job(spec_of(tmp_path, zoo("tiny")), {}, zoo("tiny"))["inputs"] == {}


# ------------------------------------------------------------------------- errors before any trial (pre-flight)


def test_unknown_input_name(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    spec = spec_of(tmp_path, zoo("two_inputs"), inputs={"imag": {"shape": ["batch", 3, 32, 32]}})
    message = preflight_error(spec)
    assert "inputs.imag: the model has no input 'imag' (its inputs: image, features)" in message


def test_wrong_rank(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    spec = spec_of(tmp_path, zoo("two_inputs"), inputs={"image": {"shape": ["batch", 3, 32]}})
    message = preflight_error(spec)
    assert "inputs.image.shape [1, 3, 32]" in message and "rank 4" in message and "rank 3" in message


def test_fixed_dimension_mismatch(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    spec = spec_of(tmp_path, zoo("two_inputs"), inputs={"image": {"shape": ["batch", 3, 64, 64]}})
    assert "dimension 2 is 64, but the model fixes it at 32" in preflight_error(spec)


def test_dtype_mismatch(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    inputs = {"input_ids": {"shape": ["batch", 16], "dtype": "int32"}, "attention_mask": {"shape": ["batch", 16]}}
    spec = spec_of(tmp_path, zoo("text_seq"), inputs=inputs)
    assert "inputs.input_ids.dtype int32: the model's input 'input_ids' is int64" in preflight_error(spec)


def test_open_dimension_nobody_declared_gives_the_line_to_add(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    message = preflight_error(spec_of(tmp_path, zoo("detector_hw")))
    assert "input 'images' [batch, 3, height, width] has an open dimension 2 (height)" in message
    assert "add inputs: {images: {shape: [batch, 3, HEIGHT, WIDTH]}}" in message
    # a state tensor whose batch is dimension 1: the line puts batch there
    inputs = {"audio": {"shape": ["batch", 512]}, "sr": {"shape": [], "data": {"value": 16000}}}
    message = preflight_error(spec_of(tmp_path, zoo("speech_state"), inputs=inputs))
    assert "input 'state'" in message and "add inputs: {state: {shape: [2, batch, 64]}}" in message


def test_missing_data_file(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    spec = spec_of(tmp_path, zoo("two_inputs"), inputs={"features": {"data": {"file": "nowhere.npy"}}})
    message = preflight_error(spec)
    assert f"inputs.features.data.file: {tmp_path / 'nowhere.npy'} not found" in message


def test_npz_with_several_arrays_none_named_like_the_input(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", a=np.zeros((1, 10), np.float32), b=np.ones((1, 10), np.float32))
    spec = spec_of(tmp_path, zoo("two_inputs"), inputs={"features": {"data": {"file": "two.npz"}}})
    assert "holds a, b; name one array 'features'" in preflight_error(spec)


def test_file_with_the_wrong_sample_shape(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", np.zeros((4, 12), np.float32))
    spec = spec_of(tmp_path, zoo("two_inputs"), inputs={"features": {"data": {"file": "f.npy"}}})
    assert "holds shape [4, 12]; expected [1, 10]" in preflight_error(spec)


def test_a_data_kind_the_input_cannot_take(zoo: Callable[[str], Path], image_dir: Path, tmp_path: Path) -> None:
    ids = {"shape": ["batch", 8], "data": {"uniform": {"low": 0, "high": 1}}}
    spec = spec_of(tmp_path, zoo("text_seq"), inputs={"input_ids": ids, "attention_mask": {"shape": ["batch", 8]}})
    assert "uniform makes floats" in preflight_error(spec)
    spec = spec_of(tmp_path, zoo("two_inputs"), inputs={"features": {"data": {"images": str(image_dir)}}})
    assert "images feed a float input of shape [batch, C, H, W]" in preflight_error(spec)


def test_a_good_declaration_passes_the_preflight(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    model = zoo("detector_hw")
    spec = spec_of(tmp_path, model, inputs={"images": {"shape": ["batch", 3, 64, 64]}})
    assert resolve_model_path(spec) == model


def test_cli_run_refuses_a_bad_declaration_before_any_trial(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    path = write_workload(tmp_path, zoo("detector_hw"))
    proc = tuner("run", path, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    message = error_line(proc)
    assert message.startswith(f"{path}: input 'images'"), message
    assert "inputs: {images: {shape: [batch, 3, HEIGHT, WIDTH]}}" in message
    assert "trial" not in message  # refused in the parent, not a failed trial


def test_cli_optimize_refuses_a_bad_declaration_before_any_study(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    path = write_workload(
        tmp_path,
        zoo("two_inputs"),
        inputs={"image": {"shape": ["batch", 3, 32]}},
        extra={"study": {"storage": "studies/inputs.db", "trials": 2}},
    )
    proc = tuner("optimize", path, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    message = error_line(proc)
    assert message.startswith(f"{path}: inputs.image.shape"), message
    assert not (tmp_path / "studies" / "inputs.db").exists()


# ------------------------------------------------------------------------------- errors at load (the runtime)


def test_backend_open_checks_the_plan_against_the_session(zoo: Callable[[str], Path]) -> None:
    backend = OnnxRuntimeBackend(zoo("detector_hw"), {})
    with pytest.raises(InputError, match=r"add inputs: \{images: \{shape: \[batch, 3, HEIGHT, WIDTH\]\}\}"):
        backend.open(RuntimeConfig())
    plan = {"images": {"shape": [1, 3, 40], "batch_axis": 0, "dtype": None, "data": None}}
    with pytest.raises(InputError, match="rank 4"):
        backend.open(RuntimeConfig(inputs=plan))


def test_a_value_the_model_rejects_fails_at_load_naming_the_input(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    model = zoo("text_seq")
    beyond = {"int": {"low": 0, "high": TEXT_SEQ_VOCAB * 5}}
    inputs = {
        "input_ids": {"shape": ["batch", 32], "data": beyond},
        "attention_mask": {"shape": ["batch", 32], "data": {"value": 1}},
    }
    spec = spec_of(tmp_path, model, inputs=inputs)
    # in process: the pool's first request, before any measurement
    pool = PoolWorkload(
        OnnxRuntimeBackend(model, {}),
        pool_size=1,
        threads=1,
        requests_per_sync=1,
        batch_size=2,
        inputs=plan_of(spec, batch_size=2),
    )
    try:
        pool.load()
        with pytest.raises(InputError) as info:
            pool.first_request()
    finally:
        pool.close()
    message = str(info.value)
    assert message.startswith("the first request failed: ") and "\n" not in message
    assert "check what the workload feeds: input_ids int64 [2, 32]: int 0..5000" in message
    assert "attention_mask int64 [2, 32]: value 1" in message
    # in a real trial child: a failed trial that says the same, never a measurement
    result = measure_config(spec, spec.default_params(), timeout_s=120)
    assert not result.ok
    assert result.failure is not None
    assert "first request failed" in result.failure.message and "input_ids" in result.failure.message
    assert "qps" not in result.metrics


# ------------------------------------------------------------------------------ what runs (real trial children)


def test_a_searched_dimension_changes_what_runs(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    model = zoo("detector_hw")
    inputs = {"images": {"shape": ["batch", 3, "image_size", "image_size"]}}
    spec = spec_of(tmp_path, model, inputs=inputs, search={"image_size": [32, 160]})
    small = measure(spec, image_size=32)
    large = measure(spec, image_size=160)
    assert small.params["image_size"] == 32 and large.params["image_size"] == 160
    assert small.applied["input_shapes"] == {"images": [1, 3, 32, 32]}
    assert large.applied["input_shapes"] == {"images": [1, 3, 160, 160]}
    # 25 times the pixels through the same convolutions: the larger image is the slower one
    assert small.metrics["qps"] != large.metrics["qps"]
    assert small.metrics["qps"] > large.metrics["qps"]


def test_speech_model_with_a_scalar_and_a_state_runs_with_the_batch(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    inputs = {
        "audio": {"shape": ["batch", "samples"]},
        "sr": {"shape": [], "data": {"value": 16000}},
        "state": {"shape": [2, "batch", 64], "data": "zeros"},
    }
    spec = spec_of(tmp_path, zoo("speech_state"), inputs=inputs, search={"samples": [512], "batch_size": [2]})
    result = measure(spec)
    assert result.applied["input_shapes"] == {"audio": [2, 512], "sr": [], "state": [2, 2, 64]}
    assert result.metrics["qps"] == pytest.approx(2 * result.metrics["rps"], rel=1e-9)


def test_text_model_through_a_zoo_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path_factory.mktemp("zoo-ref")))
    vocab = {"int": {"low": 0, "high": TEXT_SEQ_VOCAB - 1}}
    inputs = {
        "input_ids": {"shape": ["batch", "seq_len"], "data": vocab},
        "attention_mask": {"shape": ["batch", "seq_len"], "data": {"value": 1}},
    }
    spec = spec_of(tmp_path, "zoo:text_seq", inputs=inputs, search={"seq_len": [16, 128]})
    result = measure(spec, seq_len=128)
    assert result.applied["input_shapes"] == {"input_ids": [1, 128], "attention_mask": [1, 128]}


# ------------------------------------------------------------------------------------------- external data


def test_a_model_with_external_data_loads_from_its_folder(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "m.onnx"
    proto = onnx.load(str(zoo("detector_hw")))
    onnx.save_model(
        proto,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="m.onnx.data",
        size_threshold=0,
    )
    data = folder / "m.onnx.data"
    assert data.stat().st_size > path.stat().st_size  # the weights really are outside the .onnx
    check_model_file(path)
    (sig,) = read_signature(path)
    assert (sig.name, sig.dtype, sig.dims) == ("images", "float32", ("batch", 3, "height", "width"))
    # a trial started from another folder: the runtime finds m.onnx.data next to m.onnx
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    inputs = {"images": {"shape": ["batch", 3, 48, 48]}}
    spec = spec_of(elsewhere, path, inputs=inputs)
    assert resolve_model_path(spec) == path
    result = measure(spec)
    assert result.applied["input_shapes"] == {"images": [1, 3, 48, 48]}


# ---------------------------------------------------------------------------------------------- OpenVINO


@needs_openvino
def test_openvino_reshapes_to_the_declared_shapes(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    from tuner.backends.openvino import OpenVinoBackend

    model = zoo("detector_hw")
    inputs = {"images": {"shape": ["batch", 3, "image_size", "image_size"]}}
    spec = spec_of(tmp_path, model, inputs=inputs, search={"image_size": [40, 64]}, backend="openvino")
    backend = OpenVinoBackend(model, {})
    with pytest.raises(InputError, match="has an open dimension 2"):
        backend.open(RuntimeConfig())
    opened = []
    try:
        for size in (40, 64):
            config = RuntimeConfig(batch_size=2, inputs=plan_of(spec, image_size=size, batch_size=2))
            inst = backend.open(config)
            opened.append(inst)
            assert inst.applied_options()["input_shapes"] == {"images": [2, 3, size, size]}
            feed = inst.prepare_inputs()
            assert [a.shape for a in feed.values()] == [(2, 3, size, size)]
            result = inst.infer(feed)
            assert next(iter(result.values())).shape == (2, 10)
        assert opened[0]._compiled is not opened[1]._compiled  # one compiled model per set of shapes
    finally:
        for inst in opened:
            inst.close()


@needs_openvino
def test_openvino_feeds_a_scalar_and_a_state_with_batch_second(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    from tuner.backends.openvino import OpenVinoBackend

    model = zoo("speech_state")
    inputs = {
        "audio": {"shape": ["batch", 256]},
        "sr": {"shape": [], "data": {"value": 16000}},
        "state": {"shape": [2, "batch", 64], "data": "zeros"},
    }
    spec = spec_of(tmp_path, model, inputs=inputs, backend="openvino")
    inst = OpenVinoBackend(model, {}).open(RuntimeConfig(batch_size=3, inputs=plan_of(spec, batch_size=3)))
    try:
        assert inst.applied_options()["input_shapes"] == {"audio": [3, 256], "sr": [], "state": [2, 3, 64]}
        feed = inst.prepare_inputs()
        assert int(feed[1]) == 16000 and feed[1].dtype == np.int64
        inst.infer(feed)
    finally:
        inst.close()


@needs_openvino
def test_openvino_trial_and_ir_preflight(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    import openvino as ov

    xml = tmp_path / "detector.xml"
    ov.save_model(ov.Core().read_model(str(zoo("detector_hw"))), str(xml))
    # the pre-flight reads the IR's signature too (its open dimensions have no names there)
    message = preflight_error(spec_of(tmp_path, xml, backend="openvino"))
    assert "inputs: {images: {shape: [batch, 3, DIM2, DIM3]}}" in message
    spec = spec_of(tmp_path, xml, backend="openvino", inputs={"images": {"shape": ["batch", 3, 56, 56]}})
    result = measure(spec, batch_size=2)
    assert result.applied["input_shapes"] == {"images": [2, 3, 56, 56]}


def test_resolve_feeds_is_what_both_backends_feed(zoo: Callable[[str], Path]) -> None:
    """One definition of the arrays: an ORT instance's inputs are make_array's, seeded by its index."""
    model = zoo("two_inputs")
    inst = OnnxRuntimeBackend(model, {}).open(RuntimeConfig(batch_size=2, index=5))
    try:
        feeds = resolve_feeds(read_signature(model), {}, 2)
        rng = np.random.default_rng(5)
        expected = {f.name: make_array(f, rng) for f in feeds}
        got = inst.prepare_inputs()
        assert got.keys() == expected.keys()
        for name in got:
            np.testing.assert_array_equal(got[name], expected[name])
    finally:
        inst.close()


def test_an_unreadable_model_is_still_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage" * 50)
    with pytest.raises(ModelError):
        resolve_model_path(spec_of(tmp_path, bad))
