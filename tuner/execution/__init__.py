"""tuner.execution."""
