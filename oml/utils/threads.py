"""Thread-level parallelism for CPU kernels made of many small torch ops (the exact kNN's tile loop).

Torch parallelises inside one op. A loop of small ops (selecting candidates in a distance tile, merging them)
gains little from that, and on a busy machine every parallel region can stall for a scheduler time slice. So
such a loop runs its iterations on a few Python threads instead, each op on one intra-op thread: torch
releases the GIL inside its ops, and the GEMM of one tile overlaps the bookkeeping of another.
"""

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Generic, Hashable, Iterable, Iterator, List, Optional, Sequence, Set, TypeVar

import torch

__all__ = ["MAX_WORKERS", "ExclusiveQueue", "cpu_workers", "run_in_workers", "torch_threads"]

MAX_WORKERS = 4  # worker threads at most: each holds its own tile buffer

TItem = TypeVar("TItem")
TState = TypeVar("TState")
TResult = TypeVar("TResult")


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Set torch's intra-op thread count to ``n`` inside the block (restored afterwards; it is process-wide)."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)


def cpu_workers(n_items: int, device: torch.device, work: float = float("inf"), min_work: float = 0.0) -> int:
    """Worker threads for ``n_items`` independent pieces of work on ``device``: one per intra-op thread torch is
    allowed (``torch.get_num_threads()``, at most ``MAX_WORKERS``) on the CPU, 1 elsewhere (a GPU queues the ops)
    or when the ``work`` (in the caller's unit) is below ``min_work``: starting threads costs about a millisecond.

    >>> cpu_workers(10, torch.device("meta")), cpu_workers(10, torch.device("cpu"), work=5, min_work=100)
    (1, 1)
    """
    if device.type != "cpu" or work < min_work:
        return 1
    return max(1, min(torch.get_num_threads(), MAX_WORKERS, n_items))


class ExclusiveQueue(Generic[TItem]):
    """Hands out items in their order, skipping those that share a resource with an item being processed.

    >>> queue = ExclusiveQueue([(0, 1), (1, 2), (3, 4)], resources=lambda item: item)
    >>> first = queue.take(); second = queue.take()  # (1, 2) shares 1 with (0, 1): (3, 4) comes next
    >>> first, second
    ((0, 1), (3, 4))
    >>> queue.done(first); queue.take()
    (1, 2)
    """

    def __init__(self, items: Iterable[TItem], resources: Callable[[TItem], Iterable[Hashable]]):
        self._pending = list(items)
        self._resources = resources
        self._busy: Set[Hashable] = set()
        self._closed = False
        self._condition = threading.Condition()

    def take(self) -> Optional[TItem]:
        """The first pending item whose resources are free (waits while none is); None when all are handed out."""
        with self._condition:
            while self._pending and not self._closed:
                for position, item in enumerate(self._pending):
                    needs = set(self._resources(item))
                    if self._busy.isdisjoint(needs):
                        self._busy |= needs
                        return self._pending.pop(position)
                self._condition.wait()
            return None

    def done(self, item: TItem) -> None:
        """Free the resources of a processed item."""
        with self._condition:
            self._busy -= set(self._resources(item))
            self._condition.notify_all()

    def close(self) -> None:
        """Hand out nothing more (a worker failed)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()


def run_in_workers(
    items: Sequence[TItem],
    process: Callable[[TItem, TState], TResult],
    n_workers: int,
    make_state: Callable[[], TState],
    resources: Optional[Callable[[TItem], Iterable[Hashable]]] = None,
) -> List[TResult]:
    """``[process(item, state) for item in items]`` on ``n_workers`` threads (results in the items' order).

    Each worker makes its own ``state`` (a buffer, say) once. Torch's intra-op threads are divided among the
    workers while they run. Two items with a common ``resources(item)`` element never run at the same time
    (they write the same rows, say); their relative order is then not fixed, so ``process`` must give the same
    final result in any order. With one worker the items run in order in the calling thread, nothing changed.
    The first exception of a worker stops the others after their current item and is raised.

    >>> run_in_workers([1, 2, 3], lambda item, state: item * state, n_workers=2, make_state=lambda: 10)
    [10, 20, 30]
    """
    if n_workers <= 1 or len(items) <= 1:
        state = make_state()
        return [process(item, state) for item in items]
    queue: ExclusiveQueue[int] = ExclusiveQueue(
        range(len(items)), (lambda i: resources(items[i])) if resources is not None else (lambda i: ())
    )
    results: List[Optional[TResult]] = [None] * len(items)

    def work() -> None:
        state = make_state()
        while (i := queue.take()) is not None:
            try:
                results[i] = process(items[i], state)
            except BaseException:
                queue.close()
                raise
            finally:
                queue.done(i)

    with torch_threads(max(1, torch.get_num_threads() // n_workers)), ThreadPoolExecutor(n_workers) as pool:
        futures = [pool.submit(work) for _ in range(n_workers)]
        for future in futures:
            future.result()
    return results  # type: ignore[return-value]
