"""study: Optuna studies on SQL or journal storage, and the loop that fills them.

:mod:`.storage` opens a storage (heartbeats, a lost database as one error line, passwords redacted),
:mod:`.optuna_internals` is the one module that touches Optuna's private API and table layout,
:mod:`.studies` creates or resumes the study of a workload on this platform, :mod:`.ledger` is how the
workers of one study agree who measures what and count the budget, :mod:`.spool` keeps results the storage
refused, :mod:`.objective` runs one trial and :mod:`.run` (:class:`~tuner.study.run.StudyRun`) the whole loop.

May import: :mod:`tuner.search`, :mod:`tuner.execution`, :mod:`tuner.analysis`, :mod:`tuner.config` and the
shared top-level modules (:mod:`tuner.trial_attrs` is the trial attribute schema). Never report, export or cli.
"""
