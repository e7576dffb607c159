"""Benchmark of the training components: sampler set-up and epoch, miners and triplet loss per batch.

Prints one table: our time, an in-run baseline (a plain python implementation for the sampler, one
``torch.cdist`` of the same batch for the miners and losses) and their ratio.

    python benchmarks/bench_training_components.py [--device cuda] [--repeats 5] [--threads 1]
"""

import argparse
import random
import resource
import sys
import time
from collections import defaultdict
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch

from oml.losses.triplet import TripletLoss, TripletLossWithMiner
from oml.miners.inbatch_all_tri import AllTripletsMiner
from oml.miners.inbatch_hard_tri import HardTripletsMiner
from oml.samplers.balance import BalanceSampler

Row = Tuple[str, float, str, Optional[float]]


def timeit(fn: Callable[[], object], repeats: int, device: str, warmup: int = 1) -> float:
    """Best wall time of ``fn`` over ``repeats`` runs, in seconds (the minimum is the least disturbed by other load)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


class PythonBalanceSampler:
    """Baseline: the straightforward python version (dict of lists, ``random.sample`` per label)."""

    def __init__(self, labels: List[int], n_labels: int, n_instances: int):
        self.lbl2idx = defaultdict(list)
        for i, label in enumerate(labels):
            self.lbl2idx[label].append(i)
        self.labels = list(self.lbl2idx)
        self.n_labels, self.n_instances = n_labels, n_instances

    def __iter__(self):
        labels = random.sample(self.labels, len(self.labels))
        for start in range(0, len(labels) - self.n_labels + 1, self.n_labels):
            batch = []
            for label in labels[start : start + self.n_labels]:
                ids = self.lbl2idx[label]
                if len(ids) >= self.n_instances:
                    batch.extend(random.sample(ids, self.n_instances))
                else:
                    batch.extend(ids + random.choices(ids, k=self.n_instances - len(ids)))
            yield batch


def bench_sampler(repeats: int) -> List[Row]:
    rng = np.random.default_rng(0)
    n_samples, n_labels = 1_000_000, 200_000
    labels = np.concatenate(
        [np.arange(n_labels), np.arange(n_labels), rng.integers(0, n_labels, n_samples - 2 * n_labels)]
    )
    labels = rng.permutation(labels)
    labels_list = labels.tolist()

    def epoch(sampler):
        return sum(len(batch) for batch in sampler)

    ours_setup = timeit(lambda: BalanceSampler(labels_list, n_labels=100, n_instances=4), repeats, "cpu")
    base_setup = timeit(
        lambda: PythonBalanceSampler(labels_list, n_labels=100, n_instances=4), max(1, repeats // 2), "cpu"
    )
    ours = BalanceSampler(labels_list, n_labels=100, n_instances=4)
    base = PythonBalanceSampler(labels_list, n_labels=100, n_instances=4)
    ours_epoch = timeit(lambda: epoch(ours), repeats, "cpu")
    base_epoch = timeit(lambda: epoch(base), max(1, repeats // 2), "cpu")
    # OML 0.4.4 built one boolean mask per label: O(N x L); measured on 1% of the labels and scaled
    subset = np.unique(labels)[: n_labels // 100]
    start = time.perf_counter()
    _ = {label: np.flatnonzero(labels == label).tolist() for label in subset}
    oml_style = (time.perf_counter() - start) * 100
    return [
        ("BalanceSampler set-up, 1M samples / 200k labels (list input)", ours_setup, "python dict loop", base_setup),
        ("  same, OML-0.4.4-style mask per label (extrapolated from 1%)", ours_setup, "mask per label", oml_style),
        ("BalanceSampler one epoch (2000 batches of 100 x 4)", ours_epoch, "python random.sample loop", base_epoch),
    ]


def bench_batch(batch_size: int, p: int, k: int, device: str, repeats: int, dim: int = 384) -> List[Row]:
    """Miners and losses on one P x K batch, next to one ``torch.cdist`` of the same batch."""
    torch.manual_seed(0)
    features = torch.randn(batch_size, dim, device=device)
    labels = torch.arange(p, device=device).repeat_interleave(k)
    cdist = timeit(lambda: torch.cdist(features, features), repeats, device)
    tag = f"B={batch_size} ({p}x{k}), D={dim}"
    hard = HardTripletsMiner()
    n_all = batch_size * (k - 1) * (batch_size - k)
    max_out = sys.maxsize if batch_size <= 256 else 2**20
    all_miner = AllTripletsMiner(max_output_triplets=max_out)
    shown = "all" if max_out == sys.maxsize else f"max {max_out}"
    rows = [
        (f"HardTripletsMiner {tag}", timeit(lambda: hard._sample(features, labels), repeats, device), "1 cdist", cdist),
        (
            f"AllTripletsMiner {tag}, {shown} of {n_all} triplets",
            timeit(lambda: all_miner._sample(features, labels), repeats, device),
            "1 cdist",
            cdist,
        ),
    ]
    leaf = features.clone().requires_grad_(True)
    for name, miner in (("hard", hard), ("all", all_miner)):
        criterion = TripletLossWithMiner(margin=0.1, miner=miner)

        def step(criterion: TripletLossWithMiner = criterion) -> None:
            leaf.grad = None
            criterion(leaf, labels).backward()

        rows.append((f"TripletLossWithMiner({name}) fwd+bwd {tag}", timeit(step, repeats, device), "1 cdist", cdist))
    return rows


def bench_miners(device: str, repeats: int) -> List[Row]:
    rows = bench_batch(256, 32, 8, device, repeats) + bench_batch(1024, 64, 16, device, repeats)
    rows.append(bench_oml_style_loss(device, repeats))
    return rows


def bench_oml_style_loss(device: str, repeats: int) -> Row:
    """All triplets of a 16 x 8 batch: ours (one distance matrix) vs OML 0.4.4 (3 x T gathered vectors)."""
    torch.manual_seed(0)
    leaf = torch.randn(128, 384, device=device, requires_grad=True)
    labels = torch.arange(16, device=device).repeat_interleave(8)
    miner = AllTripletsMiner()
    ours = TripletLossWithMiner(margin=0.1, miner=miner)
    plain = TripletLoss(margin=0.1)

    def ours_step():
        leaf.grad = None
        ours(leaf, labels).backward()

    def oml_step():
        leaf.grad = None
        ids_a, ids_p, ids_n = miner._sample(leaf, labels)
        plain(leaf[ids_a], leaf[ids_p], leaf[ids_n]).backward()

    name = "TripletLossWithMiner(all) fwd+bwd B=128 (16x8), 107520 triplets"
    return (name, timeit(ours_step, repeats, device), "OML-style 3 x T x D gather", timeit(oml_step, 2, device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--skip-sampler", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    rows = ([] if args.skip_sampler else bench_sampler(args.repeats)) + bench_miners(args.device, args.repeats)
    width = max(len(r[0]) for r in rows)
    print(f"| {'what':<{width}} | ours, ms | baseline                   | baseline, ms | ours / baseline |")
    print(f"|{'-' * (width + 2)}|---------:|----------------------------|-------------:|----------------:|")
    for name, ours, base_name, base in rows:
        ratio = f"{ours / base:.2f}" if base else "-"
        base_ms = f"{base * 1e3:.2f}" if base is not None else "-"
        print(f"| {name:<{width}} | {ours * 1e3:8.2f} | {base_name:<26} | {base_ms:>12} | {ratio:>15} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the process: {peak:.0f} MiB", end="")
    if args.device.startswith("cuda"):
        print(f", peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB", end="")
    print()


if __name__ == "__main__":
    main()
