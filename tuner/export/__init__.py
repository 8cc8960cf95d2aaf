"""Export a measured configuration of a study as a deployable file, with its provenance.

``select`` picks the trial (``best``, ``knee``, ``trial:N``), ``render`` writes one of
:data:`FORMATS`, ``read_provenance`` reads the record back and ``verify`` compares a fresh
measurement with it. Library code: no printing, typed errors only.
"""

from tuner.export.formats import ALIASES, FORMATS, canonical, default_filename, ort_session_options, render
from tuner.export.provenance import MARKER, read_provenance, read_provenance_file
from tuner.export.select import Selection, parse_pick, select
from tuner.export.verify import Verdict, verify

__all__ = [
    "ALIASES",
    "FORMATS",
    "MARKER",
    "Selection",
    "Verdict",
    "canonical",
    "default_filename",
    "ort_session_options",
    "parse_pick",
    "read_provenance",
    "read_provenance_file",
    "render",
    "select",
    "verify",
]
