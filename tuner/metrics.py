"""Metric names (a contract: these names, these units) and their meaning."""

from __future__ import annotations

#: name -> one-line description (units in the name or the text)
METRICS: dict[str, str] = {
    "qps": "samples per second = completed requests x batch / measured seconds",
    "rps": "requests per second = completed requests / measured seconds",
    "latency_p50_ms": "median request latency, submission to completion (ms)",
    "latency_p90_ms": "90th percentile request latency (ms)",
    "latency_p95_ms": "95th percentile request latency (ms)",
    "latency_p99_ms": "99th percentile request latency (ms)",
    "latency_mean_ms": "mean request latency (ms)",
    "latency_max_ms": "slowest request (ms)",
    "peak_rss_mb": "peak resident memory of the trial's whole process tree (MiB)",
    "cpu_util": "mean busy fraction of all cores during the measured part (0..1)",
    "load_s": "model load and compile time of the whole pool (s)",
    "first_request_ms": "latency of the first request after load (ms)",
    "measured_s": "length of the measured part, warm-up excluded (s)",
    "requests": "requests completed in the measured part",
    "stable": "whether the stability rule held (bool)",
    "window_qps": "qps of each measured window (list)",
    "qps_ci_low": "lower end of the 95 % confidence interval of qps (samples/s; null when unknown)",
    "qps_ci_high": "upper end of the 95 % confidence interval of qps (samples/s; null when unknown)",
    "qps_cv": "coefficient of variation of the windows' qps (one run) or of the runs' qps (repeats); null when unknown",
    "server_qps": "load.scenario server: the highest Poisson arrival rate (samples/s) at which LoadGen measured the "
    "load.percentile latency within load.latency_ms (minimum duration and queries met); 0 when no rate tried did",
    "server_latency_ms": "load.scenario server: LoadGen's load.percentile latency at server_qps (ms)",
    "server_latency_p50_ms": "load.scenario server: LoadGen's median latency at server_qps (ms)",
    "loadgen_valid": "load.scenario server/offline: 1 when LoadGen called the run at the reported rate VALID (early "
    "stopping included), else 0",
    "server_runs": "load.scenario server: LoadGen runs the peak search made",
    "offline_qps": "load.scenario offline: LoadGen's Offline samples per second",
    "gpu_mem_peak_mb": "NVIDIA GPU (NVML) only: peak GPU memory of the trial's processes, all GPUs (MiB; the "
    "device-wide rise over the trial's start where NVML has no per-process figures)",
    "gpu_util": "NVIDIA GPU (NVML) only: mean share of time a kernel ran on the trial's GPU(s) during the measured "
    "part (0..1)",
    "accuracy_sqnr_db": "accuracy guard: 10 log10(sum ref^2 / sum (ref - out)^2) of the output against the fp32 "
    "reference on the reference set (dB; 200 = identical)",
    "accuracy_nmse": "accuracy guard: sum (ref - out)^2 / sum ref^2 against the fp32 reference (0 = identical)",
    "accuracy_top1_agreement": "accuracy guard, classifier output: share of samples whose arg-max class is the fp32 "
    "reference's (0..1)",
    "accuracy_top1": "accuracy guard with accuracy.labels: share of samples classified as labelled (0..1)",
    "accuracy_top1_drop": "accuracy guard with accuracy.labels: fp32 top-1 minus this config's top-1 (fraction "
    "points; 0.01 = one point lost)",
}

#: metrics only a LoadGen scenario measures (``load.scenario`` server / offline); a closed-loop trial has none
LOADGEN_METRICS: tuple[str, ...] = (
    "server_qps",
    "server_latency_ms",
    "server_latency_p50_ms",
    "loadgen_valid",
    "server_runs",
    "offline_qps",
)

#: metrics only the accuracy guard measures (a trial of kind pool with the guard on: ``accuracy:``, a precision
#: option, or one of these in objectives / constraints; tuner.workloads.accuracy_guard)
ACCURACY_METRICS: tuple[str, ...] = (
    "accuracy_sqnr_db",
    "accuracy_nmse",
    "accuracy_top1_agreement",
    "accuracy_top1",
    "accuracy_top1_drop",
)

#: metrics measured only where NVML sees an NVIDIA GPU (tuner.measurement.gpu); a trial elsewhere has none
GPU_METRICS: tuple[str, ...] = ("gpu_mem_peak_mb", "gpu_util")

#: what every closed-loop trial of a worker-child kind measures (the rest of the contract)
CLOSED_LOOP_METRICS: tuple[str, ...] = tuple(
    m for m in METRICS if m not in LOADGEN_METRICS + ACCURACY_METRICS + GPU_METRICS
)

#: metrics that can be objectives or constraints (numeric scalars)
NUMERIC_METRICS: tuple[str, ...] = tuple(m for m in METRICS if m not in ("stable", "window_qps"))

#: the four axes every workload has; missing ones are fixed at 1
CORE_AXES: tuple[str, ...] = ("pool_size", "threads", "requests_per_sync", "batch_size")
