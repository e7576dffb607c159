"""Benchmark of evaluation under DDP: one process with W threads beside W processes with one thread each.

Self-retrieval of N samples (1000 balanced labels, dim 384 float32 unit vectors around label centres, the data of
``bench_metrics.py``); cmc@1,5, precision@5, map@5 and the default MAP@R, R-precision, MRR. Printed, in one run:

- one process, ``--world`` threads: ``EmbeddingMetrics.compute_metrics()``;
- sharded: ``--world`` gloo processes of one thread, each fed its DistributedSampler share, timing
  ``EmbeddingMetricsDDP.sync()`` + ``compute_metrics()`` (the slowest rank); each searches its share of the queries;
- replicated: the same with ``shard_queries=False`` (OML 0.4.4's way: every process computes everything);
- per rank: peak RSS, and the gallery embeddings it holds (all-gathered: the whole gallery).

The runs are interleaved ``--repeats`` times (medians shown) and the metrics of all runs must be equal bit for bit
(the script fails otherwise). Every process is a fresh interpreter, so its peak RSS is its own.

Usage: ``python benchmarks/bench_ddp_metrics.py [--n 50000] [--world 2] [--repeats 2] [--markdown]``.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any, Dict, List

from bench_metrics import DIM, full_data  # the same data (this folder is on the path of a script run)

ROOT = Path(__file__).resolve().parents[1]
METRIC_KWARGS: Dict[str, Any] = {
    "cmc_top_k": (1, 5),
    "precision_top_k": (5,),
    "map_top_k": (5,),
    "fmr_vals": (),
    "pfc_variance": (),
    "verbose": False,
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _data(n: int) -> Any:
    """``bench_metrics.py``'s data, flagged for self-retrieval, with the dataset index DDP needs."""
    import torch

    embeddings, labels = full_data(n)
    flags = torch.ones(n, dtype=torch.bool)
    return {"embeddings": embeddings, "labels": labels, "is_query": flags, "is_gallery": flags, "idx": torch.arange(n)}


def _flat_metrics(metrics: Dict[str, Any]) -> Dict[str, float]:
    from oml.utils.misc import flatten_dict

    return {key: float(value) for key, value in flatten_dict(metrics).items()}


def run_single(n: int, threads: int) -> Dict[str, Any]:
    import torch

    from oml.metrics.embeddings import EmbeddingMetrics

    torch.set_num_threads(threads)
    metric = EmbeddingMetrics(**METRIC_KWARGS)
    metric.setup(num_samples=n)
    metric.update_data(_data(n))
    start = time.perf_counter()
    metrics = metric.compute_metrics()
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": [_peak_rss_mb()], "metrics": _flat_metrics(metrics)}


def run_rank(n: int, world: int, rank: int, init: str, shard_queries: bool) -> Dict[str, Any]:
    import torch
    import torch.distributed as dist

    from oml.metrics.embeddings import EmbeddingMetricsDDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    data = _data(n)
    rows = torch.arange(rank, n, world)  # DistributedSampler's share (N divisible by the world: no padding)
    metric = EmbeddingMetricsDDP(**METRIC_KWARGS, extra_keys=("idx",), shard_queries=shard_queries)
    metric.setup(num_samples=len(rows))
    metric.update_data({key: value[rows] for key, value in data.items()})
    del data
    dist.barrier()
    start = time.perf_counter()
    metric.sync()
    metrics = metric.compute_metrics()
    seconds = time.perf_counter() - start
    gallery_mb = metric.retrieval_results.galleries.numel() * 4 / 2**20
    result = {"seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "gallery_mb": gallery_mb}
    gathered: List[Any] = [None] * world
    dist.all_gather_object(gathered, result)
    dist.destroy_process_group()
    return {
        "seconds": max(r["seconds"] for r in gathered),
        "peak_rss_mb": [r["peak_rss_mb"] for r in gathered],
        "gallery_mb": [r["gallery_mb"] for r in gathered],
        "metrics": _flat_metrics(metrics),
    }


def _worker_command(*args: Any) -> List[str]:
    return [sys.executable, __file__, "--worker", *map(str, args)]


def _run(mode: str, n: int, world: int) -> Dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if mode == "single":
        output = subprocess.run(_worker_command("single", n, world), capture_output=True, text=True, env=env)
        if output.returncode:
            raise RuntimeError(f"single failed:\n{output.stderr[-2000:]}")
        return json.loads(output.stdout.strip().splitlines()[-1])
    with tempfile.TemporaryDirectory() as folder:
        init = str(Path(folder) / "init")
        processes = [
            subprocess.Popen(
                _worker_command(mode, n, world, rank, init),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for rank in range(world)
        ]
        outputs = [p.communicate() for p in processes]
    for p, (_, err) in zip(processes, outputs):
        if p.returncode:
            raise RuntimeError(f"{mode} failed:\n{err[-2000:]}")
    return json.loads(outputs[0][0].strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mode, n, world, *rest = args.worker
        if mode == "single":
            result = run_single(int(n), int(world))
        else:
            result = run_rank(int(n), int(world), int(rest[0]), rest[1], shard_queries=mode == "sharded")
        print(json.dumps(result))
        return

    modes = ("single", "sharded", "replicated")
    runs: Dict[str, List[Dict[str, Any]]] = {mode: [] for mode in modes}
    print(f"N={args.n}, dim {DIM}, world {args.world}; {os.cpu_count()} cpus, load average {os.getloadavg()}")
    for _ in range(args.repeats):
        for mode in modes:  # interleaved: a change of load hits all alike
            runs[mode].append(_run(mode, args.n, args.world))
            print(f"  {mode}: {runs[mode][-1]['seconds']:.2f} s", flush=True)
    reference = runs["single"][0]["metrics"]
    for mode, results in runs.items():
        for result in results:
            if result["metrics"] != reference:
                raise AssertionError(f"{mode} metrics differ from one process: {result['metrics']} vs {reference}")
    seconds = {mode: statistics.median(r["seconds"] for r in results) for mode, results in runs.items()}
    rss = {mode: max(max(r["peak_rss_mb"]) for r in results) for mode, results in runs.items()}
    gallery_mb = args.n * DIM * 4 / 2**20
    lines = [
        "| run | time, s | / one process | peak RSS per process, MB | gallery held per process |",
        "|---|---:|---:|---:|---:|",
        f"| one process, {args.world} threads | {seconds['single']:.1f} | 1.00 | {rss['single']:.0f} | "
        f"{gallery_mb:.0f} MB (1.0x) |",
    ]
    for mode, label in (("sharded", "sharded (ours)"), ("replicated", "replicated (OML 0.4.4's way)")):
        held = max(runs[mode][0]["gallery_mb"])
        lines.append(
            f"| {args.world} processes x 1 thread, {label} | {seconds[mode]:.1f} | "
            f"{seconds[mode] / seconds['single']:.2f} | {rss[mode]:.0f} | {held:.0f} MB ({held / gallery_mb:.1f}x) |"
        )
    print("\n".join(lines))
    print(f"metrics equal in all {sum(len(r) for r in runs.values())} runs: {reference}")
    if args.markdown:
        print(
            f"\n{date.today().isoformat()}, `python benchmarks/bench_ddp_metrics.py --n {args.n} --world {args.world} "
            f"--repeats {args.repeats} --markdown`, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cpus, medians of {args.repeats} interleaved runs."
        )


if __name__ == "__main__":
    main()
