"""Decisions on top of retrieval: k-NN classification (distance-weighted vote) and a "no match" threshold."""

from typing import Tuple

import torch
from torch import Tensor


def knn_vote(
    distances: Tensor, neighbour_labels: Tensor, weighting: str = "distance", eps: float = 1e-8
) -> Tuple[Tensor, Tensor]:
    """Classify each query by a vote of its retrieved neighbours.

    Args:
        distances: ``[Q, k]`` distances to the neighbours, ascending; ``inf`` marks a missing neighbour.
        neighbour_labels: ``[Q, k]`` integer label codes ``>= 0`` of the neighbours (ignored where missing).
        weighting: ``"distance"`` (weight ``1 / (d + eps)``) or ``"uniform"`` (one vote each).
        eps: keeps the weight of an exact duplicate finite.

    Returns:
        ``(codes [Q], confidence [Q])``: the winning label code (-1 if a query has no neighbour) and its share of
        the total weight. A tie goes to the label of the nearest neighbour among the tied labels.

    >>> knn_vote(torch.tensor([[0.1, 0.2, 0.3]]), torch.tensor([[1, 0, 0]]), weighting="uniform")
    (tensor([0]), tensor([0.6667]))
    >>> knn_vote(torch.tensor([[0.1, 1.0, 1.0]]), torch.tensor([[1, 0, 0]]))[0]
    tensor([1])
    """
    if distances.shape != neighbour_labels.shape or distances.ndim != 2:
        raise ValueError(
            f"distances and neighbour_labels must be [Q, k] of the same shape, got {tuple(distances.shape)} and "
            f"{tuple(neighbour_labels.shape)}."
        )
    if weighting not in ("distance", "uniform"):
        raise ValueError(f"weighting must be 'distance' or 'uniform', got {weighting!r}.")
    valid = torch.isfinite(distances)
    if torch.isnan(distances).any() or (neighbour_labels[valid] < 0).any():
        raise ValueError("distances must not be NaN and the labels of the neighbours must be codes >= 0.")
    n_queries = len(distances)
    if distances.shape[1] == 0 or n_queries == 0:
        return torch.full((n_queries,), -1, dtype=torch.long), torch.zeros(n_queries)
    codes = torch.where(valid, neighbour_labels.long(), torch.zeros_like(neighbour_labels, dtype=torch.long))
    if weighting == "distance":
        weights = torch.where(valid, 1.0 / (distances.double().clamp_min(0) + eps), torch.zeros((), dtype=torch.double))
    else:
        weights = valid.double()
    n_classes = int(codes.max()) + 1
    scores = torch.zeros(n_queries, n_classes, dtype=torch.float64).scatter_add_(1, codes, weights)
    best = scores.max(dim=1).values
    is_best = scores >= best[:, None] * (1 - 1e-12)
    candidate = is_best.gather(1, codes) & valid
    first = candidate.double().argmax(dim=1, keepdim=True)
    winner = codes.gather(1, first).squeeze(1)
    total = weights.sum(dim=1)
    has_any = valid.any(dim=1)
    winner = torch.where(has_any, winner, torch.full_like(winner, -1))
    confidence = torch.where(has_any, best / total.clamp_min(1e-300), torch.zeros_like(best))
    return winner, confidence.float()


def calibrate_threshold(distances: Tensor, is_correct: Tensor, max_false_match_rate: float) -> float:
    """The largest distance threshold that accepts at most ``max_false_match_rate`` of the wrong matches.

    A match is accepted when ``distance < threshold`` (``>=`` means "no match"). Typically ``distances`` are
    the top-1 distances of labelled validation queries and ``is_correct`` says whether the top-1 gallery has
    the query's label (queries whose label is absent from the gallery are wrong by definition).

    Args:
        distances: ``[N]`` distances of the matches.
        is_correct: ``[N]`` bools.
        max_false_match_rate: in ``[0, 1]``.

    Returns:
        The threshold (``inf`` if there are no wrong matches or the rate is 1).

    >>> calibrate_threshold(torch.tensor([0.1, 0.2, 0.5, 0.6, 0.9]), torch.tensor([1, 1, 0, 0, 0]).bool(), 0.34)
    0.6000000238418579
    """
    distances, is_correct = torch.as_tensor(distances).flatten(), torch.as_tensor(is_correct).flatten().bool()
    if len(distances) != len(is_correct):
        raise ValueError(f"distances and is_correct differ in length: {len(distances)} and {len(is_correct)}.")
    if torch.isnan(distances).any():
        raise ValueError("distances contain NaN.")
    if not 0 <= max_false_match_rate <= 1:
        raise ValueError(f"max_false_match_rate must be in [0, 1], got {max_false_match_rate}.")
    wrong = torch.sort(distances[~is_correct].double()).values
    n_allowed = int(max_false_match_rate * len(wrong) + 1e-9)
    if n_allowed >= len(wrong):
        return float("inf")
    return float(wrong[n_allowed])


def match_rates(distances: Tensor, is_correct: Tensor, threshold: float) -> Tuple[float, float]:
    """``(true match rate, false match rate)``: shares of the correct / wrong matches with ``distance < threshold``
    (NaN for an empty group)."""
    distances, is_correct = torch.as_tensor(distances).flatten(), torch.as_tensor(is_correct).flatten().bool()
    accepted = distances < threshold
    tmr = float(accepted[is_correct].double().mean()) if is_correct.any() else float("nan")
    fmr = float(accepted[~is_correct].double().mean()) if (~is_correct).any() else float("nan")
    return tmr, fmr


__all__ = ["knn_vote", "calibrate_threshold", "match_rates"]
