"""The pipeline workload: flow control (counts, backpressure, shutdown), failures named by stage,
bottleneck attribution, the stage work itself, the workload-file rules, and a real ``tuner run``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _wait import wait_until

from tuner.backends.sim import SimBackend
from tuner.config.spec import load_spec
from tuner.errors import SpecError
from tuner.execution.runner import measure_config
from tuner.workloads.pipeline.engine import Pipeline
from tuner.workloads.pipeline.flow import PipelineError, StageFailed
from tuner.workloads.pipeline.images import list_images, synthetic_images
from tuner.workloads.pipeline.job import run_pipeline_job
from tuner.workloads.pipeline.stage_work import decode_jpeg, preprocess_image
from tuner.workloads.pipeline.stages import STAGE_TYPES, validate_stages

FAST_MEASURE = {
    "warmup_s": 0.3,
    "window_s": 0.3,
    "stable_windows": 2,
    "stability": 0.5,
    "max_s": 3.0,
    "min_window_requests": 4,
}


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six small synthetic JPEGs (64x48)."""
    return synthetic_images(count=6, width=64, height=48, quality=80, seed=0, cache_dir=tmp_path_factory.mktemp("img"))


def build(raw: list[dict[str, Any]], image_dir: Path, backend: Any = None, **kwargs: Any) -> Pipeline:
    clock, sleep = kwargs.pop("clock", None), kwargs.pop("sleep", None)
    extra: dict[str, Any] = {}
    if clock is not None:
        extra["clock"] = clock
    if sleep is not None:
        extra["sleep"] = sleep
    return Pipeline(validate_stages(raw), images=list_images(image_dir), params=kwargs, backend=backend, **extra)


def run_until(p: Pipeline, completions: int) -> None:
    """Run until the sink has seen ``completions`` items (however long that takes here), then stop."""
    p.load()
    p.start()
    try:
        wait_until(lambda: len(p.completions) >= completions or p.failed() is not None, f"{completions} completions")
    finally:
        p.stop()
        p.close()


class FakeClock:
    """The pipeline's clock in the flow-control tests: it moves only when the test moves it."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Gates:
    """The ``sleep`` of the pipeline's delay stages: an item at a gated stage waits until the test lets it through.

    Stages are told apart by their ``ms``; a stage without a gate passes at once. Nothing here waits on the
    clock, so which items are where is decided by the test alone.
    """

    def __init__(self, *gated_ms: float) -> None:
        self._cond = threading.Condition()
        self.allowed = dict.fromkeys(gated_ms, 0)
        self.entered = dict.fromkeys(gated_ms, 0)
        self.passed = dict.fromkeys(gated_ms, 0)
        self._open = False

    def __call__(self, seconds: float) -> None:
        ms = round(seconds * 1000.0, 6)
        if ms in self.allowed:
            self._held_at_gate(ms)

    def _held_at_gate(self, ms: float) -> None:
        with self._cond:
            self.entered[ms] += 1
            while not self._open and self.passed[ms] >= self.allowed[ms]:
                self._cond.wait()
            self.passed[ms] += 1

    def allow(self, ms: float, items: int) -> None:
        with self._cond:
            self.allowed[ms] += items
            self._cond.notify_all()

    def open(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()


# a worker in one of these is not inside its stage's work (it waits to get or to put), or is held at a gate
_PARKED = {"_get", "_put", "_held_at_gate"}


def parked(p: Pipeline) -> bool:
    """Every worker thread waits: in its inbox's get, in a put downstream, or at a gate (from their stacks)."""
    frames = sys._current_frames()
    for s in p.stages:
        for t in s.threads:
            frame = frames.get(t.ident) if t.ident is not None else None
            names = set()
            while frame is not None:
                names.add(frame.f_code.co_name)
                frame = frame.f_back
            if not names & _PARKED:
                return False
    return True


def settle(p: Pipeline, condition: Callable[[], bool], what: str) -> None:
    """Wait until ``condition`` holds and nothing can move: only then may the test move the fake clock."""
    wait_until(lambda: condition() and parked(p), what)


