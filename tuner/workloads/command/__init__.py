"""tuner.workloads.command.job."""
