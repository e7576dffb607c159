"""Where the time of ``exact_knn`` goes, for several k in one process (self-retrieval, bench_metrics' data).

Prints per k: the wall and CPU time of ``exact_knn(x, x, k, ids, ids, n_exact_distances=5, relevance=...)``
(what ``EmbeddingMetrics`` runs for MAP@R with R = k) and the time spent in its phases, summed over the worker
threads: the scan (GEMM tiles and candidate bookkeeping, wall), the candidate filtering and merging of the rows
and of the columns of the tiles, and the certification with its exact recomputations. The phases are timed by
wrapping the kernel's own functions, so the figures include the timers' small overhead.

Usage: ``python benchmarks/profile_knn.py [--n 50000] [--k 5 49]``
"""

import argparse
import collections
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from bench_metrics import full_data  # noqa: E402

import oml.functional.knn as knn  # noqa: E402

PHASES = {
    "scan (wall)": (knn, "_scan_symmetric"),
    "rows: filter + merge": (knn._Candidates, "update"),
    "columns: filter + merge": (knn._Candidates, "update_columns"),
    "certification + exact": (knn, "_finalize"),
}


def _timed(function: Callable[..., Any], name: str, totals: Dict[str, float], lock: threading.Lock) -> Callable:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            with lock:
                totals[name] += time.perf_counter() - start

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--k", type=int, nargs="+", default=[5, 49])
    args = parser.parse_args()
    embeddings, labels = full_data(args.n)
    ids = torch.arange(args.n)
    totals: Dict[str, float] = collections.defaultdict(float)
    lock = threading.Lock()
    for name, (owner, attribute) in PHASES.items():
        setattr(owner, attribute, _timed(getattr(owner, attribute), name, totals, lock))
    print(f"N={args.n}, torch threads: {torch.get_num_threads()}")
    for k in args.k:
        totals.clear()
        wall, cpu = time.perf_counter(), time.process_time()
        knn.exact_knn(embeddings, embeddings, k, ids, ids, n_exact_distances=5, relevance=(labels, labels))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        phases = ", ".join(f"{name} {seconds:.2f}" for name, seconds in totals.items())
        print(f"k={k}: wall {wall:.2f} s, CPU {cpu:.2f} s; {phases}", flush=True)


if __name__ == "__main__":
    main()
