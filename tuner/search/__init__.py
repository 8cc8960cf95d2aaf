"""search: the space a study searches and how it proposes configurations.

:mod:`.space` turns the spec's axes into Optuna distributions, suggestions, the grid and a config's identity;
:mod:`.rules` holds the validity rules (a config they reject is skipped with the reason, never measured);
:mod:`.samplers` builds the sampler a workload names, :mod:`.knee_sampler` the knee-seeking one.

May import: :mod:`tuner.config`, :mod:`tuner.analysis` (the knee's cost order), :mod:`tuner.trial_attrs` and the
shared top-level modules. Never study, execution or anything above.
"""
