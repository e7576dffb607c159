"""Losses by name: ``LOSSES_REGISTRY``, ``get_criterion``, ``get_criterion_by_cfg`` (and ``pml.<Loss>`` names)."""

import inspect
from typing import Any, Dict, Type

from torch import nn

from oml.losses.arcface import ArcFaceLoss, ArcFaceLossWithMLP
from oml.losses.pml import PMLCriterion
from oml.losses.surrogate_precision import SurrogatePrecision
from oml.losses.triplet import TripletLoss, TripletLossPlain, TripletLossWithMiner
from oml.miners.pml import PMLMiner
from oml.registry._base import (
    LazyNamespace,
    RegistryKeyError,
    _signature,
    build,
    check_in_registry,
    is_cfg,
    parse_cfg,
)
from oml.registry.miners import get_miner_by_cfg
from oml.registry.pml import build_pml_arguments

LOSSES_REGISTRY: Dict[str, Type[nn.Module]] = {
    "triplet": TripletLoss,
    "triplet_plain": TripletLossPlain,
    "triplet_with_miner": TripletLossWithMiner,
    "surrogate_precision": SurrogatePrecision,
    "arcface": ArcFaceLoss,
    "mlp_arcface": ArcFaceLossWithMLP,
}

# values that a pipeline knows only at run time; get_criterion() drops them if the constructor does not take them
RUNTIME_KWARGS = ("label2category",)

# PML classes of ``pytorch_metric_learning.losses`` that are not offered, and why: an OML criterion is called
# as ``criterion(embeddings, labels)``, these cannot be
PML_LEFT_OUT = {
    "GenericPairLoss": "it is a base class",
    "MultipleLosses": "it takes a list of losses; combine criteria in your own module instead",
    "SelfSupervisedLoss": "it learns from two augmented views of each sample (embeddings, ref_emb), not from labels",
    "VICRegLoss": "it learns from two augmented views of each sample (embeddings, ref_emb) and refuses labels",
    "ManifoldLoss": "it is unsupervised and refuses labels",
}


def _is_pml_loss(attr: str, value: Any) -> bool:
    if not inspect.isclass(value) or attr.startswith("Base") or attr.endswith("Mixin") or attr in PML_LEFT_OUT:
        return False
    return issubclass(value, nn.Module)


PML_LOSSES = LazyNamespace("pml.", "pytorch_metric_learning.losses", extra="pml", predicate=_is_pml_loss)


def _build_pml_criterion(name: str, args: Dict[str, Any], runtime: Dict[str, Any]) -> PMLCriterion:
    reason = PML_LEFT_OUT.get(name[len(PML_LOSSES.prefix) :])
    if reason is not None:
        raise RegistryKeyError(f"{name!r} is not available as an OML criterion: {reason}.")
    constructor = PML_LOSSES.resolve(name, "criterion")
    need_logs = args.pop("need_logs", True)
    if is_cfg(args.get("loss")):  # wrappers such as pml.CrossBatchMemory take an inner loss
        inner = _build_criterion(*parse_cfg(args["loss"], "criterion"), runtime)
        args["loss"] = inner.loss if isinstance(inner, PMLCriterion) else inner
    signature = _signature(constructor)
    miner = args.pop("miner", None)
    if miner is not None and signature is not None and "miner" in signature.parameters:
        args["miner"] = miner.miner if isinstance(miner, PMLMiner) else miner  # the wrapper mines itself
        miner = None
    loss = build(constructor, "criterion", name, build_pml_arguments(args, name), runtime)
    return PMLCriterion(loss, miner=miner, need_logs=need_logs)


def _build_criterion(name: str, args: Dict[str, Any], runtime: Dict[str, Any]) -> nn.Module:
    args = dict(args)
    if is_cfg(args.get("miner")):
        args["miner"] = get_miner_by_cfg(args["miner"])
    if PML_LOSSES.owns(name):
        return _build_pml_criterion(name, args, runtime)
    check_in_registry(name, LOSSES_REGISTRY, "criterion", extra=[PML_LOSSES.hint()])
    return build(LOSSES_REGISTRY[name], "criterion", name, args, runtime)


def get_criterion(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss registered as ``name``.

    A nested ``miner`` may be a ``{name, args}`` config; ``label2category`` is dropped when the loss
    does not take it. Names ``pml.<ClassName>`` build a pytorch-metric-learning loss wrapped into
    ``PMLCriterion`` (called as ``criterion(embeddings, labels)``), its ``miner`` may be a PML or OML miner,
    and its distance, reducer and regularizers may be nested ``{name, args}`` blocks too
    (``distance={"name": "pml.CosineSimilarity"}``). PML losses that cannot be called with labels are
    left out (``PML_LEFT_OUT`` says why).

    >>> type(get_criterion("triplet_with_miner", margin=0.1, miner={"name": "hard_triplets"}).miner).__name__
    'HardTripletsMiner'
    >>> get_criterion("pml.MultiSimilarityLoss", miner={"name": "pml.MultiSimilarityMiner"}).criterion_name
    'multi_similarity'
    """
    runtime = {key: kwargs.pop(key) for key in RUNTIME_KWARGS if key in kwargs}
    return _build_criterion(name, kwargs, runtime)


def get_criterion_by_cfg(cfg: Any, **kwargs_runtime: Any) -> nn.Module:
    """Build a loss from ``{"name": ..., "args": {...}}`` (a dict or an OmegaConf config).

    ``kwargs_runtime`` (e.g. ``label2category``) are passed only to losses that name them.
    """
    name, args = parse_cfg(cfg, "criterion")
    return _build_criterion(name, args, kwargs_runtime)


__all__ = ["LOSSES_REGISTRY", "PML_LOSSES", "PML_LEFT_OUT", "RUNTIME_KWARGS", "get_criterion", "get_criterion_by_cfg"]
