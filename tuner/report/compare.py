"""Studies side by side: platforms, best and knee per platform, ratios to the first, aligned curves.

Pure: :func:`compare_studies` takes report objects (:func:`tuner.report.study_report`) with their
measured records and workload text, and returns one plain dict (the ``tuner compare --json``
document). Each study gets a short unique ``label``: its platform tag when the tags differ, else its
study name, else ``<storage file>:<study>``::

    {"baseline": "<label of the first study>",
     "studies": [{"label", "study", "storage", "platform_tag", "platform", "spec_hash", "trials",
                  "rate_metric", "plateau_qps", "best", "knee"}, ...],
     "platform_diff": {"cpu_model": ["AMD EPYC", "Rockchip RK3576"], ...},   # fingerprint keys that differ
     "ratios": [{"label", "best_qps", "knee_qps", "plateau_qps", "knee_in_flight",
                 "best_latency_p99_ms", "knee_latency_p99_ms"}, ...],          # each / the first's
     "axis": "pool_size",                                                     # the aligned axis
     "aligned": [{"value": 1, "qps": [q_a, q_b], "ratio": [1.0, r_b], "numbers": [n_a, n_b]}, ...],
     "curves": [{"label", "x": [...], "y": [...]}, ...],                      # best qps per axis value
     "workload_diff": [{"label", "keys": {"workload.options.units": [3, 2]}}, ...],
     "warnings": ["..."]}

Workloads whose spec hashes differ are compared anyway, with a warning naming the keys that differ
(from each study's stored workload text).

Each study is compared on its own rate metric (its report's ``rate_metric``: ``qps``, or ``server_qps`` /
``offline_qps`` under ``load.scenario``; each study entry names it): the best and knee ratios, the plateau
and the aligned curves (``records`` are then the rate view, :func:`tuner.study.ledger.trial_records` with
that rate). Studies that decide on different rates are compared anyway, with a warning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tuner.analysis.knee import TrialRecord, in_flight, merge_repeats
from tuner.report.axes import knee_axis, saturation_lines

__all__ = ["CompareItem", "compare_studies", "rate_metric", "workload_diff"]

#: fingerprint keys that describe the machine (shown side by side); "host" is left out of the diff
_PLATFORM_KEYS = (
    "machine",
    "cpu_model",
    "cpu_logical",
    "cpu_physical",
    "usable_cores",
    "memory_mb",
    "os",
    "board",
    "accelerators",
    "gpu",
    "runtimes",
    "tuner",
)


@dataclass(frozen=True)
class CompareItem:
    """One study to compare: its report object, its measured records, its stored workload text."""

    report: Mapping[str, Any]
    records: Sequence[TrialRecord]
    workload_text: str | None = None
    storage: str = ""


def _ratio(a: Any, b: Any) -> float | None:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return None
    return a / b


def _metric(doc: Mapping[str, Any] | None, name: str) -> Any:
    return (doc or {}).get("metrics", {}).get(name)


def rate_metric(report: Mapping[str, Any]) -> str:
    """The rate a report's knee and best were decided on (``qps`` for reports made before it was named)."""
    return str(report.get("rate_metric") or "qps")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        if not value and prefix:
            out[prefix] = {}
        return out
    if isinstance(value, list) and value and all(isinstance(v, Mapping) and len(v) == 1 for v in value):
        # objectives: [{qps: maximize}, ...] -> objectives.qps
        out = {}
        for v in value:
            out.update(_flatten(v, prefix))
        return out
    return {prefix: value}


def workload_diff(a_text: str | None, b_text: str | None) -> dict[str, list[Any]] | None:
    """Dotted keys whose values differ between two workload texts, ``{key: [a, b]}`` (a missing key is
    None). The ``study`` section (storage, sampler, budget) is left out: it does not change what is
    measured. None when a text is missing or does not parse."""
    import yaml

    try:
        a = yaml.safe_load(a_text) if a_text else None
        b = yaml.safe_load(b_text) if b_text else None
    except yaml.YAMLError:
        return None
    if not isinstance(a, Mapping) or not isinstance(b, Mapping):
        return None
    fa = {k: v for k, v in _flatten(a).items() if not k.startswith("study.") and k != "study"}
    fb = {k: v for k, v in _flatten(b).items() if not k.startswith("study.") and k != "study"}
    out = {}
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key), fb.get(key)
        if va != vb:
            out[key] = [va, vb]
    return out


def _platform_tag(report: Mapping[str, Any]) -> str:
    platform = report.get("platform") or {}
    tag = platform.get("tag")
    if tag:
        return str(tag)
    from tuner.platform import platform_tag

    return platform_tag(dict(platform)) if platform else "unknown"


