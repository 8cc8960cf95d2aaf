"""Backends: the registry and the protocol (see :mod:`tuner.backends.base`)."""

from tuner.backends.base import Backend, DoneCallback, Instance, NoOptions, RuntimeConfig
from tuner.backends.registry import available_backends, get_backend

__all__ = [
    "Backend",
    "DoneCallback",
    "Instance",
    "NoOptions",
    "RuntimeConfig",
    "available_backends",
    "get_backend",
]
