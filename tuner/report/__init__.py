"""report: reads studies and turns analysis records into the report object, tables, comparisons and figures.

:mod:`.load` opens storages (:mod:`.sql_read` reads big SQLite/PostgreSQL studies directly), :mod:`.summary`
builds the DESIGN.md report object, :mod:`.compare` lines studies up side by side, :mod:`.charts` /
:mod:`.axes` build figures, :mod:`.plotly_html` and :mod:`.matplotlib_png` render them.

May import: :mod:`tuner.analysis`, :mod:`tuner.study` (storage and trial records), the shared top-level
modules. Never :mod:`tuner.cli`.
"""
