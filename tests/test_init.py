"""``tuner init`` (issue 13): a commented workload file drafted from a model file, and ``tuner run|optimize
MODEL``. Real model files (the zoo graphs copied into the test's folder), the real command (in-process through
Typer's runner, and as ``python -m tuner`` for the measured runs), the generated text read back by the config
layer as any workload file is."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import onnx
import pytest
import yaml
from _pg import FAST_MEASURE, one_line_error, run
from onnx import TensorProto, helper
from typer.testing import CliRunner

from tuner.cli import app
from tuner.config.spec import load_spec, parse_spec
from tuner.errors import SpecError
from tuner.models.zoo import zoo_path
from tuner.scaffold.draft import SEARCH_S, TRIAL_S, draft_workload, parse_shape_flags, spec_from_model

#: the flags each zoo graph needs, and the inputs the drafted file must declare
ZOO_CASES: dict[str, tuple[list[str], dict[str, dict[str, Any]]]] = {
    "tiny": ([], {"input": {"shape": ["batch", 3, 32, 32]}}),
    "detector_hw": (["--shape", "images=1,3,64,64"], {"images": {"shape": ["batch", 3, 64, 64]}}),
    "text_seq": (
        ["--shape", "input_ids=1,16"],  # attention_mask follows: the model names both dimensions seq_len
        {
            "input_ids": {"shape": ["batch", 16], "data": {"int": {"low": 0, "high": 1}}},
            "attention_mask": {"shape": ["batch", 16], "data": {"int": {"low": 0, "high": 1}}},
        },
    ),
    "speech_state": (
        ["--shape", "audio=1,1600", "--value", "sr=16000"],
        {
            "audio": {"shape": ["batch", 1600]},
            "sr": {"shape": [], "data": {"value": 16000}},
            "state": {"shape": [2, "batch", 64]},  # its batch is dimension 1, found by the name 'batch'
        },
    ),
    "two_inputs": ([], {"image": {"shape": ["batch", 3, 32, 32]}, "features": {"shape": ["batch", 10]}}),
}
#: what each case feeds with batch_size 1 (the run reports it as applied.input_shapes)
FED_AT_BATCH_1 = {
    "tiny": {"input": [1, 3, 32, 32]},
    "detector_hw": {"images": [1, 3, 64, 64]},
    "text_seq": {"input_ids": [1, 16], "attention_mask": [1, 16]},
    "speech_state": {"audio": [1, 1600], "sr": [], "state": [2, 1, 64]},
    "two_inputs": {"image": [1, 3, 32, 32], "features": [1, 10]},
}


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private zoo cache holding every graph these tests draft from."""
    folder = tmp_path_factory.mktemp("zoo-cache")
    for name in ZOO_CASES:
        zoo_path(name, cache_dir=folder)
    return folder


def model_file(zoo_dir: Path, name: str, folder: Path, file_name: str | None = None) -> Path:
    """Zoo graph ``name`` copied into ``folder`` (a user's model file, not a zoo reference)."""
    target = folder / (file_name or f"{name}.onnx")
    shutil.copyfile(zoo_path(name, cache_dir=zoo_dir), target)
    return target


def cli(*args: str | Path, cwd: Path | None = None) -> tuple[int, str, str]:
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)
    return result.exit_code, result.stdout, result.stderr


def declared(spec: Any) -> dict[str, dict[str, Any]]:
    return {name: decl.model_dump(mode="json", exclude_none=True) for name, decl in spec.workload.inputs.items()}


def expected_decl(raw: dict[str, Any]) -> dict[str, Any]:
    """A declaration as the file writes it, in the validated models' canonical form."""
    from tuner.config.inputs import InputDecl

    return InputDecl.model_validate(raw).model_dump(mode="json", exclude_none=True)


