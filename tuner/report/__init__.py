"""Reports read analysis records only: the DESIGN.md report object, tables and figures."""

from tuner.report.summary import record_dict, study_report

__all__ = ["record_dict", "study_report"]
