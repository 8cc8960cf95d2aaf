"""Workloads drive a backend under load: ``pool`` (and later ``pipeline``, ``command``)."""
