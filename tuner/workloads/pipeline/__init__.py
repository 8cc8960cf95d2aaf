"""tuner.workloads.pipeline.engine."""
