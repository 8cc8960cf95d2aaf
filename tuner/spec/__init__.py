"""Workload file -> validated, frozen spec.

The YAML is read with ``yaml.safe_load`` semantics, validated by pydantic v2 models with
``extra="forbid"``, and every error is turned into one line that names the file, the line, the key
path, the bad value, what was expected and, for an unknown key, the nearest valid key.

The package is split by responsibility; every name is re-exported here, so import from ``tuner.spec``:

* ``_models``: the pydantic models of the file's sections,
* ``_axes``: :class:`Axis`, axis-value checks and the ``search`` section -> axes,
* ``_errors``: the YAML line map, pydantic error formatting and nearest-key hints,
* ``_checks``: the backend, pipeline and command checks,
* ``_load``: :func:`load_spec` / :func:`parse_spec`, :class:`Spec`, the spec hash and storage URLs.
"""

from tuner.spec._axes import INT_AXES, MAX_AXIS_VALUE, Axis, check_axis_value
from tuner.spec._errors import MAX_YAML_DEPTH, MAX_YAML_NODES
from tuner.spec._load import Spec, load_spec, parse_spec, storage_url
from tuner.spec._models import (
    COMMAND_KEYS,
    KINDS,
    PIPELINE_KEYS,
    SAMPLERS,
    Bound,
    KneeSection,
    MeasureSection,
    RangeAxisModel,
    StudySection,
    SyntheticImages,
    WorkloadFile,
    WorkloadSection,
)

__all__ = [
    "COMMAND_KEYS",
    "INT_AXES",
    "KINDS",
    "MAX_AXIS_VALUE",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "PIPELINE_KEYS",
    "SAMPLERS",
    "Axis",
    "Bound",
    "KneeSection",
    "MeasureSection",
    "RangeAxisModel",
    "Spec",
    "StudySection",
    "SyntheticImages",
    "WorkloadFile",
    "WorkloadSection",
    "check_axis_value",
    "load_spec",
    "parse_spec",
    "storage_url",
]
