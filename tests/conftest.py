"""Shared fixtures. Keep this small: one fixture per real resource, named after what it gives."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuner.models.zoo import zoo_path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zoo ``tiny`` model (3x32x32 -> 10 logits, dynamic batch), built once into a private cache dir."""
    return zoo_path("tiny", cache_dir=tmp_path_factory.mktemp("zoo-cache"))


# a real PostgreSQL (issue 7): `postgres_server` (base URL) and `pg_url` (a fresh database per test)
from _pg import pg_url, postgres_server  # noqa: E402, F401


@pytest.fixture(autouse=True)
def _free_openvino_garbage() -> Iterator[None]:
    """After a test, collect the cyclic garbage it left (``pytest.raises`` keeps frames alive in a cycle).

    An OpenVINO compiled model left in such a cycle is otherwise freed by whichever later allocation triggers
    the collector -- seen twice inside an ONNX Runtime call of a later test, where its destructor's join of
    its stream threads never returned and the worker hung. Collected here, between tests, nothing else runs.
    """
    yield
    if "openvino" in sys.modules:
        gc.collect()
