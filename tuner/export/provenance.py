"""Provenance: where an exported configuration came from, in every exported file.

Every export carries the same provenance record -- study, storage, trial number and how it was
picked, the platform tag and fingerprint of the machine that measured it, its key metrics, the
workload hash, the export date and the tuner version:

* in text formats that have comments (``tuner`` YAML, ``env``, ``triton`` pbtxt) as a readable comment
  header followed by **one machine-readable comment line**::

      # tuner-provenance: {"format": 1, "study": "...", "trial": 9, "metrics": {"qps": 893.0, ...}, ...}

  A comment keeps the file valid for its own tool (the workload schema forbids unknown keys; a
  pbtxt or a shell script would choke on foreign syntax), and one JSON line is trivial to find and
  parse (:func:`read_provenance`) -- ``tuner run FILE --verify`` reads the study's figures from it;
* in JSON formats (``json``, ``onnxruntime``, ``openvino``) as the top-level ``"provenance"`` key.

When the study holds a LoadGen confirmation (``tuner confirm``), the record's ``loadgen_confirmation`` is the
latest one (:func:`confirmation_record`: VALID/INVALID, the rate, the percentile latency against the bound,
LoadGen's reasons, the ids of its summary and detail logs as Optuna artifacts, and whether it ran the exported
configuration); the comment header says it in one line.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tuner.errors import SpecError
from tuner.text import format_params

__all__ = [
    "MARKER",
    "PROVENANCE_VERSION",
    "comment_header",
    "confirmation_record",
    "read_provenance",
    "read_provenance_file",
]

MARKER = "tuner-provenance:"
PROVENANCE_VERSION = 1

#: metrics copied into the provenance record (the figures a deployment is checked against)
KEY_METRICS = (
    "qps",
    "rps",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "latency_mean_ms",
    "peak_rss_mb",
    "cpu_util",
    "stable",
)
#: fingerprint fields copied into the provenance record
PLATFORM_KEYS = (
    "machine",
    "cpu_model",
    "cpu_logical",
    "cpu_physical",
    "memory_mb",
    "os",
    "board",
    "accelerators",
    "runtimes",
    "host",
)


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return "-" if value is None else str(value)


def confirmation_record(doc: Mapping[str, Any] | None, params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The study's latest LoadGen confirmation (the report's ``loadgen_confirmation``) as a provenance record
    carries it; ``same_config``: whether it ran ``params`` (the exported configuration). None without one."""
    if not doc:
        return None
    confirmed = dict(doc.get("params") or {})
    return {
        "result": doc.get("result"),
        "scenario": doc.get("scenario"),
        "trial": doc.get("number"),
        "of_trial": doc.get("trial"),
        "pick": doc.get("pick"),
        "params": confirmed,
        "same_config": confirmed == dict(params),
        "target_qps": doc.get("target_qps"),
        "rate_qps": doc.get("rate_qps"),
        "percentile": doc.get("percentile"),
        "percentile_latency_ms": doc.get("percentile_latency_ms"),
        "latency_bound_ms": doc.get("latency_bound_ms"),
        "reasons": list(doc.get("reasons") or []),
        "query_count": doc.get("query_count"),
        "duration_s": doc.get("duration_s"),
        "artifacts": dict(doc.get("artifacts") or {}),
        "artifact_store": doc.get("artifact_store"),
        "confirmed_at": doc.get("confirmed_at"),
    }


def _confirmation_line(c: Mapping[str, Any]) -> str:
    pct = c.get("percentile")
    latency = f"p{pct * 100:g} " if isinstance(pct, int | float) else ""
    latency += f"{_num(c.get('percentile_latency_ms'))} ms"
    if c.get("latency_bound_ms") is not None:
        latency += f" (bound {_num(c.get('latency_bound_ms'))} ms)"
    which = "this config" if c.get("same_config") else f"another config ({format_params(c.get('params') or {})})"
    why = f": {'; '.join(map(str, c['reasons']))}" if c.get("reasons") else ""
    return (
        f"loadgen:   {c.get('scenario')} {c.get('result')} at {_num(c.get('rate_qps'))} qps, {latency}{why}; "
        f"trial #{c.get('trial')} of {which}, {c.get('confirmed_at')}"
    )


def comment_header(prov: Mapping[str, Any], *, fmt: str, verify_hint: bool = False, prefix: str = "# ") -> str:
    """The readable provenance header, then the machine-readable line, as comment lines."""
    m = prov.get("metrics") or {}
    platform = prov.get("platform") or {}
    knee = prov.get("knee")
    how = f"picked as {prov.get('pick')}"
    if knee:
        conf = knee.get("confidence")
        how += f" ({'confirmed' if knee.get('confirmed') else 'not confirmed'}"
        how += f", confidence {conf:.0%})" if isinstance(conf, float) else ")"
    hw = f"{platform.get('cpu_model', '?')}, {platform.get('cpu_logical', '?')} logical cores"
    if platform.get("board"):
        hw += f", board {platform['board']}"
    if platform.get("accelerators"):
        hw += f", {', '.join(platform['accelerators'])}"
    params = format_params(prov.get("params") or {})
    lines = [
        f"tuner export ({fmt}) of a measured configuration",
        f"study:     {prov.get('study')}  ({prov.get('storage')})",
        f"trial:     #{prov.get('trial')}, {how}",
        f"config:    {params}",
        f"platform:  {prov.get('platform_tag')}: {hw}",
        f"measured:  qps {_num(m.get('qps'))}, p50 {_num(m.get('latency_p50_ms'))} ms, "
        f"p99 {_num(m.get('latency_p99_ms'))} ms, peak RSS {_num(m.get('peak_rss_mb'))} MiB",
        f"exported:  {prov.get('exported_at')} by tuner {prov.get('tuner_version')}",
    ]
    if prov.get("loadgen_confirmation"):
        lines.append(_confirmation_line(prov["loadgen_confirmation"]))
    if prov.get("feasible") is False:
        lines.append("WARNING:   this trial broke a constraint of the study (infeasible)")
    for note in prov.get("notes") or []:
        lines.append(f"note:      {note}")
    if verify_hint:
        lines.append("verify:    tuner run THIS_FILE --verify   (re-measures it here, compares with the figures above)")
    lines.append(f"{MARKER} {json.dumps(prov, sort_keys=True, default=str, allow_nan=False)}")
    return "".join(f"{prefix}{line}\n" for line in lines)


def read_provenance(text: str) -> dict[str, Any] | None:
    """The provenance record of an exported file's text (comment line or JSON key), or None."""
    for line in text.splitlines():
        stripped = line.lstrip()
        if not stripped.startswith(("#", "//")):
            continue
        body = stripped.lstrip("#/ ").strip()
        if body.startswith(MARKER):
            try:
                value = json.loads(body[len(MARKER) :])
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        prov = doc.get("provenance") if isinstance(doc, dict) else None
        return prov if isinstance(prov, dict) else None
    return None


def read_provenance_file(path: str | Path) -> dict[str, Any]:
    """The provenance record of an exported file; :class:`SpecError` when it has none."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(f"{path}: cannot read: {err.strerror}") from None
    prov = read_provenance(text)
    if prov is None:
        raise SpecError(
            f"{path}: no '# {MARKER} ...' line: --verify needs a file made by 'tuner export --format tuner' "
            "(it carries the study's figures)"
        )
    if not isinstance(prov.get("metrics"), Mapping) or prov["metrics"].get("qps") is None:
        raise SpecError(f"{path}: the provenance record has no measured qps to verify against")
    return prov