def _brief(doc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not doc:
        return None
    out = {"number": doc["number"], "params": dict(doc["params"]), "metrics": dict(doc["metrics"])}
    for key in ("confirmed", "confidence"):
        if key in doc:
            out[key] = doc[key]
    return out


def compare_studies(items: Sequence[CompareItem], *, axis: str | None = None) -> dict[str, Any]:
    """The comparison document of ``items`` (the first is the baseline); see the module docstring."""
    if len(items) < 2:
        raise ValueError("compare needs at least two studies")
    reports = [item.report for item in items]
    names = _labels(items)
    warnings: list[str] = []

    studies = []
    for name, item in zip(names, items, strict=True):
        r = item.report
        studies.append(
            {
                "label": name,
                "study": r["study"],
                "storage": item.storage,
                "platform_tag": _platform_tag(r),
                "platform": dict(r.get("platform") or {}),
                "spec_hash": r.get("spec_hash"),
                "trials": dict(r.get("trials") or {}),
                "rate_metric": rate_metric(r),
                "plateau_qps": r.get("plateau_qps"),
                "best": _brief(r.get("best")),
                "knee": _brief(r.get("knee")),
            }
        )

    platform_diff: dict[str, list[Any]] = {}
    for key in _PLATFORM_KEYS:
        values = [(r.get("platform") or {}).get(key) for r in reports]
        if any(v != values[0] for v in values[1:]):
            platform_diff[key] = values
    if not platform_diff and len({s["platform_tag"] for s in studies}) == 1:
        warnings.append("every study ran on the same platform (identical hardware fingerprints)")
    rates = [rate_metric(r) for r in reports]
    if len(set(rates)) > 1:
        warnings.append(
            "the studies decide on different rates ("
            + ", ".join(f"{n}: {q}" for n, q in zip(names, rates, strict=True))
            + "): each one's best, knee and curve are its own rate, so the ratios compare different figures"
        )

    base = reports[0]
    base_rate = rates[0]
    ratios = []
    for name, r, rate in zip(names, reports, rates, strict=True):
        knee, best = r.get("knee"), r.get("best")
        base_knee, base_best = base.get("knee"), base.get("best")
        ratios.append(
            {
                "label": name,
                "best_qps": _ratio(_metric(best, rate), _metric(base_best, base_rate)),
                "knee_qps": _ratio(_metric(knee, rate), _metric(base_knee, base_rate)),
                "plateau_qps": _ratio(r.get("plateau_qps"), base.get("plateau_qps")),
                "knee_in_flight": _ratio(
                    in_flight(knee["params"]) if knee else None, in_flight(base_knee["params"]) if base_knee else None
                ),
                "best_latency_p99_ms": _ratio(_metric(best, "latency_p99_ms"), _metric(base_best, "latency_p99_ms")),
                "knee_latency_p99_ms": _ratio(_metric(knee, "latency_p99_ms"), _metric(base_knee, "latency_p99_ms")),
            }
        )

    merged = [merge_repeats(item.records) for item in items]
    if axis is None:
        axis = knee_axis([r for group in merged for r in group])
    curves = []
    per_value: dict[str, dict[str, Any]] = {}
    for i, (name, group) in enumerate(zip(names, merged, strict=True)):
        lines = saturation_lines(group, axis, None)
        line = lines[0] if lines else {"x": [], "y": [], "numbers": []}
        curves.append({"label": name, "x": list(line["x"]), "y": list(line["y"]), "numbers": list(line["numbers"])})
        for x, y, n in zip(line["x"], line["y"], line["numbers"], strict=True):
            empty = {"value": x, "qps": [None] * len(items), "numbers": [None] * len(items)}
            slot = per_value.setdefault(repr(x), empty)
            slot["qps"][i] = y
            slot["numbers"][i] = n
    aligned = []
    for slot in sorted(per_value.values(), key=lambda s: _sort_key(s["value"])):
        first = slot["qps"][0]
        slot["ratio"] = [_ratio(q, first) for q in slot["qps"]]
        slot["common"] = all(q is not None for q in slot["qps"])
        aligned.append(slot)

    diffs = []
    base_text = items[0].workload_text
    for name, item in zip(names[1:], items[1:], strict=True):
        if item.report.get("spec_hash") == base.get("spec_hash"):
            continue
        keys = workload_diff(base_text, item.workload_text)
        diffs.append({"label": name, "keys": keys})
        if keys is None:
            warnings.append(
                f"{name}: its workload hash ({item.report.get('spec_hash')}) differs from {names[0]}'s "
                f"({base.get('spec_hash')}) and a workload text is missing, so the differences cannot be listed"
            )
        elif keys:
            shown = "; ".join(f"{k}: {_show(v[0])} vs {_show(v[1])}" for k, v in list(keys.items())[:12])
            more = f" and {len(keys) - 12} more" if len(keys) > 12 else ""
            warnings.append(
                f"{name} measured a different workload than {names[0]} (hash {item.report.get('spec_hash')} vs "
                f"{base.get('spec_hash')}); keys that differ: {shown}{more}"
            )
        else:
            warnings.append(
                f"{name}: its workload hash differs from {names[0]}'s but the workload texts agree on every "
                "measured key (a different tuner version may hash differently)"
            )
    if not any(s["common"] for s in aligned):
        warnings.append(f"no value of {axis} was measured in every study; nothing to align")
    return {
        "baseline": names[0],
        "studies": studies,
        "platform_diff": platform_diff,
        "ratios": ratios,
        "axis": axis,
        "aligned": aligned,
        "curves": curves,
        "workload_diff": diffs,
        "warnings": warnings,
    }


def _labels(items: Sequence[CompareItem]) -> list[str]:
    """Short unique names: platform tags when they differ, else study names, else storage file:study."""
    tags = [_platform_tag(item.report) for item in items]
    if len(set(tags)) == len(tags):
        return tags
    names = [str(item.report["study"]) for item in items]
    if len(set(names)) == len(names):
        return names
    files = [item.storage.rstrip("/").rsplit("/", 1)[-1] or item.storage for item in items]
    labels = [f"{f}:{n}" for f, n in zip(files, names, strict=True)]
    if len(set(labels)) == len(labels):
        return labels
    return [f"[{i + 1}] {n}" for i, n in enumerate(names)]


def _show(value: Any) -> str:
    return "(missing)" if value is None else repr(value) if isinstance(value, str) else str(value)


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value))
    return (1, str(value))


