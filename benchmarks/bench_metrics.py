"""Benchmark of EmbeddingMetrics on self-retrieval (every sample is a query and a gallery item).

N samples, 1000 balanced labels, dim 384 float32 (unit vectors around label centres); cmc@1,5, precision@5,
map@5. Every measurement runs in its own subprocess, so that its peak RSS is its own. Printed per N:

- ours: ``EmbeddingMetrics.compute_metrics()`` (time) and the peak RSS of the process, with the default
  MAP@R, R-precision and MRR (R = 49 here: each label has N / 1000 samples);
- ours without them (``ranking_metrics=()``, OML 0.4.4's metrics only): the cost of the ranking metrics;
- GEMM: a bare chunked GEMM over the same N x N (4096 x 4096 tiles, the compute lower bound of a dense
  search); ours and the GEMM run interleaved, ``repeats`` times each, and the ratio of their medians is shown;
- dense: OML 0.4.4's way (full ``cdist`` matrix + ``topk``) where it fits (``--dense-max``). Its metrics can differ
  from ours in the last digits: ``cdist`` uses the GEMM formula and its rounding errors reorder near-ties, while
  ours are computed from exact distances (``tests/`` check equality against an exact dense oracle).

Usage: ``python benchmarks/bench_metrics.py [--sizes 10000 50000 200000] [--repeats 2] [--dense-max 20000]
[--threads T] [--markdown]`` (``--markdown``: also print the table in markdown, with the date, the command and the
CPU). The cost of the ranking metrics is also shown in CPU time (``time.process_time`` of the computation): on a
shared, oversubscribed machine wall-clock times vary by 2x from run to run, CPU time much less, in particular
with ``--threads 1`` (torch's intra-op threads; default: torch's own choice).
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


def full_data(n: int) -> Tuple[Any, Any]:
    import torch

    embeddings, labels = zip(*_batches(n))
    return torch.cat(embeddings), torch.cat(labels)


def run_ours(n: int, ranking: bool = True) -> Dict[str, Any]:
    import torch

    from oml.metrics.embeddings import EmbeddingMetrics

    import_rss = _peak_rss_mb()
    extra = {} if ranking else {"ranking_metrics": ()}
    metric = EmbeddingMetrics(
        cmc_top_k=(1, 5), precision_top_k=(5,), map_top_k=(5,), fmr_vals=(), pfc_variance=(), verbose=False, **extra
    )
    metric.setup(num_samples=n)
    for embeddings, labels in _batches(n):
        flags = torch.ones(len(labels), dtype=torch.bool)
        metric.update_data({"embeddings": embeddings, "labels": labels, "is_query": flags, "is_gallery": flags})
    start, cpu_start = time.perf_counter(), time.process_time()
    metrics = metric.compute_metrics()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    values = {
        f"{name}@{k}" if isinstance(d, dict) else name: round(float(v), 6)
        for name, d in metrics["OVERALL"].items()
        for k, v in (d.items() if isinstance(d, dict) else [(None, d)])
    }
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "import_rss_mb": import_rss,
        "metrics": values,
    }


def run_ours_plain(n: int) -> Dict[str, Any]:
    return run_ours(n, ranking=False)


def run_gemm(n: int) -> Dict[str, Any]:
    import torch

    x, _ = full_data(n)
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

    x, labels = full_data(n)
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
    parser.add_argument("--threads", type=int, help="torch intra-op threads in every measurement")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table (for the docs)")
    parser.add_argument("--worker", choices=["ours", "ours_plain", "gemm", "dense"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        os.environ["BENCH_THREADS"] = str(args.threads)  # inherited by the workers
    if args.worker:
        if os.environ.get("BENCH_THREADS"):
            import torch

            torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
        workers = {"ours": run_ours, "ours_plain": run_ours_plain, "gemm": run_gemm, "dense": run_dense}
        print(json.dumps(workers[args.worker](args.n)))
        return

    print(f"torch threads: {os.cpu_count()} cpus; load average at start: {os.getloadavg()}")
    header = (
        f"{'N':>8} | {'ours s':>8} | {'no MAP@R s':>10} | {'+ranking':>8} | {'+rank CPU':>9} | {'GEMM s':>8} | "
        f"{'ours/GEMM':>9} | "
        f"{'dense s':>8} | {'ours RSS MB':>11} | {'no MAP@R MB':>11} | {'import MB':>9} | {'dense RSS MB':>12} | "
        "max |ours - dense|"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for n in args.sizes:
        runs: Dict[str, List[Dict[str, Any]]] = {"gemm": [], "ours": [], "ours_plain": []}
        for _ in range(args.repeats):
            for mode in runs:  # interleaved, so that a change of load hits all three alike
                runs[mode].append(_subprocess(mode, n))
        errors = [r["error"] for results in runs.values() for r in results if "error" in r]
        if errors:
            print(f"{n:>8} | failed: {errors[0]}")
            continue
        seconds = {mode: statistics.median(r["seconds"] for r in results) for mode, results in runs.items()}
        cpu = {mode: statistics.median(r["cpu_seconds"] for r in runs[mode]) for mode in ("ours", "ours_plain")}
        rss = {mode: max(r["peak_rss_mb"] for r in results) for mode, results in runs.items()}
        ours = runs["ours"]
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
        row = {
            "n": n,
            "ours": seconds["ours"],
            "plain": seconds["ours_plain"],
            "ranking": seconds["ours"] / seconds["ours_plain"] - 1,
            "cpu": cpu["ours"],
            "plain_cpu": cpu["ours_plain"],
            "ranking_cpu": cpu["ours"] / cpu["ours_plain"] - 1,
            "gemm": seconds["gemm"],
            "ratio": seconds["ours"] / seconds["gemm"],
            "dense": dense_s,
            "rss": rss["ours"],
            "plain_rss": rss["ours_plain"],
            "import": ours[0]["import_rss_mb"],
            "dense_rss": dense_rss,
            "equal": equal,
        }
        rows.append(row)
        print(
            f"{n:>8} | {row['ours']:>8.2f} | {row['plain']:>10.2f} | {row['ranking']:>+8.0%} | "
            f"{row['ranking_cpu']:>+9.0%} | {row['gemm']:>8.2f} | "
            f"{row['ratio']:>9.2f} | {dense_s:>8} | {row['rss']:>11.0f} | {row['plain_rss']:>11.0f} | "
            f"{row['import']:>9.0f} | {dense_rss:>12} | {equal}"
        )
        runs_s = {mode: [round(r["seconds"], 2) for r in results] for mode, results in runs.items()}
        cpu_s = {mode: [round(r["cpu_seconds"], 2) for r in runs[mode]] for mode in cpu}
        print(f"{'':>8}   runs: {runs_s}; CPU: {cpu_s}; metrics {ours[0]['metrics']}", flush=True)
    if args.markdown:
        print_markdown(rows)


def print_markdown(rows: List[Dict[str, Any]]) -> None:
    """The table for the docs, with when, how and where it was measured."""
    flags = ""
    if Path("/proc/cpuinfo").is_file():
        cpu_flags = next(
            (line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), ""
        )
        flags = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in cpu_flags) or "-"
    print(
        f"\n{time.strftime('%Y-%m-%d')}, `python benchmarks/bench_metrics.py {' '.join(sys.argv[1:])}`, "
        f"{os.cpu_count()} CPUs (flags: {flags}):\n"
    )
    print(
        "| N | ours (s) | without MAP@R, R-precision, MRR (s) | cost of those | ours CPU (s) | without them CPU (s) "
        "| cost of those (CPU) | bare GEMM N x N (s) | ours / GEMM | dense OML-style (s) | ours peak RSS (MB) "
        "| without them (MB) | dense peak RSS |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['n']:,} | {r['ours']:.2f} | {r['plain']:.2f} | {r['ranking']:+.0%} | {r['cpu']:.2f} | "
            f"{r['plain_cpu']:.2f} | {r['ranking_cpu']:+.0%} | {r['gemm']:.2f} | "
            f"{r['ratio']:.2f} | {r['dense']} | {r['rss']:.0f} | {r['plain_rss']:.0f} | {r['dense_rss']} |"
        )


if __name__ == "__main__":
    main()
