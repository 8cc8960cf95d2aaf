"""tuner.search."""
