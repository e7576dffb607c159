import threading
import time

import pytest
import torch

from oml.utils.threads import ExclusiveQueue, cpu_workers, run_in_workers, torch_threads


def test_results_come_in_item_order_and_each_worker_makes_one_state():
    states = []

    def make_state():
        states.append(threading.get_ident())
        return len(states)

    def process(item, state):
        time.sleep(0.001 * (item % 3))  # uneven durations: the items finish out of order
        return item * 10

    assert run_in_workers(list(range(12)), process, n_workers=3, make_state=make_state) == [i * 10 for i in range(12)]
    assert len(states) == 3 and len(set(states)) == 3


def test_items_sharing_a_resource_never_run_at_once():
    running, overlaps, lock = set(), [], threading.Lock()
    items = [(r, c) for r in range(4) for c in range(r, 4)]  # the tiles of a symmetric scan

    def process(item, _):
        with lock:
            if running & set(item):
                overlaps.append(item)
            running.update(item)
        time.sleep(0.002)
        with lock:
            running.difference_update(item)
        return item

    assert run_in_workers(items, process, 3, lambda: None, resources=lambda item: item) == items
    assert overlaps == []


def test_without_resources_the_workers_do_run_at_once():
    barrier = threading.Barrier(2, timeout=10)  # fails unless two items run at the same time

    def process(item, _):
        barrier.wait()
        return item

    assert run_in_workers([1, 2], process, 2, lambda: None) == [1, 2]


def test_a_failing_item_stops_the_others_and_raises():
    done = []

    def process(item, _):
        if item == 1:
            raise ValueError("item 1 failed")
        time.sleep(0.01)
        done.append(item)

    with pytest.raises(ValueError, match="item 1 failed"):
        run_in_workers(list(range(50)), process, 2, lambda: None)
    assert len(done) < 49


def test_torch_threads_are_divided_and_restored():
    seen = []
    with torch_threads(4):
        run_in_workers([0, 1, 2, 3], lambda item, _: seen.append(torch.get_num_threads()), 2, lambda: None)
        assert torch.get_num_threads() == 4
    assert set(seen) == {2}


def test_one_worker_runs_in_the_calling_thread_in_order():
    order = []
    run_in_workers([3, 1, 2], lambda item, _: order.append((item, threading.get_ident())), 1, lambda: None)
    assert order == [(3, threading.get_ident()), (1, threading.get_ident()), (2, threading.get_ident())]


def test_cpu_workers():
    cpu = torch.device("cpu")
    with torch_threads(3):
        assert cpu_workers(10, cpu) == 3
        assert cpu_workers(2, cpu) == 2  # not more than the items
        assert cpu_workers(10, cpu, work=10, min_work=100) == 1  # too little work for threads
    with torch_threads(1):
        assert cpu_workers(10, cpu) == 1


def test_queue_waits_for_a_resource_and_closes():
    queue = ExclusiveQueue([("a",), ("a",)], resources=lambda item: item)
    first = queue.take()
    taken = []
    waiter = threading.Thread(target=lambda: taken.append(queue.take()))
    waiter.start()
    time.sleep(0.05)
    assert taken == []  # blocked: "a" is busy
    queue.done(first)
    waiter.join(timeout=10)
    assert taken == [("a",)]
    queue.close()
    assert queue.take() is None
