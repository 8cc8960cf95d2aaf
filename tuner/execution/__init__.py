"""execution: one configuration measured in fresh processes (runner: repeats; child: the worker's parent side;
worker: the child). Finds the workload kind by name (:mod:`tuner.workloads.registry`) and runs it: in the worker
child for kinds that run there, else through the kind's own ``run``. May import config, measurement, workloads.
"""
