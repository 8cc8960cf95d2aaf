"""``sim``: a device twin — a *model* of an accelerator box, not a measurement of one.

Nothing here runs a neural network. Each instance really blocks (``time.sleep`` and lock waits, which
release the GIL) for the time the model says a request would take, so the real pool workload and the
real measurement code run on it unchanged and produce a saturation curve with a known knee in
seconds. Use it for tests, demos and search benchmarks; never report its numbers as hardware results.

The model
---------
A process holds one :class:`SimBackend` (the trial child builds one per trial) and it owns the shared
resources, created in its ``__init__``:

* ``host_cpus`` host CPU slots (a FIFO counting semaphore that can take several slots at once);
* ``units`` execution units (NPU cores), each a FIFO semaphore of one slot.

Instance ``i`` of the pool is pinned to unit ``i % units``. One request of ``b`` samples on an
instance opened with ``t`` threads does, in order:

1. **host work** — pre/post-processing and the driver call, serialised per runtime (a per-instance
   lock: a runtime's context does one such call at a time). It holds ``k = min(t, host_cpus)`` host
   slots for ``H = host_overhead_ms * ((1 - p) + p / k)`` ms, ``p = thread_speedup`` (Amdahl's parallel
   fraction; extra threads occupy their cores for the whole call, as spin-waiting thread pools do).
2. **device work** — holds its unit for ``D = service_ms * b ** (1 - batch_efficiency)`` ms
   (``batch_efficiency`` 0: a batch costs ``b`` single samples; 1: a batch costs one sample).

Each of ``H`` and ``D`` is multiplied, per request, by an independent lognormal factor with mean 1 and
relative standard deviation ``noise`` (per-instance RNG seeded with ``seed + index``).
``requests_per_sync > 1`` lets one runtime overlap the host work of one request with the device work of
another (the default :meth:`Instance.submit` runs ``infer`` on that many threads).

Without queueing losses the throughput (samples/s) is bounded by (see :func:`bound_qps`)::

    runtime r:  min(rps * b / (H + D), b / H)        # its own loop; host work is serial per runtime
    unit u:     min(sum of its runtimes, b / D)      # a unit serves one batch at a time
    host:       host_cpus / k * b / H                # all host slots busy
    qps       = min(sum over units, host)

Defaults, derived from the RK3588 MobileNet-v1 pool (3 NPU cores, 8 CPU cores; field notes in
DESIGN.md: 1 runtime 7.73 ms/img, 3 -> 2.31, 6 -> 1.52, 9 -> 1.19, 12 -> 1.13, 15 -> 1.09, "beyond 9
diminishing returns"). With ``threads = batch = requests_per_sync = 1``:

* one runtime alone: ``H + D = 7.73 ms`` -> 129 qps;
* the plateau is the three units busy: ``3 / D``; ``D = 3.2 ms`` gives 938 qps (1.07 ms/img, notes:
  917 qps, 1.09 ms/img), so ``H = 4.53 ms``. One runtime keeps its unit 3.2 / 7.73 = 41 % busy;
* pool ``n`` puts ``n // 3`` or ``n // 3 + 1`` runtimes on each unit, and a unit is saturated from 3
  runtimes on (``3 * D = 9.6 > H + D``). Bound per pool size:
  1: 129, 3: 388, 6: 776 (0.83 of the plateau), 7: 829 (0.88), 8: 882 (0.94), 9..15: 938.
  So with the 10 % knee tolerance on the grid of the notes (1, 3, 6, 9, 12, 15) the knee is pool 9
  (pool 6 reaches only 83 %); on every integer it is pool 8. ``D`` trades the plateau against these
  margins: ``D = 3.27`` hits 917 qps exactly but puts pool 7 at 0.897, right on the 10 % edge.
* host demand at the plateau is ``938 * 4.53 ms = 4.3`` cores < ``host_cpus = 8``, so at one thread
  the host never binds; with more threads (``k`` slots per call) or smaller ``host_cpus`` it does.

What the model does not reproduce: the notes' pool 3 is slightly super-linear (433 qps > 3 x 129) and
their climb from 9 to 15 is gradual (840 -> 917); here pool 3 is exactly linear and the plateau is
flat from 9 (noise and real sleep overshoot round the corner a little). Real sleeps overshoot by tens
of microseconds, so measured rates sit a few percent under :func:`bound_qps`.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tuner.backends.base import Backend, Instance, RuntimeConfig

#: bumped whenever the model's behaviour changes (recorded in the platform fingerprint)
SIM_MODEL_VERSION = "1"


class SimOptions(BaseModel):
    """Parameters of the device twin. Every field can be fixed or searched like any other option."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    units: int = Field(3, ge=1, description="execution units (NPU cores); instance i runs on unit i % units")
    host_cpus: int = Field(8, ge=1, description="host CPU cores shared by every instance's host work")
    service_ms: float = Field(3.2, ge=0, description="device time per sample at batch 1 on one unit")
    batch_efficiency: float = Field(
        0.25, ge=0, le=1, description="device time of a batch = service_ms * batch ** (1 - batch_efficiency)"
    )
    host_overhead_ms: float = Field(
        4.53, ge=0, description="host work per request (pre/post-processing, driver call), serial per runtime"
    )
    thread_speedup: float = Field(
        0.5, ge=0, le=1, description="Amdahl parallel fraction of the host work that threads shorten"
    )
    memory_mb_per_runtime: float = Field(8.0, ge=0, description="memory allocated and touched per instance")
    noise: float = Field(0.02, ge=0, le=1, description="relative std-dev of lognormal noise on each time")
    seed: int = Field(0, description="instance i draws its noise from seed + i")
    load_ms: float = Field(20.0, ge=0, description="simulated load time per instance")


