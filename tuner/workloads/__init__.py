"""Workloads drive a backend under load: ``pool``, ``pipeline``, and ``command`` (an external program)."""
