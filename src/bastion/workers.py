"""Process pools that stop cleanly on Ctrl-C.

A terminal sends SIGINT to the whole foreground process group, so every worker of a pool got its own
KeyboardInterrupt and printed a traceback from wherever it was (usually waiting on its task queue) before the
parent could say "interrupted". Workers here ignore SIGINT and leave it to the parent, which ends them at
once instead of waiting for the tasks they are running.
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or taskset narrows)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def ignore_interrupts() -> None:
    """Pool initializer: the worker leaves SIGINT to its parent, which stops the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def process_pool(workers: int, context: BaseContext | None = None) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor of ``workers`` processes whose workers ignore Ctrl-C."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=ignore_interrupts)


def stop_pool(pool: ProcessPoolExecutor, interrupted: bool) -> None:
    """Shut ``pool`` down after its tasks, or at once (workers ended, queue dropped) when interrupted."""
    if interrupted:
        # Python 3.14 has a public call for this; before it, the executor's worker table is the only handle.
        terminate = getattr(pool, "terminate_workers", None)
        if callable(terminate):
            terminate()
        else:
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)
