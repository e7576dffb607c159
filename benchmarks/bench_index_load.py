"""Benchmark of the prepared gallery operand of ``SearchIndex``: its memory, and the first search vs a second
one vs the first one after ``load`` (with the operand stored in the file, and without it).

A search service answers small batches of queries against a large gallery: there the gallery operand of the
exact search (``oml.functional.knn.PreparedGallery``) costs as much as the GEMM, and keeping it (between
searches, and across ``save`` / ``load``) is what makes a search fast. Data: ``G x D`` float32 unit vectors
around 1000 centres, ``Q`` queries, top-10; files go to a temporary folder (read back from the page cache).

Usage: ``python benchmarks/bench_index_load.py [--galleries 1000000] [--dim 128] [--queries 100]``.
"""

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Tuple

import torch

from oml.retrieval.index import SearchIndex

K = 10


def _timed(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Tuple[Any, float]:
    start = time.perf_counter()
    value = call(*args, **kwargs)
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--galleries", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(1000, args.dim, generator=g), dim=1)
    galleries = centres[torch.randint(0, 1000, (args.galleries,), generator=g)]
    galleries = torch.nn.functional.normalize(galleries + 0.3 * torch.randn(galleries.shape, generator=g), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(args.queries, args.dim, generator=g), dim=1)

    index = SearchIndex(galleries)
    first, t_first = _timed(index.search, queries, K)
    _, t_second = _timed(index.search, queries, K)
    prepared = index.backend.prepared
    operand_mb = sum(t.numel() * t.element_size() for t in (prepared.gallery_aug, prepared.sq_norms)) / 2**20
    gallery_mb = galleries.numel() * galleries.element_size() / 2**20
    rows = [
        f"{args.queries} queries x {args.galleries} x {args.dim}, top-{K}, {torch.get_num_threads()} threads, "
        f"operand {prepared.tile_dtype}",
        f"gallery {gallery_mb:.0f} MB, prepared operand {operand_mb:.0f} MB ({operand_mb / gallery_mb:.2f}x)",
        f"first search {t_first:.2f} s, second search {t_second:.2f} s ({t_second / t_first:.2f}x)",
    ]
    with tempfile.TemporaryDirectory() as folder:
        for stored in (True, False):
            path = Path(folder) / f"index_{stored}.pt"
            _, t_save = _timed(index.save, path, prepared=stored)
            loaded, t_load = _timed(SearchIndex.load, path)
            result, t_after = _timed(loaded.search, queries, K)
            assert torch.equal(result.indices, first.indices) and torch.equal(result.distances, first.distances)
            rows.append(
                f"operand stored={stored}: file {path.stat().st_size / 2**20:.0f} MB, save {t_save:.2f} s, "
                f"load {t_load:.2f} s, first search after load {t_after:.2f} s ({t_after / t_first:.2f}x of a "
                f"first search), load + search {t_load + t_after:.2f} s"
            )
            del loaded
    print("\n".join(rows))


if __name__ == "__main__":
    main()
