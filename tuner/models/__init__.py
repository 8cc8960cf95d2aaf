"""models: the offline model zoo (graphs built with the onnx helper, cached atomically) and model references.

:mod:`.graphs` builds the zoo graphs, :mod:`.macs` counts their multiply-accumulates, :mod:`.zoo` resolves
``zoo:<name>`` and model paths and checks model files. :mod:`.train_digits` trains ``zoo:digits``;
:mod:`.reference_set` makes the accuracy guard's reference sets and fp32 reference outputs (cached);
:mod:`.precision` builds and caches precision variants (int8, fp16) of a model.

May import: :mod:`tuner.errors`, :mod:`tuner.text` and :mod:`tuner.config.inputs` (the data forms of ``inputs:``,
which :mod:`.precision` validates calibration data with; it imports nothing of tuner).
"""
