"""Typed errors. Library code raises these; only the CLI turns them into messages and exit codes."""

from __future__ import annotations


class TunerError(Exception):
    """Base of every error tuner raises on purpose. ``str(err)`` is a complete, one-line message."""

    exit_code: int = 1


class SpecError(TunerError):
    """A workload file (or a ``--set`` override) is invalid. Names file, key path, line, value, expectation."""

    exit_code = 2


class ModelError(TunerError):
    """A model could not be found, built or loaded."""

    exit_code = 2


class BackendError(TunerError):
    """A backend is unknown, misconfigured, or failed while loading or running."""

    exit_code = 2


class TrialFailed(TunerError):
    """A trial's child process crashed, hung, ran out of memory or returned no result."""


class StorageError(TunerError):
    """A study storage could not be opened, read or written."""

    exit_code = 2


class StudyError(TunerError):
    """A study cannot be created, resumed or continued (changed spec, repeated failures, ...)."""

    exit_code = 2


class InputError(ModelError):
    """A model input cannot be fed as the workload declares it (name, rank, dtype, open dimension, data)."""
