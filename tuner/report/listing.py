"""One line per study of a storage: platform, trial counts, best qps, knee (``tuner studies``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["study_summary"]


def _brief(doc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not doc:
        return None
    out = {
        "number": doc["number"],
        "params": dict(doc["params"]),
        "qps": doc["metrics"].get("qps"),
        "latency_p99_ms": doc["metrics"].get("latency_p99_ms"),
    }
    if "confirmed" in doc:
        out["confirmed"] = doc["confirmed"]
    return out


def study_summary(study: Any, report: Mapping[str, Any]) -> dict[str, Any]:
    """``{"study", "workload", "platform_tag", "platform", "spec_hash", "created_at", "trials", "best",
    "knee"}`` from a :class:`~tuner.report.load.StudyData` and its report object."""
    attrs = study.user_attrs
    platform = dict(attrs.get("platform") or {})
    tag = attrs.get("platform_tag")
    if not tag and platform:
        from tuner.platform import platform_tag

        tag = platform_tag(platform)
    return {
        "study": study.study_name,
        "workload": attrs.get("workload_name"),
        "platform_tag": tag,
        "platform": {
            k: platform.get(k) for k in ("machine", "cpu_model", "cpu_logical", "memory_mb", "board", "accelerators")
        },
        "spec_hash": attrs.get("spec_hash"),
        "created_at": attrs.get("created_at"),
        "trials": dict(report.get("trials") or {}),
        "plateau_qps": report.get("plateau_qps"),
        "best": _brief(report.get("best")),
        "knee": _brief(report.get("knee")),
    }
