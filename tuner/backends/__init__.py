"""backends: runtime families (ONNX Runtime, OpenVINO, the sim twin, plugins) behind one small protocol.

:mod:`.base` is the protocol a plugin implements (:class:`Backend`, :class:`Instance`, :class:`RuntimeConfig`),
:mod:`.registry` finds backends by name through the ``tuner.backends`` entry-point group. This package's face
is the plugin author's API: ``from tuner.backends import Backend, Instance, RuntimeConfig``.

May import: :mod:`tuner.errors`, :mod:`tuner.plugins`, :mod:`tuner.models` (input signatures and feeds) and
the shared top-level modules; never a workload, the execution or anything above.
"""

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