def _fixed_model(folder: Path, name: str, inputs: list[tuple[str, int, list[Any] | None]]) -> Path:
    """A tiny ONNX graph whose inputs are as given (``None`` dims: no shape at all), each summed to an output."""
    values: list[onnx.ValueInfoProto] = []
    nodes: list[onnx.NodeProto] = []
    outputs: list[onnx.ValueInfoProto] = []
    for i, (input_name, elem, dims) in enumerate(inputs):
        if dims is None:
            values.append(helper.make_tensor_value_info(input_name, elem, None))
        else:
            values.append(helper.make_tensor_value_info(input_name, elem, dims))
        nodes.append(helper.make_node("Identity", [input_name], [f"out{i}"]))
        outputs.append(helper.make_tensor_value_info(f"out{i}", elem, None))
    graph = helper.make_graph(nodes, name, values, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


# ------------------------------------------------------------------------------------------ the drafts


@pytest.mark.parametrize("name", list(ZOO_CASES))
def test_init_prints_a_workload_the_config_layer_takes_with_the_model_inputs(
    name: str, zoo_dir: Path, tmp_path: Path
) -> None:
    flags, inputs = ZOO_CASES[name]
    model = model_file(zoo_dir, name, tmp_path)
    code, out, err = cli("init", model, *flags, cwd=tmp_path)
    assert code == 0, err
    spec = parse_spec(out, path=tmp_path / f"{name}.yaml")
    assert spec.name == name
    assert spec.workload.model == f"{name}.onnx"  # relative to the file's folder (here: where it would be saved)
    assert declared(spec) == {k: expected_decl(v) for k, v in inputs.items()}
    assert spec.axes["batch_size"].values == (1, 2, 4, 8)  # every zoo graph leaves the batch open
    assert spec.study.sampler == "knee" and spec.study.timeout_s == 600
    assert spec.measure.warmup_s == 2 and spec.measure.window_s == 2 and spec.measure.max_s == 20
    assert "HEIGHT" not in out and "note: the file holds placeholder" not in err


def test_init_through_a_zoo_reference_names_the_zoo_model(zoo_dir: Path, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("TUNER_CACHE_DIR", str(zoo_dir))
    code, out, err = cli("init", "zoo:speech_state", "--shape", "audio=1,1600", "--value", "sr=16000", cwd=tmp_path)
    assert code == 0, err
    spec = parse_spec(out, path=tmp_path / "w.yaml")
    assert spec.workload.model == "zoo:speech_state" and spec.name == "speech_state"
    assert declared(spec)["state"]["shape"] == [2, "batch", 64]
    assert "#   tuner init zoo:speech_state --shape audio=1,1600 --value sr=16000" in out  # how to draft it again


def test_integer_inputs_get_an_id_range_and_a_note_asking_for_the_real_one(zoo_dir: Path, tmp_path: Path) -> None:
    model = model_file(zoo_dir, "text_seq", tmp_path)
    code, out, err = cli("init", model, "--shape", "input_ids=1,16", cwd=tmp_path)
    assert code == 0, err
    assert "# ids 0..1: for token ids set high to the vocabulary size - 1" in out
    assert "inputs.input_ids.data.int.high" in err and "vocabulary size - 1" in err
    # a scalar integer without --value: fed 0 or 1, and told how to give it its value
    model = model_file(zoo_dir, "speech_state", tmp_path)
    code, out, err = cli("init", model, "--shape", "audio=1,1600", cwd=tmp_path)
    assert code == 0, err
    assert (
        declared(parse_spec(out, path=tmp_path / "w.yaml"))["sr"]["data"]
        == expected_decl({"data": {"int": {"low": 0, "high": 1}}})["data"]
    )
    assert "--value sr=X" in err


# ------------------------------------------------------------------------------------------ placeholders


def test_an_open_dimension_no_flag_settles_is_a_placeholder_and_a_note_naming_the_flag(
    zoo_dir: Path, tmp_path: Path
) -> None:
    model = model_file(zoo_dir, "detector_hw", tmp_path)
    code, out, err = cli("init", model, "-o", tmp_path / "detector_hw.yaml", cwd=tmp_path)
    assert code == 0, err
    text = (tmp_path / "detector_hw.yaml").read_text()
    assert "images: {shape: [batch, 3, HEIGHT, WIDTH]}" in text
    assert "--shape images=1,3,HEIGHT,WIDTH" in text  # the comment beside it
    assert "or draft again with --shape images=1,3,HEIGHT,WIDTH" in err
    assert "next: tuner optimize" not in err  # it does not run as is
    # the file fails to load with the config layer's own error: the placeholder is not an axis
    with pytest.raises(SpecError, match=r"inputs\.images\.shape names dimension 'HEIGHT', which is not an axis"):
        load_spec(tmp_path / "detector_hw.yaml")
    # as the command says it
    result = run("run", tmp_path / "detector_hw.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "'HEIGHT', which is not an axis" in one_line_error(result.stderr)


def test_inputs_sharing_an_open_dimension_need_one_flag(zoo_dir: Path, tmp_path: Path) -> None:
    model = model_file(zoo_dir, "text_seq", tmp_path)
    draft = draft_workload(model, usable_cores=2, out_dir=tmp_path)
    assert not draft.complete
    assert draft.hints == ("--shape input_ids=1,SEQ_LEN",)  # attention_mask's seq_len is the same dimension
    assert {(d.input, d.index, d.placeholder) for d in draft.unresolved} == {
        ("input_ids", 1, "SEQ_LEN"),
        ("attention_mask", 1, "SEQ_LEN"),
    }
    assert "the same dimension(s) as in input_ids" in draft.text


def test_a_model_that_leaves_the_rank_open_gets_a_placeholder_for_it(tmp_path: Path) -> None:
    model = _fixed_model(tmp_path, "norank", [("x", TensorProto.FLOAT, None)])
    draft = draft_workload(model, usable_cores=2, out_dir=tmp_path)
    assert draft.hints == ("--shape x=D0,D1,...",)
    assert "x: {shape: [batch, DIMS]}" in draft.text
    complete = draft_workload(model, shapes={"x": (1, 5)}, usable_cores=2, out_dir=tmp_path)
    assert complete.complete
    assert declared(parse_spec(complete.text, path=tmp_path / "w.yaml"))["x"]["shape"] == ["batch", 5]


# ------------------------------------------------------------------------------------------ flag errors


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--shape", "images=1,3,64"],
            "--shape images=1,3,64: input 'images' has rank 4 [batch, 3, height, width], the flag gives 3",
        ),
        (
            ["--shape", "images=1,4,64,64"],
            "--shape images=1,4,64,64: dimension 1 of input 'images' is fixed at 3 by the model",
        ),
        (
            ["--shape", "image=1,3,64,64"],
            "--shape image=...: the model has no input 'image' (did you mean 'images'?) (its inputs: images)",
        ),
        (["--shape", "images=1,3,x,64"], "dimension 2 = 'x': expected a positive integer"),
        (["--shape", "1,3,64,64"], "expected NAME=D1,D2,..."),
        (["--value", "images"], "expected NAME=X with a number X"),
        (["--value", "scale=2"], "--value scale=...: the model has no input 'scale'"),
    ],
)
def test_a_flag_that_does_not_fit_the_model_is_one_line_naming_the_input(
    flags: list[str], message: str, zoo_dir: Path, tmp_path: Path
) -> None:
    model = model_file(zoo_dir, "detector_hw", tmp_path)
    code, out, err = cli("init", model, *flags, cwd=tmp_path)
    assert code == 2
    assert out == ""
    assert message in err, err


