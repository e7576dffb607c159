"""Triplet losses: on given triplets, on a flat ``[a, p, n, a, p, n, ...]`` batch, and with a miner."""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oml.functional.losses import check_reduction, get_reduced
from oml.interfaces.criterions import ITripletLossWithMiner
from oml.interfaces.miners import ITripletsMiner, ITripletsMinerInBatch, TLabels
from oml.miners.inbatch_all_tri import AllTripletsMiner
from oml.utils.misc_torch import elementwise_dist


def _check_margin(margin: Optional[float]) -> None:
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0):
        raise ValueError(f"margin must be a non-negative number or None (soft margin), got {margin!r}.")


def triplet_losses(d_ap: Tensor, d_an: Tensor, margin: Optional[float]) -> Tensor:
    """Per-triplet losses: ``relu(margin + d_ap - d_an)``, or ``log(1 + exp(d_ap - d_an))`` if ``margin`` is None."""
    if margin is None:
        return F.softplus(d_ap - d_an)
    return F.relu(margin + d_ap - d_an)


def triplet_logs(losses: Tensor, d_ap: Tensor, d_an: Tensor) -> Dict[str, float]:
    """Share of active (non-zero loss) triplets and the mean positive and negative distances (0 without triplets)."""
    if losses.numel() == 0:
        return {"active_tri": 0.0, "pos_dist": 0.0, "neg_dist": 0.0}
    return {
        "active_tri": float((losses.detach() > 0).float().mean()),
        "pos_dist": float(d_ap.detach().mean()),
        "neg_dist": float(d_an.detach().mean()),
    }


def memory_triplet_logs(losses: Tensor, d_ap: Tensor, d_an: Tensor, is_original: Tensor) -> Dict[str, float]:
    """The logs of :func:`triplet_logs` for the original triplets and for those with a negative from the bank.

    The names are OML 0.4.4's: ``orig_active_tri``, ``bank_active_tri``, ``pos_dist_orig``, ``pos_dist_bank``,
    ``neg_dist_orig``, ``neg_dist_bank``. Weighted by the sizes of the two parts, they average to the overall logs.
    """
    logs: Dict[str, float] = {}
    for part, mask in (("orig", is_original), ("bank", ~is_original)):
        values = triplet_logs(losses[mask], d_ap[mask], d_an[mask])
        logs[f"{part}_active_tri"] = values["active_tri"]
        logs[f"pos_dist_{part}"] = values["pos_dist"]
        logs[f"neg_dist_{part}"] = values["neg_dist"]
    return logs


def pairwise_l2(x: Tensor) -> Tensor:
    """Differentiable Euclidean distance matrix ``[B, B]`` from one GEMM (its backward is two more GEMMs).

    Squared distances below ``1e-12`` (duplicates) get a zero gradient, like the norm of a zero vector.
    """
    x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    sq = (x * x).sum(dim=1)
    squared = torch.addmm(sq.unsqueeze(0) + sq.unsqueeze(1), x, x.T, alpha=-2.0)
    return squared.clamp_min(1e-12).sqrt()


# with more triplets than this many per sample, distances come from one distance matrix instead of gathers
_MATRIX_PATH_RATIO = 8


def _reduce(losses: Tensor, reduction: str, inputs: Tensor) -> Tensor:
    # no triplets: a zero that is still connected to the graph (OML 0.4.4 returned NaN for "mean")
    if losses.numel() == 0 and reduction != "none":
        return inputs.sum() * 0.0
    return get_reduced(losses, reduction)


def _check_triplet_shapes(anchor: Tensor, positive: Tensor, negative: Tensor) -> None:
    if anchor.ndim != 2 or anchor.shape != positive.shape or anchor.shape != negative.shape:
        raise ValueError(
            f"anchor, positive and negative must be matrices [N, D] of the same shape, got "
            f"{tuple(anchor.shape)}, {tuple(positive.shape)} and {tuple(negative.shape)}."
        )


class TripletLoss(nn.Module):
    """Triplet loss on given triplets with Euclidean distances.

    ``loss = relu(margin + d(a, p) - d(a, n))``, or the soft-margin version
    ``log(1 + exp(d(a, p) - d(a, n)))`` when ``margin`` is None. Without triplets the loss is 0
    (not NaN).

    Args:
        margin: the margin, or None for the soft margin.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        need_logs: store ``active_tri`` (share of triplets with non-zero loss), ``pos_dist`` and
            ``neg_dist`` (mean distances) in ``last_logs``.

    >>> import torch
    >>> a, p, n = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    >>> TripletLoss(margin=1.5)(a, p, n)
    tensor(0.5000)
    """

    criterion_name = "triplet"

    def __init__(self, margin: Optional[float], reduction: str = "mean", need_logs: bool = False):
        super().__init__()
        _check_margin(margin)
        check_reduction(reduction)
        self.margin = margin
        self.reduction = reduction
        self.need_logs = need_logs
        self.last_logs: Dict[str, float] = {}

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        _check_triplet_shapes(anchor, positive, negative)
        d_ap = elementwise_dist(anchor, positive, p=2)
        d_an = elementwise_dist(anchor, negative, p=2)
        losses = triplet_losses(d_ap, d_an, self.margin)
        if self.need_logs:
            self.last_logs = triplet_logs(losses, d_ap, d_an)
        return _reduce(losses, self.reduction, anchor)


def get_tri_ids_in_plain(n: int) -> Tuple[List[int], List[int], List[int]]:
    """Positions of anchors, positives and negatives in a flat batch ``[a, p, n, a, p, n, ...]`` of size ``n``.

    >>> get_tri_ids_in_plain(6)
    ([0, 3], [1, 4], [2, 5])
    """
    if n % 3 != 0:
        raise ValueError(f"A flat batch of triplets must have a size divisible by 3, got {n}.")
    return list(range(0, n, 3)), list(range(1, n, 3)), list(range(2, n, 3))