# ----------------------------------------------------------------------------------------- figures


def compare_figures(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The figure set of a comparison: the saturation curves overlaid, and best/knee rate per study."""
    axis = doc["axis"]
    rates = [str(s.get("rate_metric") or "qps") for s in doc["studies"]]
    shown = rates[0] if len(set(rates)) == 1 else "rate"
    series = [
        {
            "name": c["label"],
            "x": c["x"],
            "y": c["y"],
            "mode": "lines+markers",
            "text": [f"trial #{n}" for n in c.get("numbers", [])],
        }
        for c in doc["curves"]
    ]
    markers = []
    for s, rate in zip(doc["studies"], rates, strict=True):
        knee = s.get("knee")
        if knee and axis in knee["params"] and knee["metrics"].get(rate) is not None:
            markers.append(
                {"x": knee["params"][axis], "y": knee["metrics"][rate], "name": f"knee {s['label']}", "symbol": "star"}
            )
    from tuner.report.axes import _log_axis

    overlay = {
        "id": "compare-saturation",
        "title": f"saturation curves: best {shown} per {axis}",
        "kind": "xy",
        "x_label": axis,
        "y_label": f"{shown} (samples/s)",
        "x_log": _log_axis([x for s in series for x in s["x"]]),
        "series": series,
        "hlines": [],
        "markers": markers,
        "note": None,  # the warnings go in the summary: on the chart they crowd the curves
    }
    labels = [s["label"] for s in doc["studies"]]
    best_knee = {
        "id": "compare-best-knee",
        "title": f"best and knee {shown} per study",
        "kind": "barh",
        "x_label": f"{shown} (samples/s)",
        "y_label": "study",
        "x_log": False,
        "series": [
            {
                "name": "knee",
                "x": [_metric(s.get("knee"), q) or 0 for s, q in zip(doc["studies"], rates, strict=True)],
                "y": labels,
            },
            {
                "name": "best",
                "x": [_metric(s.get("best"), q) or 0 for s, q in zip(doc["studies"], rates, strict=True)],
                "y": labels,
            },
        ],
        "hlines": [],
        "markers": [],
        "note": None,
    }
    return {
        "name": "compare",
        "title": "compare: " + " vs ".join(s["label"] for s in doc["studies"]),
        "summary": [
            f"{r['label']}: best x{_fmt(r['best_qps'])}, knee x{_fmt(r['knee_qps'])} of {doc['baseline']}"
            for r in doc["ratios"][1:]
        ]
        + list(doc["warnings"]),
        "charts": [overlay, best_knee],
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
