"""Benchmark of exact top-k search: ``SearchIndex`` (``oml.functional.knn.exact_knn``) vs Faiss and a bare GEMM.

Configs (``--configs``): ``Q x G x D`` float32 unit vectors around 1000 centres (like embeddings), top-10.
Every measurement runs in its own subprocess, so its peak RSS is its own (it includes the data and the
interpreter with torch imported, shown as "base"). Printed per config:

- ours: ``SearchIndex(galleries).search(queries, 10)`` (exact distances and order, ties by gallery index),
  and a second search with the same index (which keeps the prepared gallery operand of its GEMM);
- faiss flat: ``faiss.IndexFlatL2`` add + search (exact up to float32 rounding of the GEMM formula);
- GEMM: a bare chunked ``queries @ galleries.T`` (4096 x 32768 tiles, results discarded): the compute lower
  bound of any exact brute-force search;
- faiss ivf (optional, ``--ivf``): ``SearchIndex(backend="faiss_ivf")`` build + search and its recall@10
  against ours.

Usage: ``python benchmarks/bench_search.py [--configs 10000x1000000x128 10000x100000x384] [--ivf]``.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

K = 10
N_CENTRES = 1000
ROOT = Path(__file__).resolve().parents[1]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _data(n_queries: int, n_galleries: int, dim: int) -> Tuple[Any, Any]:
    import torch

    generator = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(N_CENTRES, dim, generator=generator), dim=1)

    def sample(n: int) -> Any:
        out = torch.empty(n, dim)
        for start in range(0, n, 65536):
            stop = min(n, start + 65536)
            ids = torch.randint(0, N_CENTRES, (stop - start,), generator=generator)
            out[start:stop] = centres[ids] + 0.15 * torch.randn(stop - start, dim, generator=generator)
        return torch.nn.functional.normalize(out, dim=1)

    return sample(n_queries), sample(n_galleries)


def measure(method: str, n_queries: int, n_galleries: int, dim: int) -> Dict[str, Any]:
    import torch

    queries, galleries = _data(n_queries, n_galleries, dim)
    base = _peak_rss_mb()
    result: Dict[str, Any] = {}
    start = time.perf_counter()
    if method == "ours":
        from oml.retrieval.index import SearchIndex

        index = SearchIndex(galleries)
        found = index.search(queries, top_k=K)
        torch.save(found.indices, ROOT / "benchmarks" / f".bench_search_exact_{n_queries}_{n_galleries}_{dim}.pt")
        first = time.perf_counter() - start
        again = index.search(queries, top_k=K)  # the index keeps its prepared gallery operand
        result["second_search_s"] = time.perf_counter() - start - first
        assert torch.equal(again.indices, found.indices)
    elif method == "faiss_flat":
        import faiss

        index = faiss.IndexFlatL2(dim)
        index.add(galleries.numpy())
        index.search(queries.numpy(), K)
    elif method == "gemm":
        height, width = 4096, 32768
        tile = torch.empty(height, width)
        for r in range(0, n_queries, height):
            q = queries[r : r + height]
            for c in range(0, n_galleries, width):
                g = galleries[c : c + width]
                torch.mm(q, g.T, out=tile[: len(q), : len(g)])
    elif method == "faiss_ivf":
        from oml.retrieval.index import SearchIndex

        found = SearchIndex(galleries, backend="faiss_ivf").search(queries, top_k=K)
        exact = torch.load(ROOT / "benchmarks" / f".bench_search_exact_{n_queries}_{n_galleries}_{dim}.pt")
        hits = sum(len(set(a) & set(b)) for a, b in zip(found.indices.tolist(), exact.tolist()))
        result["recall"] = hits / exact.numel()
    else:
        raise ValueError(method)
    seconds = time.perf_counter() - start - result.get("second_search_s", 0.0)
    result.update({"seconds": seconds, "peak_mb": _peak_rss_mb(), "base_mb": base})
    return result


def _run(method: str, config: str) -> Dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", method, config], capture_output=True, text=True, cwd=ROOT, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{method} {config} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", nargs="+", default=["10000x1000000x128", "10000x100000x384"])
    parser.add_argument("--ivf", action="store_true", help="also time faiss_ivf and measure its recall@10")
    parser.add_argument("--markdown", action="store_true", help="also print the table in markdown (for the docs)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        method, config = args.worker
        print(json.dumps(measure(method, *map(int, config.split("x")))))
        return

    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; top-{K}; float32 unit vectors")
    header = f"{'Q x G x D':>20} | {'method':>10} | {'time, s':>8} | {'vs GEMM':>7} | {'peak RSS, MB':>12} | extra"
    print(header)
    print("-" * len(header))
    markdown = ["| Q x G x D | method | time, s | vs GEMM | peak RSS, MB | notes |", "|---|---|---:|---:|---:|---|"]
    for config in args.configs:
        methods = ["gemm", "ours", "faiss_flat"] + (["faiss_ivf"] if args.ivf else [])
        results: Dict[str, Dict[str, Any]] = {}
        for method in methods:
            r = results[method] = _run(method, config)
            extra = f"recall@10 {r['recall']:.4f}" if "recall" in r else f"base {r['base_mb']:.0f} MB"
            if "second_search_s" in r:
                extra += f"; second search {r['second_search_s']:.1f} s ({r['second_search_s'] / r['seconds']:.2f}x)"
            ratio = r["seconds"] / results["gemm"]["seconds"]
            print(
                f"{config:>20} | {method:>10} | {r['seconds']:8.1f} | {ratio:7.2f} | {r['peak_mb']:12.0f} | {extra}",
                flush=True,
            )
            markdown.append(
                f"| {config} | {method} | {r['seconds']:.1f} | {ratio:.2f} | {r['peak_mb']:.0f} | {extra} |"
            )
        for path in (ROOT / "benchmarks").glob(".bench_search_exact_*.pt"):
            path.unlink()
    if args.markdown:
        print(f"\n{time.strftime('%Y-%m-%d')}, `python benchmarks/bench_search.py {' '.join(argv)}`:\n")
        print("\n".join(markdown))


if __name__ == "__main__":
    main(sys.argv[1:])
