"""config: the workload file -> a validated, frozen :class:`~tuner.config.spec.Spec`.

Owns the YAML contract: the pydantic models of each section (:mod:`.models`, ``extra="forbid"``), the
axes of the search space (:mod:`.axes`), the line map and one-line error messages that name the file,
the line, the key, the value and the nearest valid key (:mod:`.lines`), the per-kind checks
(:mod:`.checks`), loading and hashing (:mod:`.spec`) and the one storage-URL rule for ``study.storage`` and
``--storage`` (:mod:`.storage_url`).

May import: :mod:`tuner.errors`, :mod:`tuner.metrics`, :mod:`tuner.plugins` (to find a workload kind's or a
backend's own checks by name). Imports no execution, search or study code.
"""
