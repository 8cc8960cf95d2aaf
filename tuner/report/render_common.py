"""What both figure renderers (:mod:`tuner.report.plotly_html`, :mod:`tuner.report.matplotlib_png`) share."""

from __future__ import annotations

import re

from tuner.errors import TunerError


class FigureError(TunerError):
    """A figure could not be written (a plotting library is missing, the path is not writable)."""

    exit_code = 2


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "study"
