"""Does a deployment reproduce its study? Compare a fresh measurement with an export's provenance.

The rule (``tuner run FILE --verify``, tolerance ``t``, default 0.10):

* **qps** reproduces when ``measured >= (1 - t) * study``;
* **p99 latency** reproduces when ``measured <= (1 + t) * study`` (checked when the study has it).

A deployment that does *better* than the study passes (and is reported as better): the question is
whether this machine delivers what the study promised. The result also says whether this machine is
the platform the study ran on (same hardware identity as the recorded fingerprint); a different one
is reported, not failed -- the numbers then tell how far the study transfers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tuner.text import finite_or_none

__all__ = ["DEFAULT_TOLERANCE", "Verdict", "verify"]

DEFAULT_TOLERANCE = 0.10


@dataclass(frozen=True)
class Check:
    metric: str
    study: float
    measured: float | None
    limit: float
    better: str  # "higher" | "lower"
    ok: bool

    @property
    def change(self) -> float | None:
        if self.measured is None or self.study == 0:
            return None
        return self.measured / self.study - 1.0

    def describe(self) -> str:
        unit = " ms" if self.metric.endswith("_ms") else ""
        if self.measured is None:
            return f"{self.metric}: not measured (study {self.study:.4g}{unit})"
        change = self.change
        pct = f"{change:+.1%}" if change is not None else "?"
        bound = "at least" if self.better == "higher" else "at most"
        verdict = "ok" if self.ok else "NOT reproduced"
        return (
            f"{self.metric}: {self.measured:.4g}{unit} here vs {self.study:.4g}{unit} in the study ({pct}); "
            f"needs {bound} {self.limit:.4g}{unit}: {verdict}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "study": self.study,
            "measured": self.measured,
            "limit": self.limit,
            "change": self.change,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class Verdict:
    reproduced: bool
    tolerance: float
    checks: tuple[Check, ...]
    same_platform: bool
    platform_note: str | None
    study: str
    trial: int | None
    params_note: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def lines(self) -> list[str]:
        head = f"verify against {self.study} trial #{self.trial} (tolerance {self.tolerance:.0%}): " + (
            "REPRODUCED" if self.reproduced else "NOT REPRODUCED"
        )
        out = [head, *(f"  {c.describe()}" for c in self.checks)]
        if self.platform_note:
            out.append(f"  {self.platform_note}")
        if self.params_note:
            out.append(f"  {self.params_note}")
        out += [f"  {n}" for n in self.notes]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "reproduced": self.reproduced,
            "tolerance": self.tolerance,
            "checks": [c.to_dict() for c in self.checks],
            "same_platform": self.same_platform,
            "platform_note": self.platform_note,
            "params_note": self.params_note,
            "study": self.study,
            "trial": self.trial,
            "notes": list(self.notes),
        }


def verify(
    provenance: Mapping[str, Any],
    metrics: Mapping[str, Any],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    platform: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> Verdict:
    """Compare ``metrics`` (a fresh measurement) with the study's figures in ``provenance``.

    ``platform``: this machine's fingerprint (default: :func:`tuner.platform.fingerprint`); ``params``:
    the configuration that was measured (compared with the exported one when given).
    """
    from tuner.platform import fingerprint, hardware_identity, platform_tag

    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
    expected = provenance.get("metrics") or {}
    checks = []
    qps = finite_or_none(expected.get("qps"))
    if qps is not None:
        measured = finite_or_none(metrics.get("qps"))
        limit = (1 - tolerance) * qps
        checks.append(Check("qps", qps, measured, limit, "higher", measured is not None and measured >= limit))
    p99 = finite_or_none(expected.get("latency_p99_ms"))
    if p99 is not None:
        measured = finite_or_none(metrics.get("latency_p99_ms"))
        limit = (1 + tolerance) * p99
        checks.append(
            Check("latency_p99_ms", p99, measured, limit, "lower", measured is not None and measured <= limit)
        )
    ours = dict(platform) if platform is not None else fingerprint()
    theirs = dict(provenance.get("platform") or {})
    same = True
    note = None
    if theirs:
        a, b = hardware_identity(theirs), hardware_identity(ours)
        same = a == b
        if not same:
            diff = ", ".join(f"{k} {a[k]!r} vs here {b[k]!r}" for k in a if a[k] != b[k])
            note = (
                f"platform differs: the study ran on {provenance.get('platform_tag')}, this machine is "
                f"{platform_tag(ours)} ({diff}); the study's figures may not transfer"
            )
        else:
            note = f"same platform as the study ({platform_tag(ours)})"
    else:
        note = "the export records no platform; cannot tell whether this machine is the study's"
    params_note = None
    if params is not None and provenance.get("params"):
        exported = dict(provenance["params"])
        # a searched backend option (options.x) is written into workload.options of the exported file
        exported = {k: v for k, v in exported.items() if not (k.startswith("options.") and k not in params)}
        changed = {
            k: (exported.get(k), params.get(k)) for k in set(exported) | set(params) if exported.get(k) != params.get(k)
        }
        if changed:
            shown = ", ".join(f"{k}: {a!r} exported vs {b!r} measured" for k, (a, b) in sorted(changed.items()))
            params_note = f"the file's configuration differs from the exported one ({shown})"
    notes = []
    if metrics.get("stable") is False:
        notes.append("this measurement was not stable (windows disagreed); raise measure.max_s for a firmer answer")
    return Verdict(
        reproduced=bool(checks) and all(c.ok for c in checks),
        tolerance=tolerance,
        checks=tuple(checks),
        same_platform=same,
        platform_note=note,
        study=str(provenance.get("study")),
        trial=provenance.get("trial"),
        params_note=params_note,
        notes=tuple(notes),
    )
