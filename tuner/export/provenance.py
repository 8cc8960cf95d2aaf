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
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tuner.errors import SpecError
from tuner.text import format_params

__all__ = ["MARKER", "PROVENANCE_VERSION", "comment_header", "read_provenance", "read_provenance_file"]

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
