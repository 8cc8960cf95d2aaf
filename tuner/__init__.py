"""tuner: declarative workload tuning for ML inference.

Public API: load a workload file, measure one configuration, run a study, analyse the knee.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
