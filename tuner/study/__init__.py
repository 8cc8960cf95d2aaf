"""tuner.study.studies."""
