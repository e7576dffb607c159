"""GPU check of the exact kNN kernel: bfloat16 screening against the float32 path, plus timings (< 5 minutes).

Run on a machine with CUDA: ``python benchmarks/gpu_check.py [--n 100000] [--dim 384]``. For two data sets
(clustered embeddings, whose neighbours stand out, and near-uniform random directions, the hard case for
screening), it runs ``exact_knn`` with ``screening="off"`` and ``"on"`` and ``"auto"``, asserts that the
results are identical to the bit, and prints the times beside a bare float32 and bfloat16 GEMM of the same
size. Exits non-zero on any difference. Without CUDA it runs on the CPU at a small size (a smoke test).
"""

import argparse
import sys
import time
from typing import Callable, Tuple

import torch

from oml.functional.knn import exact_knn


def timed(function: Callable[[], object], device: torch.device) -> Tuple[object, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def bare_gemm(x: torch.Tensor, dtype: torch.dtype, tile: int = 8192) -> None:
    y = x.to(dtype)
    for r0 in range(0, len(y), tile):
        torch.mm(y[r0 : r0 + tile], y.T)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n = args.n if device.type == "cuda" else min(args.n, 3000)
    print(
        f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), n={n}, dim={args.dim}"
    )
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % max(1, n // 50)
    centres = torch.nn.functional.normalize(torch.randn(int(labels.max()) + 1, args.dim, generator=generator), dim=1)
    datasets = {
        "clustered": centres[labels] + 0.03 * torch.randn(n, args.dim, generator=generator),
        "random directions": torch.randn(n, args.dim, generator=generator),
    }
    failures = 0
    _, gemm32 = timed(lambda: bare_gemm(datasets["clustered"].to(device), torch.float32), device)
    _, gemm16 = timed(lambda: bare_gemm(datasets["clustered"].to(device), torch.bfloat16), device)
    print(f"bare GEMM {n} x {n}: float32 {gemm32:.2f} s, bfloat16 {gemm16:.2f} s ({gemm32 / gemm16:.1f}x)")
    for name, data in datasets.items():
        x = torch.nn.functional.normalize(data, dim=1).to(device)
        ids = torch.arange(n, device=device)
        results = {}
        for mode in ("off", "on", "auto"):
            results[mode], seconds = timed(
                lambda m=mode, x=x, i=ids: exact_knn(x, x, args.k, i, i, screening=m), device
            )
            print(f"{name:>18} | screening {mode:>4}: {seconds:7.2f} s ({seconds / gemm32:.2f}x the float32 GEMM)")
        for mode in ("on", "auto"):
            same = torch.equal(results[mode].indices, results["off"].indices) and torch.equal(
                results[mode].distances, results["off"].distances
            )
            failures += not same
            print(f"{name:>18} | {mode} == off: {same}")
    print("OK" if failures == 0 else f"FAILED: {failures} differences")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
