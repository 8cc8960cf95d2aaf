"""measurement: how a figure is taken, whatever runs the workload.

:mod:`.steady_state` measures a source of completions (warm-up, windows anchored on completions, the
stability rule, the contract metrics) on an injected clock; :mod:`.process` starts a program in its own
session and watches its whole process tree (peak memory, CPU time, timeout, memory cap, failure reasons);
:mod:`.result` is what one measurement produced and how repeats fold into one result; :mod:`.gpu` samples
NVIDIA GPUs through NVML (``gpu_mem_peak_mb``, ``gpu_util``) and recognises out-of-GPU-memory failures.

May import: :mod:`tuner.errors`, :mod:`tuner.metrics`, :mod:`tuner.text` only: every layer above may use it.
"""
