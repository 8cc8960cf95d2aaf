"""Workload kinds: what one trial does (``pool``, ``pipeline``, ``command``, and kinds other packages register).

Each kind is a :class:`~tuner.workloads.base.WorkloadKind` registered by name in the ``tuner.workloads``
entry-point group (:mod:`.registry`, through :mod:`tuner.plugins`). May import :mod:`tuner.config` (a kind
checks its part of the file with a :class:`tuner.config.checks.CheckContext`), :mod:`tuner.measurement`,
:mod:`tuner.backends`, :mod:`tuner.models`, :mod:`tuner.plugins`, :mod:`tuner.errors`, :mod:`tuner.metrics`,
:mod:`tuner.analysis.accuracy` (the accuracy guard's pure comparisons);
never :mod:`tuner.execution` (which starts the trial's child and calls the kind).
"""