def job(raw: list[dict[str, Any]], image_dir: Path, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "kind": "pipeline",
        "backend": "sim",
        "model": None,
        "options": {},
        "params": params or {},
        "measure": FAST_MEASURE,
        "pipeline": {"stages": [s.to_dict() for s in validate_stages(raw)], "images": str(image_dir)},
    }


# ----------------------------------------------------------------------------------- counting


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_item_read_is_completed_once_under_random_delays(image_dir: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch = int(rng.integers(1, 5))

    def jitter(name: str) -> dict[str, Any]:
        return {
            "type": "delay",
            "name": name,
            "ms": 0.0,
            "jitter_ms": float(rng.uniform(0.5, 3.0)),
            "workers": int(rng.integers(1, 4)),
            "queue": int(rng.integers(1, 4)),
            "seed": seed,
        }

    raw = [
        {"type": "read", "workers": int(rng.integers(1, 3))},
        jitter("d1"),
        {"type": "decode", "workers": int(rng.integers(1, 3)), "queue": int(rng.integers(1, 4))},
        jitter("d2"),
        {"type": "preprocess", "size": 16, "resize": 20, "workers": 2, "queue": 1},
        {"type": "batch", "workers": int(rng.integers(1, 3))},  # several partial batches at the end
        jitter("d3"),
        {"type": "infer", "queue": int(rng.integers(1, 3))},
        {"type": "postprocess", "workers": 2},
    ]
    backend = SimBackend(None, {"service_ms": 0.3, "host_overhead_ms": 0.1, "noise": 0.0, "load_ms": 0.0})
    p = build(raw, image_dir, backend, batch_size=batch, pool_size=2, requests_per_sync=int(rng.integers(1, 3)))
    run_until(p, completions=40)
    assert p.failed() is None
    p.check_counts()
    assert p.items_in == p.items_out == len(p.completions) >= 40
    assert all(lat >= 0 for _, lat in p.completions)
    assert all(not t.is_alive() for s in p.stages for t in s.threads)  # clean shutdown


def test_a_lost_or_duplicated_item_fails_the_trial(image_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = [{"type": "read"}, {"type": "delay", "ms": 1.0}]
    original = Pipeline._sink
    calls = {"n": 0}

    def leaky(self: Pipeline, x: Any) -> None:
        calls["n"] += 1
        if calls["n"] != 5:  # drop the fifth item
            original(self, x)

    monkeypatch.setattr(Pipeline, "_sink", leaky)
    with pytest.raises(PipelineError, match=r"items lost or duplicated: read \d+, completed \d+ \(1 lost"):
        run_pipeline_job(job(raw, image_dir), lambda _e: None)

    def twice(self: Pipeline, x: Any) -> None:
        original(self, x)
        if calls["n"] == 0:
            calls["n"] = 1
            original(self, x)

    calls["n"] = 0
    monkeypatch.setattr(Pipeline, "_sink", twice)
    with pytest.raises(PipelineError, match=r"1 duplicated, e\.g\. #0"):
        run_pipeline_job(job(raw, image_dir), lambda _e: None)


# ----------------------------------------------------------------------------------- failures


def test_a_stage_that_raises_fails_the_trial_naming_the_stage(image_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = [{"type": "read"}, {"type": "decode"}, {"type": "delay", "name": "boom", "fail_after": 20, "workers": 2}]
    started: list[threading.Thread] = []
    original = Pipeline.start

    def start(self: Pipeline) -> None:
        original(self)
        started.extend(t for s in self.stages for t in s.threads)

    monkeypatch.setattr(Pipeline, "start", start)
    with pytest.raises(StageFailed, match=r"stage 'boom' \(delay\) failed: RuntimeError: deliberate failure"):
        run_pipeline_job(job(raw, image_dir), lambda _e: None)
    # the failed trial stopped every worker of every stage before it returned: nothing hung, nothing lingers
    assert sorted(t.name for t in started) == ["tuner-boom-0", "tuner-boom-1", "tuner-decode-0", "tuner-read-0"]
    assert [t.name for t in started if t.is_alive()] == []


def test_a_failing_stage_fails_the_trial_child_with_its_name(tmp_path: Path, image_dir: Path) -> None:
    path = tmp_path / "boom.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            workload:
              kind: pipeline
              images: {image_dir}
              stages:
                - type: read
                - type: decode
                - {{type: delay, name: boom, fail_after: 10}}
            measure: {{warmup_s: 0.2, window_s: 0.2, max_s: 3}}
            study: {{trial_timeout_s: 60}}
            """
        )
    )
    spec = load_spec(path)
    result = measure_config(spec, spec.default_params())
    assert not result.ok and result.failure is not None
    assert "stage 'boom' (delay) failed" in result.failure.message


def test_a_stage_that_cannot_start_fails_naming_the_stage(tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg at all")
    raw = [{"type": "read"}, {"type": "decode", "name": "jpeg"}]
    with pytest.raises(StageFailed, match=r"stage 'jpeg' \(decode\) failed"):
        run_pipeline_job(job(raw, tmp_path), lambda _e: None)


# ----------------------------------------------------------------------------------- backpressure


def test_backpressure_holds_every_stage_at_the_pace_of_the_slow_one(image_dir: Path) -> None:
    raw = [
        {"type": "read", "preload": True, "workers": 2},
        {"type": "decode", "queue": 3, "workers": 2},
        {"type": "preprocess", "size": 16, "resize": 20, "queue": 2},
        {"type": "delay", "name": "slow", "ms": 10.0, "queue": 3},
    ]
    clock, gates = FakeClock(), Gates(10.0)
    p = build(raw, image_dir, clock=clock, sleep=gates)
    # everything in flight at once: read 2 workers; decode 3 queued + 2; preprocess 2 + 1; slow 3 + 1
    assert p.capacity == 14
    p.load()
    p.start()
    try:
        # the slow stage lets 5 items through: behind it every queue fills and every worker holds one item
        gates.allow(10.0, 5)
        settle(p, lambda: gates.passed[10.0] == 5 and gates.entered[10.0] == 6 and p.items_in == 19, "the first hold")
        assert p.items_out == 5
        assert p.items_in == p.items_out + p.capacity  # read was held back: it read only what the slow stage freed
        for s in p.stages[1:]:
            assert s.inbox is not None and s.inbox.qsize() == s.inbox.maxsize, s.name
        # the measured part: 2 s of the fake clock, during which the slow stage lets exactly 7 more through
        clock.now = 10.0
        p.mark("start")
        clock.now = 11.0
        gates.allow(10.0, 7)
        settle(p, lambda: gates.passed[10.0] == 12 and p.items_in == 26, "the second hold")
        clock.now = 12.0
        p.mark("end")
        assert p.items_out == 12 and p.items_in == p.items_out + p.capacity
        assert [t for t, _ in p.completions] == [0.0] * 5 + [11.0] * 7
        assert [lat for _, lat in p.completions[5:]] == [11.0] * 7  # all read at 0, before the hold
    finally:
        gates.open()
        p.stop()
        p.close()
    p.check_counts()
    assert p.items_in == p.items_out == len(p.completions)
    for s in p.stages:
        if s.inbox is not None:
            assert s.inbox.peak_total <= s.inbox.maxsize, s.name
    assert p.in_flight_max == p.capacity
    m = p.stage_metrics()
    # every stage passed the same 7 items in the 2 s
    for name in ("read", "decode", "preprocess", "slow"):
        assert m[f"stage.{name}.qps"] == 3.5, name
    # the slow stage's worker was inside its work throughout; the others only waited to put, which is not busy
    assert m["stage.slow.busy"] == 1.0
    assert m["stage.read.busy"] == m["stage.decode.busy"] == m["stage.preprocess.busy"] == 0.0
    assert m["stage.slow.queue"] == m["stage.decode.queue"] == m["stage.preprocess.queue"] == 1.0
    assert (m["stage.slow.queue_max"], m["stage.preprocess.queue_max"], m["stage.decode.queue_max"]) == (3, 2, 3)
    assert m["bottleneck"] == "slow"


def test_searched_queue_depth_and_workers_apply(image_dir: Path) -> None:
    raw = [{"type": "read"}, {"type": "decode", "queue": 5}, {"type": "delay"}]
    p = build(raw, image_dir, **{"stages.decode.queue": 1, "stages.decode.workers": 3})
    decode = p.stages[1]
    assert decode.inbox is not None and decode.inbox.maxsize == 1
    assert decode.workers == 3


# ----------------------------------------------------------------------------------- bottleneck


@pytest.mark.parametrize(
    ("slow_workers", "allow", "entered", "in_flight", "busy", "expected"),
    [
        # slow holds its one worker: busy 1.0; mid downstream idles in get. In flight: read 1, fast 2 + 1, slow 2 + 1
        (1, {8.0: 0}, {8.0: 1}, 7, {"read": 0.0, "fast": 0.0, "slow": 1.0, "mid": 0.0}, "slow"),
        # slow lets 5 through: mid holds 1 + 2 queued, 2 of slow's 4 workers wait to put, the other 2 are held.
        # slow has twice mid's busy worker-seconds, but 0.5 per worker: mid is the one the pipeline runs into
        (4, {8.0: 5, 3.0: 0}, {8.0: 7, 3.0: 1}, 13, {"read": 0.0, "fast": 0.0, "slow": 0.5, "mid": 1.0}, "mid"),
        # both held at 1.0: the later stage is the bottleneck (its full input queue holds up the other)
        (1, {8.0: 3, 3.0: 0}, {8.0: 4, 3.0: 1}, 10, {"read": 0.0, "fast": 0.0, "slow": 1.0, "mid": 1.0}, "mid"),
    ],
)
def test_the_bottleneck_is_the_stage_with_the_highest_busy_fraction_per_worker(
    image_dir: Path,
    slow_workers: int,
    allow: dict[float, int],
    entered: dict[float, int],
    in_flight: int,
    busy: dict[str, float],
    expected: str,
) -> None:
    raw = [
        {"type": "read", "preload": True},
        {"type": "delay", "name": "fast", "ms": 1.0, "queue": 2},
        {"type": "delay", "name": "slow", "ms": 8.0, "workers": slow_workers, "queue": 2},
        {"type": "delay", "name": "mid", "ms": 3.0, "queue": 2},
    ]
    clock, gates = FakeClock(), Gates(*allow)
    p = build(raw, image_dir, clock=clock, sleep=gates)
    p.load()
    p.start()
    try:
        for ms, items in allow.items():
            gates.allow(ms, items)
        settle(p, lambda: gates.entered == entered and gates.passed == allow and p.items_in == in_flight, "the hold")
        assert p.items_out == 0
        clock.now = 10.0
        p.mark("start")
        clock.now = 12.0
        p.mark("end")
    finally:
        gates.open()
        p.stop()
        p.close()
    p.check_counts()
    m = p.stage_metrics()
    assert {name: m[f"stage.{name}.busy"] for name in busy} == busy
    assert m["bottleneck"] == expected
    assert all(m[f"stage.{name}.qps"] == 0.0 for name in busy)  # nothing moved while measured
    assert m["stage.fast.queue"] == m["stage.slow.queue"] == 1.0  # full in front of a held stage
    assert m["stage.mid.queue"] == (1.0 if 3.0 in allow else 0.0)


# ----------------------------------------------------------------------------------- the stages' work


def test_preprocess_of_a_constant_image_is_the_normalised_constant() -> None:
    img = np.full((48, 64, 3), (10, 128, 250), dtype=np.uint8)
    out = preprocess_image(img, resize=20, size=16)
    assert out.shape == (3, 16, 16) and out.dtype == np.float32
    expected = (np.array([10, 128, 250]) / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(out.reshape(3, -1).mean(axis=1), expected, atol=1e-5)
    assert np.ptp(out, axis=(1, 2)).max() < 1e-5
    assert preprocess_image(img, resize=20, size=16, layout="nhwc").shape == (16, 16, 3)


def test_preprocess_matches_pillow_resize_and_centre_crop() -> None:
    image_mod = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 255, size=(12, 18, 3))
    img = np.asarray(image_mod.fromarray(base.astype(np.uint8)).resize((900, 600), image_mod.BICUBIC))
    out = preprocess_image(img, resize=256, size=224)
    ref = np.asarray(image_mod.fromarray(img).resize((384, 256), image_mod.BILINEAR)).astype(np.float32) / 255.0
    ref = ref[16:240, 80:304]
    ref = ((ref - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])).transpose(2, 0, 1)
    assert np.abs(out - ref).mean() < 0.03


def test_decode_gives_rgb_and_reduce_never_goes_below_the_resize(image_dir: Path) -> None:
    big = synthetic_images(count=1, width=640, height=480, quality=85, seed=3, cache_dir=image_dir.parent / "big")
    data = list_images(big)[0].read_bytes()
    full = decode_jpeg(data)
    assert full.shape == (480, 640, 3) and full.dtype == np.uint8
    reduced = decode_jpeg(data, min_side=100)
    assert reduced.shape == (120, 160, 3)  # 1/4: the smallest scale that keeps both sides >= 100
    assert abs(float(full.mean()) - float(reduced.mean())) < 3


def test_the_synthetic_set_is_generated_once(tmp_path: Path) -> None:
    folder = synthetic_images(count=3, width=40, height=30, quality=70, seed=5, cache_dir=tmp_path)
    files = list_images(folder)
    assert len(files) == 3
    stamps = [f.stat().st_mtime_ns for f in files]
    assert synthetic_images(count=3, width=40, height=30, quality=70, seed=5, cache_dir=tmp_path) == folder
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert decode_jpeg(files[0].read_bytes()).shape == (30, 40, 3)


# ----------------------------------------------------------------------------------- the workload file

PIPE = """\
workload:
  kind: pipeline
  backend: onnxruntime
  model: zoo:tiny
  stages:
    - type: read
    - type: decode
    - type: preprocess
    - type: batch
    - type: infer
    - type: postprocess
"""


def spec_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "w.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}:"), message
    return message.removeprefix(f"{path}:")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("- type: decode", "- type: decod"),
            "7: workload.stages[1].type = 'decod': unknown stage type (did you mean 'decode'?) (valid: "
            + ", ".join(STAGE_TYPES)
            + ")",
        ),
        (
            ("- type: decode", "- {type: decode, worker: 2}"),
            "7: workload.stages[1].worker: unknown key of a 'decode' stage (did you mean 'workers'?)",
        ),
        (
            ("- type: decode", "- {type: decode, workers: 0}"),
            "7: workload.stages[1].workers = 0: expected the number of worker threads, an integer between 1 and 1024",
        ),
        (
            ("- type: decode", "- {type: decode, queue: two}"),
            "7: workload.stages[1].queue = 'two': expected the depth of the input queue, an integer",
        ),
        (
            ("- type: decode", "- {type: decode, library: turbo}"),
            "7: workload.stages[1].library = 'turbo': expected one of 'simplejpeg', 'pillow' or 'opencv'",
        ),
        (
            ("- type: infer", "- {type: infer, workers: 2}"),
            "10: workload.stages[4].workers = 2: expected no workers on an infer stage",
        ),
        (
            ("    - type: batch\n", ""),
            "9: workload.stages[3].type = 'infer': expected a stage that takes single samples here (a 'infer' "
            "stage takes batches); add a 'batch' stage before it",
        ),
        (("    - type: read\n", ""), "6: workload.stages[0].type = 'decode': expected 'read'"),
        (
            ("- type: postprocess", "- {type: postprocess, name: decode}"),
            "11: workload.stages[5].name = 'decode': another stage has this name",
        ),
        (("  stages:\n", "  stagez:\n"), "5: workload.stagez: unknown key (did you mean 'stages'?)"),
        (
            ("  kind: pipeline\n", "  kind: pipeline\n  synthetic: {cout: 3}\n"),
            "3: workload.synthetic.cout: unknown key",
        ),
        (("  kind: pipeline\n", "  kind: pool\n"), "5: workload.stages: only for kind: pipeline"),
        (
            ("  kind: pipeline\n", "  kind: pipeline\n  images: no-such-folder\n"),
            "3: workload.images = 'no-such-folder': image folder",
        ),
    ],
)
def test_workload_file_mistakes_are_one_line_errors(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    old, new = edit
    assert old in PIPE
    assert spec_error(tmp_path, PIPE.replace(old, new, 1)).startswith(expected)


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("stages.decod.workers: [1, 2]", "unknown stage 'decod' (did you mean 'decode'?)"),
        ("stages.infer.workers: [1, 2]", "the infer stage's workers are its pool_size instances"),
        ("stages.decode.threads: [1, 2]", "expected stages.<stage name>.workers or stages.<stage name>.queue"),
        ("stages.decode.workers: [0, 1]", "search.stages.decode.workers[0] = 0: expected an integer between 1 and"),
        ("stages.read.queue: [1, 2]", "the read stage is the source; it has no input queue"),
    ],
)
def test_stage_axes_are_checked(tmp_path: Path, search: str, expected: str) -> None:
    message = spec_error(tmp_path, PIPE + f"search:\n  {search}\n")
    assert message.startswith("13: search.stages.") and expected in message, message


def test_a_pipeline_needs_stages_and_a_pool_takes_no_stage_axes(tmp_path: Path) -> None:
    assert "workload.stages: missing; kind: pipeline needs an ordered list of stages" in spec_error(
        tmp_path, "workload:\n  kind: pipeline\n"
    )
    pool = "workload:\n  model: zoo:tiny\nsearch:\n  stages.decode.workers: [1, 2]\n"
    assert "search.stages.decode.workers: stages are for kind: pipeline" in spec_error(tmp_path, pool)


def test_a_valid_pipeline_file_gives_stage_axes(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(PIPE + "search:\n  stages.decode.workers: {low: 1, high: 3}\n  stages.batch.queue: [2, 8]\n")
    spec = load_spec(path)
    assert spec.axes["stages.decode.workers"].grid() == (1, 2, 3)
    assert spec.axes["stages.batch.queue"].values == (2, 8)


# ----------------------------------------------------------------------------------- a real run


def test_tuner_run_of_a_small_pipeline_through_the_cli(tmp_path: Path, tiny_model: Path) -> None:
    path = tmp_path / "pipe.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: tiny-pipeline
            workload:
              kind: pipeline
              backend: onnxruntime
              model: {tiny_model}
              synthetic: {{count: 4, width: 96, height: 64, quality: 85}}
              stages:
                - type: read
                - {{type: decode, queue: 2}}
                - type: preprocess
                - type: batch
                - {{type: infer, queue: 2}}
                - {{type: postprocess, top_k: 3}}
            search:
              batch_size: [1, 2]
              stages.decode.workers: [1, 2]
            measure: {{warmup_s: 0.3, window_s: 0.3, stable_windows: 2, stability: 0.5, max_s: 4}}
            """
        )
    )
    env = {**os.environ, "TUNER_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuner",
            "run",
            str(path),
            "--json",
            "--set",
            "batch_size=2",
            "--set",
            "stages.decode.workers=2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["params"]["batch_size"] == 2 and doc["params"]["stages.decode.workers"] == 2
    m = doc["metrics"]
    assert m["qps"] > 0 and m["latency_p50_ms"] > 0 and m["requests"] > 0
    assert m["rps"] == pytest.approx(m["qps"] / 2)
    assert m["pipeline_items_in"] == m["pipeline_items_out"] > 0
    names = ("read", "decode", "preprocess", "batch", "infer", "postprocess")
    assert m["bottleneck"] in names
    for name in names:
        assert m[f"stage.{name}.qps"] > 0 and 0 <= m[f"stage.{name}.busy"] <= 1
    assert m["stage.decode.workers"] == 2 and m["stage.decode.queue_max"] <= 2
    assert doc["applied"]["preprocess_input"] == {"layout": "nchw", "size": 32}  # the tiny model's 32x32 input
    assert list((tmp_path / "cache" / "images").iterdir())  # the synthetic set went to the cache
