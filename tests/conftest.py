"""Shared fixtures. Keep this small: one fixture per real resource, named after what it gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.models.zoo import zoo_path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zoo ``tiny`` model (3x32x32 -> 10 logits, dynamic batch), built once into a private cache dir."""
    return zoo_path("tiny", cache_dir=tmp_path_factory.mktemp("zoo-cache"))


# a real PostgreSQL (issue 7): `postgres_server` (base URL) and `pg_url` (a fresh database per test)
from _pg import pg_url, postgres_server  # noqa: E402, F401
