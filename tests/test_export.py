"""``tuner export`` (every format parses with its own tool) and ``tuner run FILE --verify``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _sim_studies import FAKE_PLATFORM, SimStudies, combined_storage, sim_studies
from typer.testing import CliRunner

from tuner.cli import app
from tuner.config.spec import load_spec
from tuner.export.formats import FORMATS
from tuner.export.provenance import MARKER, read_provenance
from tuner.export.select import parse_pick
from tuner.export.triton import parse_config_pbtxt
from tuner.export.verify import verify


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> SimStudies:
    return sim_studies(tmp_path_factory)


#: study A's knee, worked out from the sim device model (see test_report.BOUND_A): pool 6 x batch 2 is the
#: only config within 10 % of the plateau (pool 6 x batch 1 reaches 776 of 1115 qps)
KNEE_A = {"pool_size": 6, "threads": 1, "requests_per_sync": 1, "batch_size": 2}


@pytest.fixture(scope="module")
def report_a(studies: SimStudies) -> dict:
    result = CliRunner().invoke(app, ["report", str(studies.a_db), "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["knee"]["params"] == KNEE_A
    return doc


def cli(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def export(db: Path, fmt: str, out: Path, pick: str = "knee") -> str:
    code, _, err = cli("export", db, "--pick", pick, "--format", fmt, "-o", out)
    assert code == 0, err
    assert "wrote" in err and out.exists()
    return out.read_text()


def tuner_cmd(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuner", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def test_every_export_carries_provenance(studies: SimStudies, report_a: dict, tmp_path: Path) -> None:
    knee = report_a["knee"]
    for fmt in FORMATS:
        text = export(studies.a_db, fmt, tmp_path / f"out.{fmt}")
        prov = read_provenance(text)
        assert prov is not None, fmt
        assert prov["study"] == studies.a_name and prov["trial"] == knee["number"] and prov["pick"] == "knee"
        assert prov["params"] == knee["params"]
        assert prov["metrics"]["qps"] == pytest.approx(knee["metrics"]["qps"])
        assert prov["metrics"]["latency_p99_ms"] == pytest.approx(knee["metrics"]["latency_p99_ms"])
        assert prov["platform_tag"] and prov["platform"]["cpu_model"] == report_a["platform"]["cpu_model"]
        assert prov["exported_at"].endswith("Z") and prov["knee"]["confirmed"] == knee["confirmed"]
        if fmt in ("tuner", "env", "triton"):  # a readable comment header as well
            assert text.startswith("# tuner export") and f"# {MARKER} " in text
            assert f"trial:     #{knee['number']}" in text


def test_tuner_format_is_a_workload_with_every_axis_fixed(studies: SimStudies, report_a: dict, tmp_path: Path) -> None:
    path = tmp_path / "deploy" / "knee.yaml"
    export(studies.a_db, "yaml", path)  # "yaml" is an alias of "tuner"
    spec = load_spec(path)
    assert spec.searched_axes() == {}
    assert spec.default_params() == report_a["knee"]["params"]
    original = load_spec(studies.a_spec)
    assert spec.workload == original.workload and spec.measure == original.measure
    assert spec.objectives == original.objectives


def test_exported_workload_runs_and_verifies(studies: SimStudies, report_a: dict, tmp_path: Path) -> None:
    path = tmp_path / "knee.yaml"
    export(studies.a_db, "tuner", path)
    # the sim's p99 over a 0.3 s measurement is noisy on a shared 2-core box: a loose tolerance here
    proc = tuner_cmd("run", path, "--verify", "--verify-tolerance", "0.5", "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    doc = json.loads(proc.stdout)
    assert doc["params"] == report_a["knee"]["params"]
    assert doc["verify"]["reproduced"] is True and doc["verify"]["same_platform"] is True
    assert [c["metric"] for c in doc["verify"]["checks"]] == ["qps", "latency_p99_ms"]
    assert doc["verify"]["checks"][0]["study"] == pytest.approx(report_a["knee"]["metrics"]["qps"])

    # a study figure this machine cannot reach: not reproduced, exit code 1
    text = path.read_text()
    prov = read_provenance(text)
    line = next(x for x in text.splitlines() if MARKER in x)
    prov["metrics"]["qps"] *= 10
    path.write_text(text.replace(line, f"# {MARKER} {json.dumps(prov)}"))
    proc = tuner_cmd("run", path, "--verify")
    assert proc.returncode == 1, proc.stderr
    assert "NOT REPRODUCED" in proc.stdout and "qps" in proc.stdout


def test_verify_says_when_the_platform_differs(studies: SimStudies, tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    text = export(studies.b_db, "tuner", path, pick="best")
    assert FAKE_PLATFORM["cpu_model"] in text
    # the same device twin here: its numbers hold within a wide tolerance -> exit 0, the platform noted
    proc = tuner_cmd("run", path, "--verify", "--verify-tolerance", "0.9")
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "platform differs" in out and studies.b_tag in out
    assert "NOT REPRODUCED" not in out
    # a study figure out of reach -> exit 1, and the platform is still noted
    prov = read_provenance(text)
    line = next(x for x in text.splitlines() if MARKER in x)
    prov["metrics"]["qps"] *= 100
    path.write_text(text.replace(line, f"# {MARKER} {json.dumps(prov)}"))
    proc = tuner_cmd("run", path, "--verify", "--verify-tolerance", "0.9")
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 1, proc.stderr + proc.stdout
    assert "platform differs" in out and "NOT REPRODUCED" in out


def test_verify_needs_an_exported_file(studies: SimStudies) -> None:
    code, _, err = cli("run", studies.a_spec, "--verify")
    assert code == 2 and MARKER in err


def test_json_export(studies: SimStudies, report_a: dict, tmp_path: Path) -> None:
    doc = json.loads(export(studies.a_db, "json", tmp_path / "k.json"))
    assert doc["params"] == report_a["knee"]["params"]
    assert doc["workload"]["backend"] == "sim" and doc["workload"]["options"]["units"] == 3
    assert doc["metrics"]["qps"] == pytest.approx(report_a["knee"]["metrics"]["qps"])


def test_env_export_is_sourced_by_bash(studies: SimStudies, report_a: dict, tmp_path: Path) -> None:
    path = tmp_path / "knee.env"
    export(studies.a_db, "env", path)
    names = [
        "TUNER_POOL_SIZE",
        "TUNER_THREADS",
        "TUNER_REQUESTS_PER_SYNC",
        "TUNER_BATCH_SIZE",
        "OMP_NUM_THREADS",
        "TUNER_STUDY",
        "TUNER_TRIAL",
        "TUNER_OPTION_UNITS",
        "TUNER_EXPECTED_QPS",
    ]
    script = f"set -eu; source {path}; " + "; ".join(f'echo "{n}=${{{n}}}"' for n in names)
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    params = report_a["knee"]["params"]
    assert int(values["TUNER_POOL_SIZE"]) == params["pool_size"]
    assert int(values["TUNER_BATCH_SIZE"]) == params["batch_size"]
    assert int(values["TUNER_THREADS"]) == int(values["OMP_NUM_THREADS"]) == params["threads"]
    assert values["TUNER_STUDY"] == studies.a_name and int(values["TUNER_TRIAL"]) == report_a["knee"]["number"]
    assert values["TUNER_OPTION_UNITS"] == "3"
    assert float(values["TUNER_EXPECTED_QPS"]) == pytest.approx(report_a["knee"]["metrics"]["qps"], rel=1e-5)


def test_onnxruntime_export_loads_into_session_options(
    studies: SimStudies, report_a: dict, tmp_path: Path, tiny_model: Path
) -> None:
    import onnxruntime as ort

    from tuner.export.runtime_formats import ort_session_options

    doc = json.loads(export(studies.a_db, "onnxruntime", tmp_path / "k.ort.json"))
    params = report_a["knee"]["params"]
    so = ort_session_options(doc)
    assert isinstance(so, ort.SessionOptions)
    assert so.intra_op_num_threads == params["threads"]
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert doc["pool"]["sessions"] == params["pool_size"] and doc["pool"]["batch_size"] == params["batch_size"]
    session = ort.InferenceSession(str(tiny_model), sess_options=so, providers=doc["providers"])
    assert session.get_providers()[0] == doc["providers"][0]


def test_openvino_export(studies: SimStudies, report_a: dict, tmp_path: Path, tiny_model: Path) -> None:
    doc = json.loads(export(studies.a_db, "openvino", tmp_path / "k.ov.json"))
    props = doc["compile_properties"]
    # the knee is 6 runtimes x 1 thread x 1 request in flight x batch 2 (KNEE_A): 6 streams of 1 thread
    assert props["NUM_STREAMS"] == "6"
    assert props["INFERENCE_NUM_THREADS"] == "6"
    assert props["PERFORMANCE_HINT"] == "THROUGHPUT"  # 6 requests in flight, not one
    assert props["INFERENCE_PRECISION_HINT"] == "f32"
    assert doc["infer_requests"] == 6 and doc["batch_size"] == 2
    ov = pytest.importorskip("openvino")
    core = ov.Core()
    model = core.read_model(str(tiny_model))
    model.reshape([doc["batch_size"], 3, 32, 32])
    compiled = core.compile_model(model, doc["device"], props)
    assert "float32" in str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()


def test_triton_export_parses_as_a_model_config(studies: SimStudies, report_a: dict, tmp_path: Path) -> None:
    out = tmp_path / "model_repo" / "sim-npu"
    out.mkdir(parents=True)
    code, _, err = cli("export", studies.a_db, "--format", "triton", "-o", str(out) + "/")
    assert code == 0, err
    config = parse_config_pbtxt((out / "config.pbtxt").read_text())
    params = report_a["knee"]["params"]
    assert config.name == "sim-npu" and config.backend == "onnxruntime"
    assert config.max_batch_size == params["batch_size"]
    (group,) = config.instance_group
    assert group.count == params["pool_size"] and group.kind == type(group).Kind.Value("KIND_CPU")
    assert list(config.dynamic_batching.preferred_batch_size) == [params["batch_size"]]
    assert config.parameters["intra_op_thread_count"].string_value == str(params["threads"])
    assert set(config.parameters) == {"intra_op_thread_count", "inter_op_thread_count", "execution_mode"}
    from google.protobuf import text_format

    with pytest.raises(text_format.ParseError):
        parse_config_pbtxt('name: "x"\ninstance_groups [ { count: 1 } ]\n')


def test_pick_best_and_trial(studies: SimStudies, report_a: dict, tmp_path: Path) -> None:
    best = read_provenance(export(studies.a_db, "json", tmp_path / "best.json", pick="best"))
    assert best["trial"] == report_a["best"]["number"] and best["pick"] == "best"
    some = report_a["top"][-1]
    trial = read_provenance(export(studies.a_db, "json", tmp_path / "t.json", pick=f"trial:{some['number']}"))
    assert trial["trial"] == some["number"] and trial["pick"] == f"trial:{some['number']}"
    assert trial["params"] == some["params"]
    code, _, err = cli("export", studies.a_db, "--pick", "trial:999")
    assert code == 2 and "no trial 999" in err
    code, _, err = cli("export", studies.a_db, "--pick", "worst")
    assert code == 2 and "best, knee or trial:N" in err
    code, _, err = cli("export", studies.a_db, "--format", "docker")
    assert code == 2 and "triton" in err
    assert parse_pick("#4") == ("trial", 4)


def test_export_to_stdout_and_choosing_a_study(studies: SimStudies, tmp_path_factory: pytest.TempPathFactory) -> None:
    code, out, _ = cli("export", studies.a_db, "--format", "env")
    assert code == 0 and "export TUNER_POOL_SIZE=" in out
    both, names = combined_storage(studies, tmp_path_factory)
    code, _, err = cli("export", both)
    assert code == 2 and "--study" in err and names[1] in err
    code, out, _ = cli("export", both, "--study", names[1], "--format", "json")
    assert code == 0 and json.loads(out)["provenance"]["platform_tag"] == studies.b_tag


def test_verify_rule() -> None:
    prov = {
        "study": "s",
        "trial": 3,
        "metrics": {"qps": 100.0, "latency_p99_ms": 10.0},
        "platform": dict(FAKE_PLATFORM),
        "platform_tag": "aarch64-8c-x",
    }
    here = dict(FAKE_PLATFORM)
    ok = verify(prov, {"qps": 91.0, "latency_p99_ms": 10.9}, platform=here)
    assert ok.reproduced and ok.same_platform and "same platform" in ok.platform_note
    assert verify(prov, {"qps": 250.0, "latency_p99_ms": 2.0}, platform=here).reproduced  # better passes
    assert not verify(prov, {"qps": 89.0, "latency_p99_ms": 10.0}, platform=here).reproduced
    assert not verify(prov, {"qps": 100.0, "latency_p99_ms": 11.5}, platform=here).reproduced
    assert verify(prov, {"qps": 80.0, "latency_p99_ms": 10.0}, tolerance=0.25, platform=here).reproduced
    other = verify(prov, {"qps": 100.0, "latency_p99_ms": 10.0}, platform={**here, "cpu_model": "Other CPU"})
    assert other.reproduced and not other.same_platform
    assert "platform differs" in other.platform_note and "Other CPU" in other.platform_note
    assert "NOT" not in other.lines()[0]


def _selection(workload_text: str, params: dict, workload_path: str | None = None):
    from tuner.export.select import Selection

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


def test_relative_model_path_becomes_absolute(tmp_path: Path, tiny_model: Path) -> None:
    from tuner.export.formats import render

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.onnx").write_bytes(tiny_model.read_bytes())
    text = "name: w\nworkload: {backend: onnxruntime, model: models/m.onnx}\nsearch: {threads: [1, 2]}\n"
    sel = _selection(
        text,
        {"pool_size": 1, "threads": 2, "requests_per_sync": 1, "batch_size": 1},
        workload_path=str(tmp_path / "w.yaml"),
    )
    out = tmp_path / "elsewhere" / "deploy.yaml"
    out.parent.mkdir()
    out.write_text(render(sel, "tuner"))
    spec = load_spec(out)
    assert spec.workload.model == str((tmp_path / "models" / "m.onnx").resolve())
    assert spec.default_params()["threads"] == 2 and spec.searched_axes() == {}


def test_openvino_study_exports_the_properties_it_compiled_with() -> None:
    from tuner.export.formats import render

    text = (
        "name: w\nworkload: {backend: openvino, model: zoo:tiny, options: {pool_mode: instances, "
        "inference_precision: bf16}}\nsearch: {pool_size: [1, 4]}\n"
    )
    doc = json.loads(
        render(_selection(text, {"pool_size": 4, "threads": 2, "requests_per_sync": 2, "batch_size": 8}), "openvino")
    )
    props = doc["compile_properties"]
    assert doc["compiled_models"] == 4 and props["NUM_STREAMS"] == "1"  # one model per pool instance
    assert props["INFERENCE_NUM_THREADS"] == "2" and props["INFERENCE_PRECISION_HINT"] == "bf16"
    assert doc["infer_requests"] == 8 and doc["batch_size"] == 8
    assert not any("mapped" in n for n in doc["provenance"]["notes"])
