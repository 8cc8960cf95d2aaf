"""tuner.measurement."""
