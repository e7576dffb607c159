"""Run a test function in several CPU processes joined in a gloo group (spawned, file:// rendezvous)."""

import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _in_group(rank: int, worker: Callable[..., None], world_size: int, init_file: str, args: tuple) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size, timeout=timedelta(seconds=60)
    )
    torch.set_num_threads(1)
    try:
        worker(rank, *args)
    finally:
        dist.destroy_process_group()


def run_in_gloo_group(
    worker: Callable[..., None], world_size: int, tmp_path: Path, *args: Any, timeout: float = 90
) -> None:
    """Call ``worker(rank, *args)`` in ``world_size`` spawned processes (one thread each) of one gloo group.

    ``worker`` must be a module-level function; it reports by writing files (e.g. under ``tmp_path``). A worker
    that raises fails the test with its traceback; one that hangs fails it after ``timeout`` seconds.
    """
    context = mp.start_processes(
        _in_group,
        args=(worker, world_size, str(tmp_path / "gloo_init"), args),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"The {world_size} DDP workers did not finish in {timeout} s (hang?).")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
