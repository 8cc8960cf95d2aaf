"""export: a measured configuration of a study as a deployable file, with its provenance.

:mod:`.select` picks the trial (``best``, ``knee``, ``trial:N``), :mod:`.formats` renders one of its formats
(:mod:`.generic_formats`, :mod:`.runtime_formats`, :mod:`.triton`), :mod:`.model_io` rebuilds the shapes the
trial fed (the workload's ``inputs:`` at its values, checked against the model) and reads the model's outputs,
:mod:`.provenance` writes and reads the record, :mod:`.verify` compares a fresh measurement with it. Library
code: no printing, typed errors only.

May import: analysis and report records, :mod:`tuner.study` (trial attributes), :mod:`tuner.backends` (their
option models, to write runtime configs), :mod:`tuner.config` (the workload file's models and its inputs
plan), :mod:`tuner.models` (signatures, the feeding rules, zoo references), the shared top-level modules.
Never :mod:`tuner.cli`.
"""