class TripletLossPlain(nn.Module):
    """``TripletLoss`` on a flat batch of features laid out as ``[a, p, n, a, p, n, ...]``.

    >>> import torch
    >>> TripletLossPlain(margin=1.5)(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]))
    tensor(0.5000)
    """

    criterion_name = "triplet"

    def __init__(self, margin: Optional[float], reduction: str = "mean", need_logs: bool = False):
        super().__init__()
        self.criterion = TripletLoss(margin=margin, reduction=reduction, need_logs=need_logs)

    @property
    def last_logs(self) -> Dict[str, float]:
        return self.criterion.last_logs

    def forward(self, features: Tensor) -> Tensor:
        ids_a, ids_p, ids_n = get_tri_ids_in_plain(len(features))
        return self.criterion(features[ids_a], features[ids_p], features[ids_n])


class TripletLossWithMiner(ITripletLossWithMiner):
    """Triplet loss on the triplets that ``miner`` picks from a batch of features and labels.

    With in-batch miners (all, hard, n-hard triplets, PML miners) the distances of many triplets are
    read from one differentiable distance matrix (cost ``O(B^2 D + T)``) rather than computed on
    ``3 x T`` gathered feature vectors (``O(T D)``, what OML 0.4.4 did): all the ~444k triplets of a
    32 x 8 batch cost a few GEMMs instead of gigabytes of copies.

    The miner is called through its public methods only: ``sample_ids`` for in-batch miners
    (``ITripletsMinerInBatch``), ``sample`` for the others. A miner whose ``sample`` returns a fourth
    value, ``is_original_tri`` (``TripletMinerWithMemory``), gets the logs split between the original
    triplets and the ones with negatives from the memory bank, under OML 0.4.4's names (see
    ``memory_triplet_logs``). ``last_logs`` (if ``need_logs``) holds ``active_tri``, ``pos_dist``,
    ``neg_dist`` and the miner's own ``last_logs``.

    Args:
        margin: the margin, or None for the soft margin.
        miner: the triplet miner (default: ``AllTripletsMiner()``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        need_logs: fill ``last_logs``.

    >>> import torch
    >>> from oml.miners.inbatch_hard_tri import HardTripletsMiner
    >>> criterion = TripletLossWithMiner(margin=0.2, miner=HardTripletsMiner(), need_logs=True)
    >>> loss = criterion(torch.randn(8, 4, requires_grad=True), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    >>> sorted(criterion.last_logs)
    ['active_tri', 'neg_dist', 'pos_dist']
    """

    criterion_name = "triplet"

    def __init__(
        self,
        margin: Optional[float],
        miner: Optional[ITripletsMiner] = None,
        reduction: str = "mean",
        need_logs: bool = False,
    ):
        super().__init__()
        _check_margin(margin)
        check_reduction(reduction)
        miner = AllTripletsMiner() if miner is None else miner
        if not isinstance(miner, ITripletsMiner):
            raise TypeError(f"miner must be an ITripletsMiner, got {type(miner).__name__}.")
        self.margin = margin
        self.miner = miner
        self.reduction = reduction
        self.need_logs = need_logs
        self.last_logs: Dict[str, float] = {}

    def extra_repr(self) -> str:
        return f"margin={self.margin}, miner={self.miner!r}, reduction={self.reduction!r}, need_logs={self.need_logs}"

    def _distances(self, features: Tensor, labels: TLabels) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """Distances anchor-positive and anchor-negative of the mined triplets (and ``is_original`` if any)."""
        is_original = None
        if isinstance(self.miner, ITripletsMinerInBatch):
            ids_a, ids_p, ids_n = self.miner.sample_ids(features, labels)
            if len(ids_a) > _MATRIX_PATH_RATIO * len(features):
                flat = pairwise_l2(features).reshape(-1)  # 1d index_select: faster than 2d indexing (and its backward)
                rows = ids_a * len(features)
                return flat.index_select(0, rows + ids_p), flat.index_select(0, rows + ids_n), None
            anchor, positive, negative = features[ids_a], features[ids_p], features[ids_n]
        else:
            mined = self.miner.sample(features, labels)
            anchor, positive, negative = mined[:3]
            if len(mined) == 4:
                is_original = torch.as_tensor(mined[3], dtype=torch.bool, device=features.device)
                if is_original.shape != (len(anchor),):
                    raise RuntimeError(
                        f"{type(self.miner).__name__}.sample returned is_original_tri of shape "
                        f"{tuple(is_original.shape)} for {len(anchor)} triplets."
                    )
        return elementwise_dist(anchor, positive, p=2), elementwise_dist(anchor, negative, p=2), is_original

    def forward(self, features: Tensor, labels: TLabels) -> Tensor:
        d_ap, d_an, is_original = self._distances(features, labels)
        losses = triplet_losses(d_ap, d_an, self.margin)
        if self.need_logs:
            logs = triplet_logs(losses, d_ap, d_an)
            if is_original is not None:
                logs.update(memory_triplet_logs(losses, d_ap, d_an, is_original))
            logs.update(getattr(self.miner, "last_logs", None) or {})
            self.last_logs = logs
        return _reduce(losses, self.reduction, features)


__all__ = [
    "TripletLoss",
    "TripletLossPlain",
    "TripletLossWithMiner",
    "get_tri_ids_in_plain",
    "triplet_losses",
    "triplet_logs",
    "memory_triplet_logs",
    "pairwise_l2",
]
