"""Exporters of the runtime-neutral formats: ``tuner`` (a workload YAML with every axis fixed), ``json``
(provenance, params, metrics, workload section) and ``env`` (shell variables). See :mod:`tuner.export.formats`."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from tuner.errors import SpecError
from tuner.export.common import _anchors, _axis, _json, _options, _workload
from tuner.export.model_io import precision_record
from tuner.export.provenance import comment_header
from tuner.export.select import Selection

# ------------------------------------------------------------------------------------------- formats


def _tuner(selection: Selection, base_dir: Path | None) -> str:
    import yaml

    data = _workload(selection)
    if not data:
        raise SpecError(
            f"study {selection.study!r} stores no workload text, so it cannot be exported as a workload file; "
            "use --format json"
        )
    notes: list[str] = []
    workload = dict(data.get("workload") or {})
    options = dict(workload.get("options") or {})
    search: dict[str, Any] = {}
    for key, value in selection.params.items():
        if key.startswith("options."):
            options[key[len("options.") :]] = value
        else:
            search[key] = value
    if options:
        workload["options"] = options
    # relative paths were relative to the original workload file: make them absolute where they resolve
    anchors = _anchors(selection, base_dir)
    for key in ("model", "images", "cwd"):
        value = workload.get(key)
        found = _absolute(value, anchors)
        if found is not None:
            workload[key] = found
        elif isinstance(value, str) and value and not value.startswith("zoo:") and not Path(value).is_absolute():
            notes.append(f"workload.{key} {value!r} is relative to the original workload file's folder")
    # the declared inputs (workload.inputs, or the pipeline infer stage's) re-feed the same shapes and data:
    # their file: / images: sources resolve like the model
    if isinstance(workload.get("inputs"), dict):
        workload["inputs"] = _absolute_inputs(workload["inputs"], "workload.inputs", anchors, notes)
    # the options carry the precision: re-running the file opens the same (cached, or rebuilt) variant
    variant, variant_notes = precision_record(selection, base_dir)
    notes += variant_notes
    if variant is not None and variant.get("sha256"):
        notes.append(f"precision {variant['precision']}: {variant['path']} (sha256 {variant['sha256']})")
    if isinstance(workload.get("stages"), list):
        stages = []
        for i, stage in enumerate(workload["stages"]):
            if isinstance(stage, dict) and stage.get("type") == "infer" and isinstance(stage.get("inputs"), dict):
                where = f"workload.stages[{i}].inputs"
                stage = {**stage, "inputs": _absolute_inputs(stage["inputs"], where, anchors, notes)}
            stages.append(stage)
        workload["stages"] = stages
    # every section as the study had it (whatever the schema holds), the search fixed, the study minimal
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "workload":
            out[key] = workload
        elif key == "search":
            out[key] = search
        elif key != "study":
            out[key] = value
    out.setdefault("search", search)
    study = dict(data.get("study") or {})
    out["study"] = {"sampler": "grid", "trials": 1} | {
        k: study[k] for k in ("trial_timeout_s", "memory_limit_mb") if k in study
    }
    header = comment_header(selection.provenance(notes), fmt="tuner", verify_hint=True)
    body = yaml.safe_dump(out, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return header + body


def _absolute(value: Any, anchors: list[Path]) -> str | None:
    """A relative path (not ``zoo:``) as the absolute path it resolves to from the first anchor that has it."""
    if not isinstance(value, str) or not value or value.startswith("zoo:") or Path(value).is_absolute():
        return None
    found = next((a / value for a in anchors if (a / value).exists()), None)
    return str(found.resolve()) if found is not None else None


def _absolute_inputs(inputs: dict[str, Any], where: str, anchors: list[Path], notes: list[str]) -> dict[str, Any]:
    """``inputs:`` with the ``file`` / ``images`` paths of their ``data`` made absolute where they resolve."""
    out: dict[str, Any] = {}
    for name, decl in inputs.items():
        data = decl.get("data") if isinstance(decl, dict) else None
        if isinstance(data, dict):
            for kind in ("file", "images"):
                value = data.get(kind)
                found = _absolute(value, anchors)
                if found is not None:
                    decl = {**decl, "data": {**data, kind: found}}
                elif isinstance(value, str) and value and not Path(value).is_absolute():
                    notes.append(
                        f"{where}.{name}.data.{kind} {value!r} is relative to the original workload file's folder"
                    )
        out[name] = decl
    return out


def _json_format(selection: Selection, base_dir: Path | None) -> str:
    section = _workload(selection).get("workload") or {}
    variant, notes = precision_record(selection, base_dir)
    doc = {
        "provenance": selection.provenance(notes),
        "params": dict(selection.params),
        "metrics": dict(selection.metrics),
        "workload": {
            "kind": section.get("kind", "pool"),
            "backend": section.get("backend"),
            "model": section.get("model"),
            "options": _options(selection),
        },
    }
    if variant is not None:
        doc["precision"] = variant  # the precision that ran: the model file (variant) path, sha256, settings
    return _json(doc)


def _env_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").upper()


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "''"
    return shlex.quote(str(value))


def _env(selection: Selection, base_dir: Path | None) -> str:
    threads = _axis(selection, "threads")
    lines = [
        comment_header(selection.provenance(), fmt="env").rstrip("\n"),
        "# source this file (. ./FILE): the tuned settings as environment variables",
        f"export TUNER_STUDY={_env_value(selection.study)}",
        f"export TUNER_TRIAL={selection.number}",
        f"export TUNER_PLATFORM_TAG={_env_value(selection.platform_tag)}",
    ]
    for key, value in selection.params.items():
        if key.startswith("options."):
            continue
        lines.append(f"export TUNER_{_env_name(key)}={_env_value(value)}")
    for key, value in _options(selection).items():
        if isinstance(value, dict | list):
            value = json.dumps(value)
        lines.append(f"export TUNER_OPTION_{_env_name(key)}={_env_value(value)}")
    lines += [
        "# compute threads per instance, for runtimes that read the usual variables",
        f"export OMP_NUM_THREADS={threads}",
        f"export MKL_NUM_THREADS={threads}",
        f"export OPENBLAS_NUM_THREADS={threads}",
        "# what the study measured (for checks and dashboards)",
    ]
    for key, name in (("qps", "QPS"), ("latency_p50_ms", "P50_MS"), ("latency_p99_ms", "P99_MS")):
        value = selection.metrics.get(key)
        if isinstance(value, int | float):
            lines.append(f"export TUNER_EXPECTED_{name}={float(value):.6g}")
    return "\n".join(lines) + "\n"
