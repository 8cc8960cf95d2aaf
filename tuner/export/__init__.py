"""export: a measured configuration of a study as a deployable file, with its provenance.

:mod:`.select` picks the trial (``best``, ``knee``, ``trial:N``), :mod:`.formats` renders one of its formats
(:mod:`.generic_formats`, :mod:`.runtime_formats`, :mod:`.triton`), :mod:`.provenance` writes and reads the
record, :mod:`.verify` compares a fresh measurement with it. Library code: no printing, typed errors only.

May import: analysis and report records, :mod:`tuner.study` (trial attributes), :mod:`tuner.backends` (their
option models, to write runtime configs), the shared top-level modules. Never :mod:`tuner.cli`.
"""