def _host_slots(options: SimOptions, threads: int) -> int:
    return max(1, min(int(threads), options.host_cpus))


def host_ms(options: SimOptions, threads: int) -> float:
    """Modelled host time of one request (ms) at ``threads`` threads, before noise."""
    k = _host_slots(options, threads)
    p = options.thread_speedup
    return options.host_overhead_ms * ((1.0 - p) + p / k)


def device_ms(options: SimOptions, batch_size: int) -> float:
    """Modelled device time of one batch (ms), before noise."""
    return options.service_ms * max(1, int(batch_size)) ** (1.0 - options.batch_efficiency)


def bound_qps(
    options: SimOptions | Mapping[str, Any] | None = None,
    *,
    pool_size: int,
    threads: int = 1,
    batch_size: int = 1,
    requests_per_sync: int = 1,
) -> float:
    """Throughput bound (samples/s) of the model from its bottlenecks, without queueing losses.

    Exact for ``noise = 0`` and ``requests_per_sync = 1`` up to sleep overshoot; an upper bound
    otherwise (a worker that waits for all its requests before the next submit loses some overlap).
    """
    if not isinstance(options, SimOptions):
        options = SimOptions.model_validate(dict(options or {}))
    b = max(1, int(batch_size))
    h = host_ms(options, threads) / 1000.0
    d = device_ms(options, b) / 1000.0
    k = _host_slots(options, threads)
    per_runtime = requests_per_sync * b / (h + d) if h + d > 0 else math.inf
    if h > 0:
        per_runtime = min(per_runtime, b / h)
    total = 0.0
    for unit in range(options.units):
        n = len(range(unit, pool_size, options.units))
        if n:
            total += min(n * per_runtime, b / d if d > 0 else math.inf)
    if h > 0:
        total = min(total, options.host_cpus / k * b / h)
    return total


