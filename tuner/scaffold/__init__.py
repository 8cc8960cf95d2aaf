"""scaffold: a workload file drafted from a model file (``tuner init``, and ``tuner run|optimize MODEL``).

Owns :mod:`.draft`: the ``--shape NAME=D1,D2,...`` / ``--value NAME=X`` flags, the model's inputs read
(:func:`tuner.models.signature.read_signature`) and turned into ``inputs:`` declarations (the batch
dimension found, open dimensions settled by the flags or left as a named placeholder), a search space
sized to this machine's usable cores, a ten-minute trial budget, and the commented YAML text -- checked
with :func:`tuner.config.spec.parse_spec` before anyone sees it. Library code: it raises typed errors
(:mod:`tuner.errors`) and never prints.

May import: :mod:`tuner.config`, :mod:`tuner.models`, :mod:`tuner.plugins` (a backend's option names, by
name), :mod:`tuner.platform` (the usable cores), :mod:`tuner.errors`, :mod:`tuner.text`. Only
:mod:`tuner.cli` imports it.
"""