def test_a_value_for_an_integer_input_must_be_whole(zoo_dir: Path, tmp_path: Path) -> None:
    model = model_file(zoo_dir, "speech_state", tmp_path)
    code, _, err = cli("init", model, "--shape", "audio=1,16", "--value", "sr=16000.5", cwd=tmp_path)
    assert code == 2
    assert "--value sr=16000.5: input 'sr' is int64; give a whole number" in err


def test_shape_flags_read_brackets_and_scalars() -> None:
    assert parse_shape_flags(["x=[1, 3, 8, 8]", "sr=", "a:0=1,2"]) == {"x": (1, 3, 8, 8), "sr": (), "a:0": (1, 2)}
    with pytest.raises(SpecError, match="given twice"):
        parse_shape_flags(["x=1", "x=2"])


# ------------------------------------------------------------------------------------------ -o and the file


def test_output_file_holds_the_model_path_relative_to_its_folder(zoo_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    model = model_file(zoo_dir, "two_inputs", models, "My Model v1.onnx")
    target = tmp_path / "workloads" / "mine.yaml"
    code, out, err = cli("init", model, "-o", target, cwd=tmp_path)
    assert code == 0, err
    assert out == ""  # the file went to -o; notes and "wrote" to stderr
    assert f"wrote {target}" in err and f"next: tuner optimize {target}" in err
    spec = load_spec(target)
    assert spec.workload.model == "../models/My Model v1.onnx"
    assert spec.name == "My_Model_v1"
    from tuner.models.zoo import resolve_model

    assert resolve_model(spec.workload.model, spec.base_dir).resolve() == model.resolve()
    # an existing file is kept unless --force
    code, _, err = cli("init", model, "-o", target, cwd=tmp_path)
    assert code == 2 and "the file exists; pass --force" in err
    code, _, err = cli("init", model, "-o", target, "--force", "--backend", "openvino", cwd=tmp_path)
    assert code == 0, err
    assert load_spec(target).workload.backend == "openvino"


# ------------------------------------------------------------------------------------------ the search


def test_the_search_is_sized_to_the_usable_cores(zoo_dir: Path, tmp_path: Path) -> None:
    model = model_file(zoo_dir, "tiny", tmp_path)

    def spec_for(cores: int) -> Any:
        return parse_spec(draft_workload(model, usable_cores=cores, out_dir=tmp_path).text, path=tmp_path / "w.yaml")

    one = spec_for(1)
    assert (one.axes["pool_size"].low, one.axes["pool_size"].high) == (1, 2)  # at least 1 .. 2
    assert one.axes["threads"].values == (1,)
    assert one.axes["requests_per_sync"].values == (1, 2)
    assert one.study.trials == 1 * 2 * 4  # only pool 1 x threads 1 fits one core: the grid caps the budget
    two = spec_for(2)
    assert two.axes["threads"].values == (1, 2)
    assert two.study.trials == 3 * 2 * 4  # (1,1), (1,2), (2,1) fit two cores
    eight = spec_for(8)
    assert (eight.axes["pool_size"].low, eight.axes["pool_size"].high) == (1, 8)
    assert eight.axes["threads"].values == (1, 2, 4, 8)
    assert eight.study.trials == SEARCH_S // TRIAL_S  # the time budget, not the grid
    # several instances share the cores: ONNX Runtime's threads do not spin
    assert eight.workload.options == {"allow_spinning": False}
    assert "allow_spinning: false" in draft_workload(model, usable_cores=8, out_dir=tmp_path).text


def test_a_model_with_a_fixed_batch_keeps_batch_size_fixed(tmp_path: Path) -> None:
    model = _fixed_model(tmp_path, "fixed", [("x", TensorProto.FLOAT, [4, 3, 8, 8]), ("m", TensorProto.INT64, [4, 2])])
    draft = draft_workload(model, usable_cores=2, out_dir=tmp_path)
    spec = parse_spec(draft.text, path=tmp_path / "w.yaml")
    assert spec.axes["batch_size"].kind == "fixed" and spec.axes["batch_size"].values == (4,)
    assert declared(spec)["x"]["shape"] == [4, 3, 8, 8]
    assert "the model fixes the batch at 4" in draft.text
    assert spec.study.trials == 3 * 2  # no batch sizes to search


def test_an_openvino_ir_drafts_for_the_openvino_backend(zoo_dir: Path, tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    model = model_file(zoo_dir, "detector_hw", tmp_path)
    ov.save_model(ov.convert_model(str(model)), str(tmp_path / "detector.xml"))
    draft = draft_workload(tmp_path / "detector.xml", usable_cores=2, out_dir=tmp_path)
    assert draft.hints == ("--shape images=1,3,DIM2,DIM3",)  # the IR keeps no names for its open dimensions
    draft = draft_workload(
        tmp_path / "detector.xml", shapes={"images": (1, 3, 64, 64)}, usable_cores=2, out_dir=tmp_path
    )
    spec = parse_spec(draft.text, path=tmp_path / "w.yaml")
    assert spec.workload.backend == "openvino" and spec.workload.model == "detector.xml"
    assert spec.workload.options == {}
    assert declared(spec)["images"]["shape"] == ["batch", 3, 64, 64]
    with pytest.raises(SpecError, match="ONNX Runtime cannot read"):
        draft_workload(tmp_path / "detector.xml", backend="onnxruntime", usable_cores=2, out_dir=tmp_path)


# ------------------------------------------------------------------------------------------ run|optimize MODEL


def test_spec_from_model_is_the_draft_as_a_file_in_the_current_directory(zoo_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    model = model_file(zoo_dir, "speech_state", models)
    spec, draft = spec_from_model(
        model, shapes={"audio": (1, 1600)}, values={"sr": 16000}, usable_cores=2, cwd=tmp_path
    )
    assert spec.text == draft.text  # the study stores this text (workload_text): report/compare/export read it
    assert spec.path == tmp_path / "speech_state.yaml"
    assert spec.workload.model == "models/speech_state.onnx"
    assert spec.storage_url() == f"sqlite:///{tmp_path / 'studies' / 'speech_state.db'}"
    # the same as `tuner init` writing the file there: the same study (same hash) resumes
    written = tmp_path / "speech_state.yaml"
    written.write_text(draft.text)
    assert load_spec(written).spec_hash == spec.spec_hash
    with pytest.raises(SpecError, match=r"add --shape audio=1,SAMPLES \(numbers for SAMPLES\)"):
        spec_from_model(model, values={"sr": 16000}, usable_cores=2, cwd=tmp_path)


def test_run_and_optimize_on_a_model_name_the_flag_a_placeholder_needs(zoo_dir: Path, tmp_path: Path) -> None:
    model = model_file(zoo_dir, "detector_hw", tmp_path)
    for command in ("run", "optimize"):
        code, _, err = cli(command, model, cwd=tmp_path)
        assert code == 2
        assert "input 'images' leaves dimension(s) 2 (height), 3 (width) open" in err
        assert "add --shape images=1,3,HEIGHT,WIDTH" in err
    assert not (tmp_path / "studies").exists()  # refused before any study was made


def test_shape_and_value_on_a_workload_file_are_an_error(zoo_dir: Path, tmp_path: Path) -> None:
    model = model_file(zoo_dir, "tiny", tmp_path)
    assert cli("init", model, "-o", tmp_path / "tiny.yaml", cwd=tmp_path)[0] == 0
    for command in ("run", "optimize"):
        code, _, err = cli(command, tmp_path / "tiny.yaml", "--shape", "input=1,3,32,32", cwd=tmp_path)
        assert code == 2
        assert "--shape applies to a model file" in err
        code, _, err = cli(command, tmp_path / "tiny.yaml", "--value", "input=1", cwd=tmp_path)
        assert code == 2 and "--value applies to a model file" in err


# ------------------------------------------------------------------------------------------ measured, end to end


def _run_json(*args: str | Path, cwd: Path, zoo_dir: Path) -> dict[str, Any]:
    result = run("run", *args, "--json", cwd=cwd, timeout=240, env={"TUNER_CACHE_DIR": str(zoo_dir)})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_generated_file_runs_as_is(zoo_dir: Path, tmp_path: Path) -> None:
    """``tuner init`` then ``tuner run`` on the file it wrote, untouched: the hardest zoo graph (a scalar fed a
    constant, a state tensor whose batch is dimension 1) at batch 2."""
    flags, _ = ZOO_CASES["speech_state"]
    model = model_file(zoo_dir, "speech_state", tmp_path)
    code, _, err = cli("init", model, *flags, "-o", tmp_path / "speech.yaml", cwd=tmp_path)
    assert code == 0, err
    doc = _run_json(tmp_path / "speech.yaml", "--set", "batch_size=2", cwd=tmp_path, zoo_dir=zoo_dir)
    assert doc["params"]["batch_size"] == 2
    assert doc["metrics"]["qps"] > 0
    assert doc["applied"]["input_shapes"] == {"audio": [2, 1600], "sr": [], "state": [2, 2, 64]}


@pytest.mark.parametrize("name", [n for n in ZOO_CASES if n != "speech_state"])
def test_every_generated_file_feeds_its_model(name: str, zoo_dir: Path, tmp_path: Path) -> None:
    """The other zoo graphs' files, run with only ``measure:`` shortened (it decides how long a trial measures,
    never what is fed)."""
    flags, _ = ZOO_CASES[name]
    model = model_file(zoo_dir, name, tmp_path)
    code, out, err = cli("init", model, *flags, cwd=tmp_path)
    assert code == 0, err
    data = yaml.safe_load(out)
    data["measure"] = dict(FAST_MEASURE)
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    doc = _run_json(tmp_path / "w.yaml", cwd=tmp_path, zoo_dir=zoo_dir)
    assert doc["metrics"]["qps"] > 0
    assert doc["applied"]["input_shapes"] == FED_AT_BATCH_1[name]


def test_run_takes_a_model_file_with_its_flags(zoo_dir: Path, tmp_path: Path) -> None:
    model = model_file(zoo_dir, "detector_hw", tmp_path)
    result = run(
        "run", model, "--shape", "images=1,3,64,64", "--set", "batch_size=2", "--json",
        cwd=tmp_path, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["params"]["batch_size"] == 2 and doc["metrics"]["qps"] > 0
    assert doc["applied"]["input_shapes"] == {"images": [2, 3, 64, 64]}
    assert "workload detector_hw drafted from" in result.stderr
