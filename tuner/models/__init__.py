"""models: the offline model zoo (graphs built with the onnx helper, cached atomically) and model references.

:mod:`.graphs` builds the zoo graphs, :mod:`.macs` counts their multiply-accumulates, :mod:`.zoo` resolves
``zoo:<name>`` and model paths and checks model files.

May import: :mod:`tuner.errors` only.
"""
