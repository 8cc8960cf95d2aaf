"""Which trial to export: ``best``, ``knee`` or ``trial:N`` of a study, with its provenance record."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tuner.errors import SpecError, StudyError
from tuner.export.provenance import KEY_METRICS, PLATFORM_KEYS, PROVENANCE_VERSION, confirmation_record, now_utc
from tuner.metrics import LOADGEN_METRICS
from tuner.text import json_safe

__all__ = ["Selection", "parse_pick", "select"]

#: the LoadGen figures (``load.scenario`` server / offline) a provenance record carries beside the key metrics:
#: a config picked under a latency bound is deployed for the rate it served there


@dataclass(frozen=True)
class Selection:
    """A measured configuration picked from a study, with what every exporter needs."""

    study: str
    storage: str
    pick: str
    number: int
    params: Mapping[str, Any]
    metrics: Mapping[str, Any]
    feasible: bool
    workload_text: str | None
    workload_path: str | None
    workload_name: str
    platform: Mapping[str, Any]
    platform_tag: str
    spec_hash: str | None
    knee: Mapping[str, Any] | None = None
    #: the study's latest LoadGen confirmation (the report's ``loadgen_confirmation``), if any
    loadgen_confirmation: Mapping[str, Any] | None = None
    exported_at: str = field(default_factory=now_utc)
    tuner_version: str = ""

    def provenance(self, notes: list[str] | None = None) -> dict[str, Any]:
        """The provenance record (see :mod:`tuner.export.provenance`)."""
        metrics = {k: self.metrics[k] for k in (*KEY_METRICS, *LOADGEN_METRICS) if k in self.metrics}
        return {
            "format": PROVENANCE_VERSION,
            "study": self.study,
            "storage": self.storage,
            "trial": self.number,
            "pick": self.pick,
            "params": dict(self.params),
            "metrics": json_safe(dict(metrics)),
            "feasible": self.feasible,
            "knee": dict(self.knee) if self.knee else None,
            "platform_tag": self.platform_tag,
            "platform": {k: self.platform.get(k) for k in PLATFORM_KEYS if k in self.platform},
            "spec_hash": self.spec_hash,
            "workload": self.workload_name,
            "exported_at": self.exported_at,
            "tuner_version": self.tuner_version,
            "notes": list(notes or []),
            "loadgen_confirmation": json_safe(confirmation_record(self.loadgen_confirmation, self.params)),
        }


def parse_pick(text: str) -> tuple[str, int | None]:
    """``best`` | ``knee`` | ``trial:N`` -> (kind, N)."""
    value = str(text).strip().lower()
    if value in ("best", "knee"):
        return value, None
    m = re.fullmatch(r"(?:trial:|#)?(\d+)", value)
    if m:
        return "trial", int(m.group(1))
    raise SpecError(f"--pick {text!r}: expected best, knee or trial:N (e.g. trial:12)")


def select(study: Any, report: Mapping[str, Any], pick: str) -> Selection:
    """Pick a trial of ``study`` (a :class:`~tuner.report.load.StudyData`) given its report object."""
    from tuner.platform import platform_tag, tuner_version
    from tuner.trial_attrs import TrialAttrs, config_of, failure_of, is_feasible, qps_of

    kind, number = parse_pick(pick)
    knee_info = None
    if kind in ("best", "knee"):
        doc = report.get(kind)
        if not doc:
            raise StudyError(
                f"study {report['study']!r} has no {kind} yet ({report.get('knee_reason') or 'no measured trial'}); "
                "run more trials or pick a trial with --pick trial:N"
            )
        number = int(doc["number"])
        if kind == "knee":
            knee_info = {"confirmed": doc.get("confirmed"), "confidence": doc.get("confidence")}
            rate = str(report.get("rate_metric") or "qps")
            if rate != "qps":
                knee_info["rate_metric"] = rate  # the knee was taken over this rate, not over qps
    assert number is not None
    rows = {t.number: t for t in study.trials}
    row = rows.get(number)
    if row is None:
        last = max(rows) if rows else None
        raise StudyError(
            f"study {report['study']!r} has no trial {number}"
            + (f" (trials are numbered 0..{last})" if last is not None else " (it has no trials)")
        )
    state = getattr(row.state, "name", str(row.state))
    if qps_of(row) is None:
        failure = failure_of(row).get("message") or row.user_attrs.get("skip_reason")
        raise StudyError(
            f"trial {number} of {report['study']!r} was not measured ({state.lower()}"
            + (f": {failure}" if failure else "")
            + "); pick a complete trial"
        )
    # best and knee carry the analysis' metrics (a configuration measured several times: the means); the
    # report's records are honest: metrics.qps is the closed-loop qps, the study's rate under its own name
    doc = report.get(kind) if kind in ("best", "knee") else None
    metrics = (
        dict(doc["metrics"])
        if doc
        else {k: v for k, v in TrialAttrs.read(row.user_attrs).metrics.items() if not isinstance(v, dict)}
    )
    params = dict(doc["params"]) if doc else config_of(row)
    attrs = study.user_attrs
    platform = dict(attrs.get("platform") or {})
    return Selection(
        study=report["study"],
        storage=str(getattr(study, "storage", "")),
        pick=kind if kind != "trial" else f"trial:{number}",
        number=number,
        params=params,
        metrics=metrics,
        feasible=is_feasible(row),
        workload_text=attrs.get("workload_text"),
        workload_path=attrs.get("workload_path"),
        workload_name=str(attrs.get("workload_name") or report["study"].split("@", 1)[0]),
        platform=platform,
        platform_tag=str(attrs.get("platform_tag") or (platform_tag(platform) if platform else "unknown")),
        spec_hash=attrs.get("spec_hash"),
        knee=knee_info,
        loadgen_confirmation=report.get("loadgen_confirmation"),
        tuner_version=tuner_version(),
    )
