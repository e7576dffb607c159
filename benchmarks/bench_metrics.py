"""Benchmark of EmbeddingMetrics on self-retrieval (every sample is a query and a gallery item).

N samples, 1000 balanced labels, dim 384 float32 (unit vectors around label centres); cmc@1,5, precision@5,
map@5. Every measurement runs in its own subprocess, so that its peak RSS is its own. Printed per N:

- ours: ``EmbeddingMetrics.compute_metrics()`` (time) and the peak RSS of the process;
- GEMM: a bare chunked GEMM over the same N x N (4096 x 4096 tiles, the compute lower bound of a dense
  search); ours and the GEMM run interleaved, ``repeats`` times each, and the ratio of their medians is shown;
- dense: OML 0.4.4's way (full ``cdist`` matrix + ``topk``) where it fits (``--dense-max``). Its metrics can differ
  from ours in the last digits: ``cdist`` uses the GEMM formula and its rounding errors reorder near-ties, while
  ours are computed from exact distances (``tests/`` check equality against an exact dense oracle).

Usage: ``python benchmarks/bench_metrics.py [--sizes 10000 50000 200000] [--repeats 2] [--dense-max 20000]``.
The RSS includes the interpreter with torch imported (about 0.5 GB for a CUDA build of torch), shown as "import".
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

DIM, N_LABELS, BATCH = 384, 1000, 4096
ROOT = Path(__file__).resolve().parents[1]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _batches(n: int) -> Iterator[Tuple[Any, Any]]:
    """Deterministic data, generated batch by batch (no full copy besides the metric's own storage)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(N_LABELS, DIM, generator=generator), dim=1)
    for start in range(0, n, BATCH):
        labels = torch.arange(start, min(n, start + BATCH)) % N_LABELS
        embeddings = centres[labels] + 0.12 * torch.randn(len(labels), DIM, generator=generator)
        yield torch.nn.functional.normalize(embeddings, dim=1), labels


def _full_data(n: int) -> Tuple[Any, Any]:
    import torch

    embeddings, labels = zip(*_batches(n))
    return torch.cat(embeddings), torch.cat(labels)


def run_ours(n: int) -> Dict[str, Any]:
    import torch

    from oml.metrics.embeddings import EmbeddingMetrics

    import_rss = _peak_rss_mb()
    metric = EmbeddingMetrics(
        cmc_top_k=(1, 5), precision_top_k=(5,), map_top_k=(5,), fmr_vals=(), pfc_variance=(), verbose=False
    )
    metric.setup(num_samples=n)
    for embeddings, labels in _batches(n):
        flags = torch.ones(len(labels), dtype=torch.bool)
        metric.update_data({"embeddings": embeddings, "labels": labels, "is_query": flags, "is_gallery": flags})
    start = time.perf_counter()
    metrics = metric.compute_metrics()
    seconds = time.perf_counter() - start
    values = {f"{name}@{k}": round(float(v), 6) for name, d in metrics["OVERALL"].items() for k, v in d.items()}
    return {"seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "import_rss_mb": import_rss, "metrics": values}


def run_gemm(n: int) -> Dict[str, Any]:
    import torch

    x, _ = _full_data(n)
    tile = 4096
    buffer = torch.empty(tile * tile)
    start = time.perf_counter()
    for r0 in range(0, n, tile):
        queries = x[r0 : r0 + tile]
        for c0 in range(0, n, tile):
            galleries = x[c0 : c0 + tile]
            torch.mm(queries, galleries.T, out=buffer[: len(queries) * len(galleries)].view(len(queries), -1))
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": _peak_rss_mb()}


def run_dense(n: int) -> Dict[str, Any]:
    """OML 0.4.4: the full distance matrix, the full gt mask, topk, then the metrics."""
    import torch

    from oml.functional.metrics import calc_retrieval_metrics_on_topk

    x, labels = _full_data(n)
    start = time.perf_counter()
    distances = torch.cdist(x, x)
    distances.fill_diagonal_(float("inf"))
    mask_gt = labels[:, None] == labels[None, :]
    mask_gt.fill_diagonal_(False)
    top = torch.topk(distances, 5, dim=1, largest=False).indices
    metrics = calc_retrieval_metrics_on_topk(mask_gt.gather(1, top), mask_gt.sum(dim=1), (1, 5), (5,), (5,))
    seconds = time.perf_counter() - start
    values = {f"{name}@{k}": round(float(v), 6) for name, d in metrics.items() for k, v in d.items()}
    return {"seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "metrics": values}


def _subprocess(mode: str, n: int) -> Dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, __file__, "--worker", mode, "--n", str(n)]
    output = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if output.returncode != 0:
        return {"error": output.stderr.strip().splitlines()[-1] if output.stderr else f"exit {output.returncode}"}
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs of ours and of the GEMM per size")
    parser.add_argument("--dense-max", type=int, default=20_000, help="largest N for the dense baseline")
    parser.add_argument("--worker", choices=["ours", "gemm", "dense"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps({"ours": run_ours, "gemm": run_gemm, "dense": run_dense}[args.worker](args.n)))
        return

    print(f"torch threads: {os.cpu_count()} cpus; load average at start: {os.getloadavg()}")
    header = (
        f"{'N':>8} | {'ours s':>8} | {'GEMM s':>8} | {'ours/GEMM':>9} | {'dense s':>8} | "
        f"{'ours RSS MB':>11} | {'import MB':>9} | {'dense RSS MB':>12} | max |ours - dense|"
    )
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        ours: List[Dict[str, Any]] = []
        gemm: List[Dict[str, Any]] = []
        for _ in range(args.repeats):
            gemm.append(_subprocess("gemm", n))
            ours.append(_subprocess("ours", n))
        errors = [r["error"] for r in ours + gemm if "error" in r]
        if errors:
            print(f"{n:>8} | failed: {errors[0]}")
            continue
        ours_s = statistics.median(r["seconds"] for r in ours)
        gemm_s = statistics.median(r["seconds"] for r in gemm)
        dense_s, dense_rss, equal = "-", "-", "-"
        if n <= args.dense_max:
            dense = _subprocess("dense", n)
            if "error" in dense:
                dense_s = "failed"
            else:
                dense_s, dense_rss = f"{dense['seconds']:.2f}", f"{dense['peak_rss_mb']:.0f}"
                equal = f"{max(abs(dense['metrics'][k] - ours[0]['metrics'][k]) for k in dense['metrics']):.1e}"
        else:
            dense_rss = f"needs ~{n * n * 5 / 2**30:.0f} GB"
        ours_rss, import_rss = max(r["peak_rss_mb"] for r in ours), ours[0]["import_rss_mb"]
        print(
            f"{n:>8} | {ours_s:>8.2f} | {gemm_s:>8.2f} | {ours_s / gemm_s:>9.2f} | {dense_s:>8} | "
            f"{ours_rss:>11.0f} | {import_rss:>9.0f} | {dense_rss:>12} | {equal}"
        )
        runs_ours, runs_gemm = [round(r["seconds"], 2) for r in ours], [round(r["seconds"], 2) for r in gemm]
        print(f"{'':>8}   runs: ours {runs_ours}, GEMM {runs_gemm}; metrics {ours[0]['metrics']}", flush=True)


if __name__ == "__main__":
    main()