class _Slots:
    """A FIFO counting semaphore whose ``acquire(n)`` takes ``n`` slots at once (no partial holds)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free = capacity
        self._mutex = threading.Lock()
        self._waiters: deque[tuple[int, threading.Lock]] = deque()

    def acquire(self, n: int = 1) -> None:
        if n > self.capacity:
            raise ValueError(f"cannot take {n} of {self.capacity} slots")
        with self._mutex:
            if not self._waiters and self._free >= n:
                self._free -= n
                return
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append((n, gate))
        gate.acquire()  # released by release() once the slots are ours

    def release(self, n: int = 1) -> None:
        with self._mutex:
            self._free += n
            while self._waiters and self._waiters[0][0] <= self._free:
                k, gate = self._waiters.popleft()
                self._free -= k
                gate.release()


class SimInstance(Instance):
    """One modelled runtime, pinned to one unit of its backend."""

    def __init__(self, backend: SimBackend, config: RuntimeConfig) -> None:
        super().__init__(config)
        opts = backend.options
        self._opts = opts
        self.unit = config.index % opts.units
        self._unit_slots = backend._units[self.unit]
        self._host = backend._host
        self._host_k = _host_slots(opts, config.threads)
        self._host_s = host_ms(opts, config.threads) / 1000.0
        self._device_s = device_ms(opts, config.batch_size) / 1000.0
        self._runtime_lock = threading.Lock()  # host work is serial per runtime
        self._sleep = backend._sleep
        self._rng = random.Random(opts.seed + config.index)
        self._rng_lock = threading.Lock()
        sigma = math.sqrt(math.log1p(opts.noise**2))
        self._sigma, self._mu = sigma, -0.5 * sigma * sigma
        self._count_lock = threading.Lock()
        #: requests inside :meth:`infer` right now / at most so far (test-visible)
        self.in_flight = 0
        self.max_in_flight = 0
        #: completed requests
        self.requests = 0
        nbytes = int(opts.memory_mb_per_runtime * 1024 * 1024)
        self._memory: np.ndarray | None = np.ones(nbytes, dtype=np.uint8) if nbytes else None
        if opts.load_ms:
            self._sleep(opts.load_ms / 1000.0)

    def _factor(self) -> float:
        if not self._sigma:
            return 1.0
        with self._rng_lock:
            return self._rng.lognormvariate(self._mu, self._sigma)

    def prepare_inputs(self) -> int:
        return self.config.batch_size

    def infer(self, inputs: Any) -> int:
        with self._count_lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            host_s = self._host_s * self._factor()
            device_s = self._device_s * self._factor()
            with self._runtime_lock:
                self._host.acquire(self._host_k)
                try:
                    self._sleep(host_s)
                finally:
                    self._host.release(self._host_k)
            self._unit_slots.acquire()
            try:
                self._sleep(device_s)
            finally:
                self._unit_slots.release()
        finally:
            with self._count_lock:
                self.in_flight -= 1
                self.requests += 1
        return self.config.batch_size

    def applied_options(self) -> dict[str, Any]:
        opts = self._opts
        return {
            "model": f"sim-{SIM_MODEL_VERSION}",
            "unit": self.unit,
            "units": opts.units,
            "host_cpus": opts.host_cpus,
            "threads": self.config.threads,
            "host_slots_per_request": self._host_k,
            "batch_size": self.config.batch_size,
            "requests_per_sync": self.config.requests_per_sync,
            "host_ms_per_request": round(self._host_s * 1000.0, 6),
            "device_ms_per_batch": round(self._device_s * 1000.0, 6),
            "memory_mb": opts.memory_mb_per_runtime,
            "noise": opts.noise,
            "seed": opts.seed + self.config.index,
            "max_in_flight": self.max_in_flight,
        }

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._memory = None


class SimBackend(Backend):
    """The device twin (see the module docstring). One object per process owns the shared slots.

    ``sleep`` is how every instance of it blocks for its modelled times (load, host work, device work);
    tests pass a fake one to observe or schedule the model's time instead of waiting for it.
    """

    name = "sim"
    options_model = SimOptions
    needs_model = False
    #: a modelled device: every wait is a sleep, and its ``host_cpus`` model the twin's own host, not this
    #: one, so no host-thread count (``host_threads`` is None) and no oversubscription rule
    cpu_bound = False

    def __init__(
        self,
        model: Path | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(model, options)
        self._sleep = sleep
        opts: SimOptions = self.options  # type: ignore[assignment]
        self._host = _Slots(opts.host_cpus)
        self._units = [_Slots(1) for _ in range(opts.units)]

    def open(self, config: RuntimeConfig) -> SimInstance:
        return SimInstance(self, config)

    def versions(self) -> dict[str, str]:
        return {"sim": SIM_MODEL_VERSION}
