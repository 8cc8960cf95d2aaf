"""Model zoo: graphs build, pass the checker and run in real onnxruntime sessions; cache and references."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from tuner.errors import ModelError, TunerError
from tuner.models.graphs import TEXT_SEQ_VOCAB, ZOO_NAMES, ZOO_VERSION, build_model
from tuner.models.macs import count_macs
from tuner.models.zoo import check_model_file, default_cache_dir, resolve_model, zoo_path

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_MACS = 16 * 16 * 8 * 3 * 9 + 8 * 8 * 16 * 8 * 9 + 16 * 10  # conv1 + conv2 + fc, per image


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, batch: int) -> np.ndarray:
    (inp,) = session.get_inputs()
    assert inp.name == "input"
    assert inp.shape[0] == "batch"
    x = np.random.default_rng(1).standard_normal((batch, *inp.shape[1:]), dtype=np.float32)
    (out,) = session.run(["logits"], {"input": x})
    return out


@pytest.fixture(scope="module")
def resnet50_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zoo_path("resnet50", tmp_path_factory.mktemp("zoo-resnet50"))


@pytest.fixture(scope="module")
def resnet50_model(resnet50_path: Path) -> onnx.ModelProto:
    return onnx.load(str(resnet50_path))


# --------------------------------------------------------------------------------------------------
# graphs


def test_zoo_constants() -> None:
    assert ZOO_VERSION == "1"
    assert ZOO_NAMES == (
        "resnet50",
        "mobilenet_v2",
        "tiny",
        "detector_hw",
        "text_seq",
        "speech_state",
        "two_inputs",
        "digits",
    )
    assert TEXT_SEQ_VOCAB == 1000


@pytest.mark.parametrize("name", ["tiny", "mobilenet_v2"])
def test_small_graphs_build_check_and_run(name: str, tmp_path: Path) -> None:
    model = build_model(name)
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 17
    assert model.ir_version <= 9
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    classes = 10 if name == "tiny" else 1000
    session = _session(zoo_path(name, tmp_path))
    for batch in (1, 3):
        out = _run(session, batch)
        assert out.shape == (batch, classes)
        assert np.isfinite(out).all()


def test_mobilenet_v2_uses_depthwise_convs_and_relu6() -> None:
    model = build_model("mobilenet_v2")
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    grouped = [n for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert len(grouped) == 17  # one depthwise 3x3 per inverted residual block
    assert any(n.op_type == "Clip" for n in model.graph.node)
    assert 3.3e6 < sum(int(np.prod(i.dims)) for i in model.graph.initializer) < 3.6e6


def test_mobilenet_v2_macs() -> None:
    macs = count_macs(build_model("mobilenet_v2"))
    assert 0.28e9 <= macs <= 0.32e9


def test_resnet50_checks_counts_and_runs(resnet50_path: Path, resnet50_model: onnx.ModelProto) -> None:
    model = resnet50_model
    onnx.checker.check_model(model)
    check_model_file(resnet50_path)
    params = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    assert 25.4e6 < params < 25.6e6  # torchvision's 25.56 M less the folded batch norms
    macs = count_macs(model)
    assert 4.0e9 <= macs <= 4.2e9
    assert 8.0e9 <= count_macs(model, batch=2) <= 8.4e9  # torchvision's 4.1 GMACs per image, twice
    out = _run(_session(resnet50_path), 2)
    assert out.shape == (2, 1000)
    assert np.isfinite(out).all()


def test_resnet50_is_v1_5(resnet50_model: onnx.ModelProto) -> None:
    # stride 2 sits on the 3x3 conv of each downsampling bottleneck, never on a 1x1 of the main path
    strided: dict[int, int] = {}
    for node in resnet50_model.graph.node:
        attrs = {a.name: list(a.ints) for a in node.attribute}
        if node.op_type == "Conv" and attrs["strides"] == [2, 2]:
            k = attrs["kernel_shape"][0]
            strided[k] = strided.get(k, 0) + 1
    assert strided == {7: 1, 3: 3, 1: 3}  # stem; 3x3 of stages 2-4; their projection shortcuts
    assert sum(n.op_type == "Conv" for n in resnet50_model.graph.node) == 53


def test_tiny_macs() -> None:
    model = build_model("tiny")
    assert count_macs(model) == TINY_MACS
    assert count_macs(model, batch=3) == 3 * TINY_MACS


@pytest.mark.slow
def test_tiny_is_fast_enough_for_the_tests(tmp_path: Path) -> None:
    """Coarse real-time check: the tests use ``zoo:tiny`` because one request takes well under a few ms."""
    session = _session(zoo_path("tiny", tmp_path))
    x = np.zeros((1, 3, 32, 32), dtype=np.float32)
    for _ in range(10):
        session.run(None, {"input": x})
    times = []
    for _ in range(50):
        start = time.perf_counter()
        session.run(None, {"input": x})
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 5e-3


def test_count_macs_matmul() -> None:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 5])],
        initializer=[onnx.numpy_helper.from_array(np.ones((8, 5), dtype=np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert count_macs(model) == 4 * 8 * 5
    assert count_macs(model, batch=6) == 6 * 4 * 8 * 5
    with pytest.raises(ModelError):
        count_macs(model, batch=0)


def test_build_unknown_name() -> None:
    with pytest.raises(
        ModelError,
        match="valid names: resnet50, mobilenet_v2, tiny, detector_hw, text_seq, speech_state, two_inputs, digits$",
    ):
        build_model("vgg16")


# --------------------------------------------------------------------------------------------------
# cache


def test_cache_file_name_and_hit_does_not_rebuild(tmp_path: Path) -> None:
    path = zoo_path("tiny", tmp_path)
    assert path == tmp_path / "tiny-v1.onnx"
    old = 1_000_000_000
    os.utime(path, ns=(old, old))
    again = zoo_path("tiny", tmp_path)
    assert again == path
    assert again.stat().st_mtime_ns == old


def test_cache_creates_directory_and_leaves_no_temp_files(tmp_path: Path) -> None:
    cache = tmp_path / "a" / "b"
    path = zoo_path("mobilenet_v2", cache)
    assert sorted(p.name for p in cache.iterdir()) == ["mobilenet_v2-v1.onnx"]
    check_model_file(path)


def test_cache_dir_not_writable_is_model_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ModelError, match="cache directory"):
        zoo_path("tiny", blocker / "zoo")


def test_concurrent_builders_in_threads(tmp_path: Path) -> None:
    barrier = threading.Barrier(4)
    results: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            barrier.wait()
            results.append(zoo_path("mobilenet_v2", tmp_path))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [tmp_path / "mobilenet_v2-v1.onnx"] * 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mobilenet_v2-v1.onnx"]
    check_model_file(results[0])


def test_concurrent_builders_in_processes(tmp_path: Path) -> None:
    start_at = time.time() + 2.0  # both children build at (about) the same moment
    code = (
        "import sys, time; from pathlib import Path; from tuner.models.zoo import zoo_path\n"
        f"time.sleep(max(0.0, {start_at!r} - time.time()))\n"
        "print(zoo_path('mobilenet_v2', Path(sys.argv[1])))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert Path(out.strip()) == tmp_path / "mobilenet_v2-v1.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mobilenet_v2-v1.onnx"]
    check_model_file(tmp_path / "mobilenet_v2-v1.onnx")
    assert _run(_session(tmp_path / "mobilenet_v2-v1.onnx"), 1).shape == (1, 1000)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("TUNER_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "tuner" / "zoo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "tuner" / "zoo"


# --------------------------------------------------------------------------------------------------
# references and files


def test_resolve_zoo_reference(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path / "cache"))
    path = resolve_model("zoo:tiny", tmp_path / "elsewhere")
    assert path == tmp_path / "cache" / "tiny-v1.onnx"
    assert path.is_file()


def test_resolve_relative_and_absolute_paths(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    target = models / "m.onnx"
    target.write_bytes(zoo_path("tiny", tmp_path / "cache").read_bytes())
    assert resolve_model("models/m.onnx", tmp_path) == target
    assert resolve_model(str(target), tmp_path / "unrelated") == target


def test_resolve_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="nope/missing.onnx") as info:
        resolve_model("nope/missing.onnx", tmp_path)
    assert isinstance(info.value, TunerError)
    with pytest.raises(ModelError, match="not a file"):
        resolve_model(".", tmp_path)


def test_resolve_unknown_zoo_name(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="zoo:resnet51") as info:
        resolve_model("zoo:resnet51", tmp_path)
    for name in ZOO_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not a protobuf at all \xff\xfe", b"\x00\x01"],
    ids=["empty", "garbage", "empty-proto"],
)
def test_corrupt_model_file(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    assert resolve_model("bad.onnx", tmp_path) == bad  # resolving does not load
    with pytest.raises(ModelError, match="is not a valid ONNX model"):
        check_model_file(bad)


def test_truncated_model_file(tmp_path: Path) -> None:
    good = zoo_path("mobilenet_v2", tmp_path / "cache")
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelError, match="truncated.onnx is not a valid ONNX model"):
        check_model_file(bad)
    with pytest.raises(ModelError, match="not found"):
        check_model_file(tmp_path / "absent.onnx")


# --------------------------------------------------------------------------------------------------
# small graphs with declared inputs and open dimensions

Dims = list[int | str]
FLOAT, INT64 = TensorProto.FLOAT, TensorProto.INT64
ORT_TYPES = {FLOAT: "tensor(float)", INT64: "tensor(int64)"}
SIGNATURES: dict[str, tuple[list[tuple[str, int, Dims]], list[tuple[str, int, Dims]]]] = {
    "detector_hw": (
        [("images", FLOAT, ["batch", 3, "height", "width"])],
        [("scores", FLOAT, ["batch", 10])],
    ),
    "text_seq": (
        [("input_ids", INT64, ["batch", "seq_len"]), ("attention_mask", INT64, ["batch", "seq_len"])],
        [("logits", FLOAT, ["batch", 2])],
    ),
    "speech_state": (
        [("audio", FLOAT, ["batch", "samples"]), ("sr", INT64, []), ("state", FLOAT, [2, "batch", 64])],
        [("prob", FLOAT, ["batch", 1]), ("new_state", FLOAT, [2, "batch", 64])],
    ),
    "two_inputs": (
        [("image", FLOAT, ["batch", 3, 32, 32]), ("features", FLOAT, ["batch", 10])],
        [("logits", FLOAT, ["batch", 5])],
    ),
}


def _declared(value: onnx.ValueInfoProto) -> tuple[str, int, Dims]:
    tensor_type = value.type.tensor_type
    assert tensor_type.HasField("shape")  # a rank-0 input declares an empty shape, not an unknown rank
    dims: Dims = []
    for d in tensor_type.shape.dim:
        assert d.HasField("dim_param") != d.HasField("dim_value")
        dims.append(d.dim_param if d.HasField("dim_param") else d.dim_value)
    return value.name, tensor_type.elem_type, dims


def _open_session(name: str, tmp_path: Path, quiet: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    if quiet:  # the run errors that a test expects would be logged to stderr too
        options.log_severity_level = 4
    return ort.InferenceSession(str(zoo_path(name, tmp_path)), options, providers=["CPUExecutionProvider"])


def _rng() -> np.random.Generator:
    return np.random.default_rng(2)


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_open_dim_graph_signature(name: str, tmp_path: Path) -> None:
    inputs, outputs = SIGNATURES[name]
    model = build_model(name)
    assert model.opset_import[0].version == 17
    assert model.ir_version == 8
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)

    path = zoo_path(name, tmp_path)
    assert path == tmp_path / f"{name}-v{ZOO_VERSION}.onnx"
    check_model_file(path)
    loaded = onnx.load(str(path))
    assert [_declared(v) for v in loaded.graph.input] == inputs
    assert [_declared(v) for v in loaded.graph.output] == outputs

    session = _open_session(name, tmp_path)
    assert [(i.name, i.type, i.shape) for i in session.get_inputs()] == [(n, ORT_TYPES[t], d) for n, t, d in inputs]
    assert [(o.name, o.type, o.shape) for o in session.get_outputs()] == [(n, ORT_TYPES[t], d) for n, t, d in outputs]


def test_detector_hw_runs_at_any_height_and_width(tmp_path: Path) -> None:
    session = _open_session("detector_hw", tmp_path)
    for batch, height, width in ((2, 64, 64), (1, 96, 128), (3, 32, 45)):
        images = _rng().standard_normal((batch, 3, height, width), dtype=np.float32)
        (scores,) = session.run(["scores"], {"images": images})
        assert scores.shape == (batch, 10)
        assert scores.dtype == np.float32
        assert np.isfinite(scores).all()


def _text_feed(batch: int, seq_len: int) -> dict[str, np.ndarray]:
    ids = _rng().integers(0, TEXT_SEQ_VOCAB, size=(batch, seq_len), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones((batch, seq_len), dtype=np.int64)}


def test_text_seq_runs_at_any_sequence_length(tmp_path: Path) -> None:
    session = _open_session("text_seq", tmp_path)
    for batch, seq_len in ((2, 8), (3, 16), (1, 1)):
        (logits,) = session.run(["logits"], _text_feed(batch, seq_len))
        assert logits.shape == (batch, 2)
        assert np.isfinite(logits).all()
    # the mask is used: masking the second half changes the logits; the whole vocabulary is valid
    feed = _text_feed(2, 8)
    feed["input_ids"][0, :2] = [0, TEXT_SEQ_VOCAB - 1]
    (full,) = session.run(["logits"], feed)
    feed["attention_mask"][:, 4:] = 0
    (masked,) = session.run(["logits"], feed)
    assert not np.allclose(full, masked)


@pytest.mark.parametrize("bad_id", [TEXT_SEQ_VOCAB, TEXT_SEQ_VOCAB + 5, -1, -TEXT_SEQ_VOCAB - 1])
def test_text_seq_rejects_out_of_vocabulary_ids_at_run(bad_id: int, tmp_path: Path) -> None:
    """The model itself rejects a value: an id outside [0, vocab) fails in ONNX Runtime, at run time."""
    session = _open_session("text_seq", tmp_path, quiet=True)
    feed = _text_feed(2, 8)
    feed["input_ids"][1, 3] = bad_id
    with pytest.raises(InvalidArgument, match="out of data bounds"):
        session.run(["logits"], feed)
    assert session.run(["logits"], _text_feed(2, 8))[0].shape == (2, 2)  # the session still works


def _speech_feed(batch: int, samples: int, sr: int = 16000) -> dict[str, np.ndarray]:
    return {
        "audio": _rng().standard_normal((batch, samples), dtype=np.float32),
        "sr": np.array(sr, dtype=np.int64),
        "state": np.zeros((2, batch, 64), dtype=np.float32),
    }


def test_speech_state_runs_at_any_batch_and_length(tmp_path: Path) -> None:
    session = _open_session("speech_state", tmp_path)
    for batch, samples in ((1, 512), (3, 1600), (2, 1)):
        feed = _speech_feed(batch, samples)
        prob, new_state = session.run(["prob", "new_state"], feed)
        assert prob.shape == (batch, 1)
        assert new_state.shape == (2, batch, 64)
        assert ((prob > 0) & (prob < 1)).all()
        assert (np.abs(new_state) < 1).all()
        # the state feeds back: a second step with the new state gives a different state
        (again,) = session.run(["new_state"], {**feed, "state": new_state})
        assert not np.allclose(again, new_state)
    # the sample rate is used
    (at_16k,) = session.run(["new_state"], _speech_feed(2, 512, 16000))
    (at_8k,) = session.run(["new_state"], _speech_feed(2, 512, 8000))
    assert not np.allclose(at_16k, at_8k)


def test_two_inputs_runs_with_both_inputs(tmp_path: Path) -> None:
    session = _open_session("two_inputs", tmp_path)
    for batch in (1, 4):
        image = _rng().standard_normal((batch, 3, 32, 32), dtype=np.float32)
        features = _rng().standard_normal((batch, 10), dtype=np.float32)
        (logits,) = session.run(["logits"], {"image": image, "features": features})
        assert logits.shape == (batch, 5)
        assert np.isfinite(logits).all()
        (other,) = session.run(["logits"], {"image": image, "features": features + 1})
        assert not np.allclose(logits, other)
