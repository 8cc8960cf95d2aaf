"""``kind: command``: an external program is the whole workload (``benchmark_app``, ``trtexec``, a team's tool).

:mod:`.kind` is the :class:`~tuner.workloads.base.WorkloadKind` (checks, job, run); :mod:`.template`
validates and substitutes the argv placeholders (never through a shell); :mod:`.parse` reads the program's
figures back (JSON lines or regexes with a small arithmetic expression); :mod:`.job` builds the job and runs
the program under :func:`tuner.measurement.process.run_process`.
"""
