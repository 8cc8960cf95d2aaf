"""Samplers by name: ``tpe`` (default), ``grid``, ``random``, ``gp``, ``nsga2`` and ``knee``."""

from __future__ import annotations

import optuna
from optuna.samplers import BaseSampler

from tuner.config.spec import Spec
from tuner.errors import StudyError
from tuner.search.knee_sampler import KneeSampler
from tuner.search.space import distributions, grid

__all__ = ["make_sampler"]


def make_sampler(spec: Spec, *, seed: int | None = None) -> BaseSampler:
    """The sampler named by ``study.sampler``, seeded (same seed -> same order).

    Constraints reach the samplers through ``Trial.set_constraint`` (the runner sets one value per
    constraint, <= 0 feasible), so the constraint-aware samplers (TPE, NSGA-II, GP) learn what is
    infeasible.
    """
    name = spec.study.sampler
    seed = spec.study.seed if seed is None else seed
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        space = grid(spec)
        return optuna.samplers.GridSampler(space or {"_": [0]}, seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)
    if name == "gp":
        try:
            import scipy  # noqa: F401
            import torch  # noqa: F401
        except ImportError:
            raise StudyError(
                "sampler 'gp' needs torch and scipy, which are not installed: pip install 'tuner[gp]'"
            ) from None
        return optuna.samplers.GPSampler(seed=seed)
    if name == "knee":
        fallback = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=0)
        fixed = {n: a.default for n, a in spec.axes.items() if a.kind == "fixed"}
        return KneeSampler(grid(spec), fixed, distributions(spec), spec.knee.tolerance, fallback, seed=seed)
    raise StudyError(f"unknown sampler {name!r}")
