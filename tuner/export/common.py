"""What every exporter reads from a :class:`~tuner.export.select.Selection`: the stored workload, the
backend options the trial ran with, its axes, ONNX Runtime's options, and JSON/filename helpers."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tuner.export.select import Selection

# ------------------------------------------------------------------------------------------- helpers


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "model"


def _workload(selection: Selection) -> dict[str, Any]:
    import yaml

    if not selection.workload_text:
        return {}
    try:
        data = yaml.safe_load(selection.workload_text)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _anchors(selection: Selection, base_dir: Path | None) -> list[Path]:
    """Where a relative path of the stored workload may resolve, in order: ``base_dir`` (given to the
    export), the original workload file's folder, the current directory."""
    anchors = [Path(base_dir)] if base_dir else []
    if selection.workload_path:
        anchors.append(Path(selection.workload_path).expanduser().parent)
    anchors.append(Path.cwd())
    return anchors


def _options(selection: Selection) -> dict[str, Any]:
    """The backend options the trial ran with: the fixed ``workload.options`` plus searched ``options.*``."""
    section = _workload(selection).get("workload") or {}
    options = dict(section.get("options") or {})
    for key, value in selection.params.items():
        if key.startswith("options."):
            options[key[len("options.") :]] = value
    return options


def _backend(selection: Selection) -> str:
    return str((_workload(selection).get("workload") or {}).get("backend") or "onnxruntime")


def _axis(selection: Selection, name: str) -> int:
    value = selection.params.get(name, 1)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


def _ort_options(selection: Selection) -> tuple[Any, list[str]]:
    from tuner.backends.onnxruntime import OrtOptions

    notes: list[str] = []
    options = _options(selection)
    backend = _backend(selection)
    if backend == "onnxruntime":
        known = {k: v for k, v in options.items() if k in OrtOptions.model_fields}
        return OrtOptions.model_validate(known), notes
    notes.append(
        f"the study ran on the {backend!r} backend: ONNX Runtime's own options are at their defaults here; "
        "the pool shape and thread counts come from the study"
    )
    return OrtOptions(), notes


def _json(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, default=str) + "\n"
