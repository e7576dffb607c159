"""One home for running a test's worker in spawned processes (``torch.multiprocessing``) with a deadline."""

import os
import time
from typing import Any, Callable, Tuple

import pytest
import torch.multiprocessing as mp


def run_spawned(worker: Callable[..., None], args: Tuple[Any, ...], nprocs: int, deadline_s: float) -> None:
    """Run ``worker(rank, *args)`` in ``nprocs`` spawned processes; fail the test on an error or after the deadline.

    A worker's exception is re-raised here with its traceback; a hang (e.g. a rank waiting for a collective the
    others never reach) fails the test instead of blocking the suite, and leftover processes are killed.
    """
    context = mp.start_processes(worker, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + deadline_s
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"The {nprocs} spawned workers did not finish in {deadline_s:.0f} s (hang?).")
    finally:
        for process in context.processes:
            if process.is_alive():
                os.kill(process.pid, 9)
