"""Model zoo and model references: see :mod:`tuner.models.zoo`."""

from tuner.models.zoo import (
    IR_VERSION,
    OPSET,
    ZOO_NAMES,
    ZOO_PREFIX,
    ZOO_VERSION,
    build_model,
    check_model_file,
    count_macs,
    default_cache_dir,
    resolve_model,
    zoo_file_name,
    zoo_path,
)

__all__ = [
    "IR_VERSION",
    "OPSET",
    "ZOO_NAMES",
    "ZOO_PREFIX",
    "ZOO_VERSION",
    "build_model",
    "check_model_file",
    "count_macs",
    "default_cache_dir",
    "resolve_model",
    "zoo_file_name",
    "zoo_path",
]
