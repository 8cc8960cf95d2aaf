"""The trial's child process: ``python -m tuner.execution.worker`` reads one job (JSON) on stdin, measures it,
and writes JSON-line events on its stdout; the last one is ``result`` or ``error``.

Anything else the runtime prints to stdout is redirected to stderr so it cannot corrupt the protocol.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import traceback
from typing import Any, TextIO

from tuner.errors import TunerError
from tuner.workloads.registry import get_kind


def _protocol_stream() -> TextIO:
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", buffering=1)


def execute(job: dict[str, Any], emit: Any) -> dict[str, Any]:
    """Run one job in this process with its workload kind and return ``{"metrics", "applied", "versions"}``."""
    name = str(job.get("kind", "pool"))
    kind = get_kind(name)()
    if not kind.runs_in_worker:
        raise TunerError(f"workload kind {name!r} does not run in a worker process")
    return kind.run_in_child(job, emit)


def main() -> int:
    proto = _protocol_stream()

    def emit(event: dict[str, Any]) -> None:
        proto.write(json.dumps(event, default=str) + "\n")

    try:
        job = json.loads(sys.stdin.read())
        result = execute(job, emit)
        result["metrics"]["child_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        emit({"event": "result", **result})
        return 0
    except MemoryError:
        emit({"event": "error", "type": "MemoryError", "message": "out of memory (MemoryError in the trial)"})
        return 3
    except TunerError as err:
        emit({"event": "error", "type": type(err).__name__, "message": str(err)})
        return 3
    except Exception as err:  # noqa: BLE001 - everything a runtime may raise becomes a failure record
        tb = traceback.format_exc(limit=8)
        sys.stderr.write(tb)
        emit({"event": "error", "type": type(err).__name__, "message": f"{type(err).__name__}: {err}"})
        return 3
    finally:
        proto.flush()


if __name__ == "__main__":
    sys.exit(main())
