"""GPU telemetry with NVML (nvidia-ml-py, ``import pynvml``): the trial's GPU memory and how busy its GPU was.

The parent samples NVML while it watches the trial's process tree (:func:`tuner.execution.child.run_job` hands
:meth:`GpuWatch.sample` to :func:`tuner.measurement.process.run_process` as its ``on_poll``), and marks the
measured part at the child's ``measure_start`` / ``measure_end`` events, as it does for ``cpu_util``. It
reads, for every GPU: the memory each compute process uses (``nvmlDeviceGetComputeRunningProcesses``), the
device's used memory (``nvmlDeviceGetMemoryInfo``) and its utilization (``nvmlDeviceGetUtilizationRates``:
the share of the last sample period in which a kernel ran).

The figures (:func:`gpu_metrics`, a pure function of the samples):

* ``gpu_mem_peak_mb``: the peak over the samples of the memory the trial's processes use on all GPUs. Where
  NVML never lists a process of the tree (no per-process accounting: a container's PID namespace, a driver
  that reports no per-process figure), the device-wide fallback: the peak rise of the GPUs' used memory over
  what they used when the trial started (another program's allocations in the meantime count too).
* ``gpu_util``: the mean utilization, over the samples taken during the measured part only, of the GPUs the
  trial's processes ran on (every GPU when none was seen), 0..1.

``applied["gpu_telemetry"]`` says which memory source was used and how many samples each figure has.

Without a GPU nothing is measured and nothing fails: no nvidia-ml-py, or an ``nvmlInit`` that fails (no
driver), gives no GPU metrics (a trial simply lacks them) and a one-line reason (:func:`nvml_unavailable`),
which :func:`require_gpu_metrics` turns into the clear error of a workload that constrains or optimises a
GPU metric on a machine that cannot measure it.

A config whose GPU memory exceeds the device fails where ONNX Runtime (or CUDA, cuDNN, cuBLAS, TensorRT)
says an allocation failed; :func:`classify_gpu_oom` recognises their messages (:data:`GPU_OOM_PATTERNS`) and
makes the failed trial an ``oom`` one whose reason says so. The study goes on.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tuner.errors import SpecError
from tuner.measurement.process import Failure
from tuner.metrics import GPU_METRICS

#: the one line a missing nvidia-ml-py gives
NVML_EXTRA = "GPU metrics need nvidia-ml-py: pip install 'tuner[gpu]'"


@dataclass(frozen=True)
class DeviceReading:
    """One GPU at one sample."""

    index: int
    #: the device's used memory (MiB), whoever uses it
    used_mb: float
    #: share of the last sample period a kernel ran (0..1); None when NVML does not say
    util: float | None
    #: pid -> the memory that compute process uses on this GPU (MiB; None: NVML gives no figure)
    processes: Mapping[int, float | None]


@dataclass(frozen=True)
class GpuSample:
    """Every GPU at one moment, with the trial's process tree then."""

    t: float
    pids: frozenset[int]
    devices: tuple[DeviceReading, ...]


def _tree_memory(sample: GpuSample) -> tuple[float, set[int]]:
    """(MiB the tree's processes use on all GPUs, the GPUs where NVML listed one of them with a figure)."""
    total, seen = 0.0, set()
    for dev in sample.devices:
        for pid, used in dev.processes.items():
            if pid in sample.pids and used is not None:
                total += used
                seen.add(dev.index)
    return total, seen


def gpu_metrics(
    samples: Sequence[GpuSample],
    *,
    baseline_mb: Mapping[int, float],
    window: tuple[float, float] | None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """``gpu_mem_peak_mb`` and ``gpu_util`` of a trial's samples, and how they were taken (see the docstring).

    ``baseline_mb``: each GPU's used memory when the trial started (for the device-wide fallback);
    ``window``: the measured part ``(start, end)`` on the samples' clock (None: unknown, no ``gpu_util``).
    No samples: no metrics.
    """
    if not samples:
        return {}, {"samples": 0}
    per_sample = [_tree_memory(s) for s in samples]
    trial_devices = set().union(*(seen for _, seen in per_sample))
    info: dict[str, Any] = {"samples": len(samples)}
    if trial_devices:
        peak = max(total for total, _ in per_sample)
        info["memory_source"] = "process"
    else:
        peak = max(sum(max(0.0, d.used_mb - baseline_mb.get(d.index, d.used_mb)) for d in s.devices) for s in samples)
        info["memory_source"] = "device"
    metrics = {"gpu_mem_peak_mb": float(peak)}
    if window is not None:
        t0, t1 = window
        utils = []
        for s in samples:
            if not t0 <= s.t <= t1:
                continue
            values = [
                d.util for d in s.devices if d.util is not None and (not trial_devices or d.index in trial_devices)
            ]
            if values:
                utils.append(sum(values) / len(values))
        info["util_samples"] = len(utils)
        metrics["gpu_util"] = sum(utils) / len(utils) if utils else math.nan
    info["devices"] = sorted(trial_devices) if trial_devices else [d.index for d in samples[0].devices]
    return metrics, info


# ------------------------------------------------------------------------------------------ NVML


def open_nvml() -> tuple[Any | None, str | None]:
    """``(pynvml, None)`` with NVML initialised, or ``(None, the reason)``: never raises.

    The caller shuts it down (``pynvml.nvmlShutdown()``) when done.
    """
    try:
        import pynvml
    except ImportError:
        return None, NVML_EXTRA
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        return None, f"NVML did not start ({err}): no NVIDIA driver or GPU here"
    except OSError as err:  # a broken library
        return None, f"NVML did not start ({err})"
    return pynvml, None


def nvml_unavailable() -> str | None:
    """Why GPU metrics cannot be measured here (one line), or None when NVML runs and sees a GPU."""
    nvml, reason = open_nvml()
    if nvml is None:
        return reason
    try:
        if nvml.nvmlDeviceGetCount() < 1:
            return "NVML sees no GPU"
    except nvml.NVMLError as err:
        return f"NVML cannot list the GPUs ({err})"
    finally:
        nvml.nvmlShutdown()
    return None


def require_gpu_metrics(used: Iterable[tuple[str, str]], *, where: str, reason: str | None) -> None:
    """A workload constraining or optimising a GPU metric where none can be measured: a :class:`SpecError`.

    ``used``: ``(key, metric)`` pairs, e.g. ``("constraints.gpu_mem_peak_mb", "gpu_mem_peak_mb")``; ``reason``:
    :func:`nvml_unavailable` (None: GPU metrics are measured, nothing to say).
    """
    if reason is None:
        return
    for key, metric in used:
        if metric in GPU_METRICS:
            raise SpecError(
                f"{where}: {key}: {metric} is measured only on an NVIDIA GPU through NVML, and this machine cannot: "
                f"{reason}"
            )


class NvmlReader:
    """Reads one :class:`GpuSample` from an initialised ``pynvml``."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]

    def read(self, pids: frozenset[int], now: float) -> GpuSample:
        nvml = self.nvml
        devices = []
        for index, handle in enumerate(self.handles):
            used_mb = nvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
            try:
                util: float | None = nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
            except nvml.NVMLError:
                util = None
            processes: dict[int, float | None] = {}
            try:
                for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    used = getattr(proc, "usedGpuMemory", None)
                    processes[int(proc.pid)] = None if used is None else used / 2**20
            except nvml.NVMLError:
                pass
            devices.append(DeviceReading(index, used_mb, util, processes))
        return GpuSample(now, pids, tuple(devices))

    def baseline(self) -> dict[int, float]:
        return {i: self.nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20 for i, h in enumerate(self.handles)}


class GpuWatch:
    """The samples of one trial: :meth:`sample` at every poll, :meth:`mark` at the measured part's edges."""

    def __init__(self, reader: NvmlReader, clock: Callable[[], float] = time.monotonic) -> None:
        self.reader = reader
        self.clock = clock
        self.baseline = reader.baseline()
        self.samples: list[GpuSample] = []
        self.marks: dict[str, float] = {}
        self.errors = 0
        self._lock = threading.Lock()  # the poll loop samples, the event reader thread marks

    @classmethod
    def start(cls) -> GpuWatch | None:
        """A watch on every GPU, or None where NVML cannot run or sees no GPU (no metrics then, no error)."""
        nvml, _reason = open_nvml()
        if nvml is None:
            return None
        try:
            reader = NvmlReader(nvml)
            if reader.handles:
                return cls(reader)
        except nvml.NVMLError:
            pass
        nvml.nvmlShutdown()
        return None

    def sample(self, pids: Iterable[int]) -> None:
        try:
            reading = self.reader.read(frozenset(pids), self.clock())
        except self.reader.nvml.NVMLError:
            self.errors += 1
            return
        with self._lock:
            self.samples.append(reading)

    def mark(self, name: str, pids: Iterable[int] = ()) -> None:
        """``measure_start`` / ``measure_end``: the measured part's edge (with a sample at it)."""
        self.sample(pids)
        with self._lock:
            self.marks[name] = self.clock()

    def finish(self) -> tuple[dict[str, float], dict[str, Any]]:
        """The trial's GPU metrics and how they were taken; shuts NVML down."""
        with self._lock:
            samples = list(self.samples)
            marks = dict(self.marks)
        try:
            self.reader.nvml.nvmlShutdown()
        except self.reader.nvml.NVMLError:
            pass
        window = (
            (marks["measure_start"], marks["measure_end"]) if {"measure_start", "measure_end"} <= set(marks) else None
        )
        metrics, info = gpu_metrics(samples, baseline_mb=self.baseline, window=window)
        if self.errors:
            info["read_errors"] = self.errors
        return metrics, info


# ------------------------------------------------------------------------------------------ out of GPU memory

#: how ONNX Runtime, CUDA, cuDNN, cuBLAS and TensorRT say a GPU allocation failed (texts of their real messages)
GPU_OOM_PATTERNS: tuple[tuple[str, str], ...] = (
    # cuda_call.cc: "CUDA failure 2: out of memory ; GPU=0 ; hostname=... ; expr=cudaMalloc(...)"
    (r"CUDA failure 2: out of memory", "CUDA out of memory"),
    (r"cudaErrorMemoryAllocation", "CUDA out of memory"),
    # bfc_arena.cc: "BFCArena::AllocateRawInternal ... Failed to allocate memory for requested buffer of size N"
    (r"Failed to allocate memory for requested buffer of size \d+", "ONNX Runtime's GPU arena could not allocate"),
    # bfc_arena.cc with gpu_mem_limit: "Available memory of 0 is smaller than requested bytes of N"
    (r"Available memory of \d+ is smaller than requested bytes of \d+", "over the arena's gpu_mem_limit"),
    # "CUBLAS failure 3: CUBLAS_STATUS_ALLOC_FAILED ; GPU=0 ; ... expr=cublasCreate(&cublas_handle_);"
    (r"CUBLAS_STATUS_ALLOC_FAILED", "cuBLAS could not allocate"),
    (r"CUDNN_STATUS_ALLOC_FAILED", "cuDNN could not allocate"),
    # TensorRT: "Cuda Error in allocate: 2 (out of memory)", "Error Code 1: Cuda Runtime (out of memory)",
    # "Requested amount of GPU memory (N bytes) could not be allocated", "Error Code 2: OutOfMemory"
    (r"Cuda Error in allocate: 2 \(out of memory\)", "TensorRT out of GPU memory"),
    (r"Cuda Runtime \(out of memory\)", "TensorRT out of GPU memory"),
    (r"Requested amount of GPU memory \(\d+ bytes\) could not be allocated", "TensorRT out of GPU memory"),
    (r"Error Code 2: OutOfMemory", "TensorRT out of GPU memory"),
)


def gpu_oom_reason(text: str) -> str | None:
    """What in ``text`` (an error message, a stderr tail) says a GPU allocation failed, or None."""
    for pattern, what in GPU_OOM_PATTERNS:
        found = re.search(pattern, text)
        if found:
            return f"{what}: {found.group(0)}"
    return None


def classify_gpu_oom(failure: Failure) -> Failure:
    """A failed trial whose error (or, failing that, stderr) says the GPU ran out of memory becomes an ``oom``
    failure whose message says so; any other failure is returned as it is."""
    if failure.kind not in ("error", "crash", "signal", "no-result"):
        return failure
    reason = gpu_oom_reason(failure.message) or gpu_oom_reason(failure.stderr_tail)
    if reason is None:
        return failure
    return Failure(
        "oom",
        f"out of GPU memory ({reason}): {failure.message}",
        failure.exit_code,
        failure.signal,
        failure.stderr_tail,
    )
