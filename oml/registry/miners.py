"""Miners by name: ``MINERS_REGISTRY``, ``get_miner``, ``get_miner_by_cfg`` (and ``pml.<Miner>`` names)."""

import inspect
from typing import Any, Dict, Type

from oml.interfaces.miners import ITripletsMiner
from oml.miners.cross_batch import TripletMinerWithMemory
from oml.miners.inbatch_all_tri import AllTripletsMiner
from oml.miners.inbatch_hard_cluster import HardClusterMiner
from oml.miners.inbatch_hard_tri import HardTripletsMiner
from oml.miners.inbatch_nhard_tri import NHardTripletsMiner
from oml.miners.miner_with_bank import MinerWithBank
from oml.miners.pml import PMLMiner
from oml.registry._base import LazyNamespace, build, check_in_registry, is_cfg, parse_cfg
from oml.registry.pml import build_pml_arguments

MINERS_REGISTRY: Dict[str, Type[ITripletsMiner]] = {
    "all_triplets": AllTripletsMiner,
    "hard_cluster": HardClusterMiner,
    "hard_triplets": HardTripletsMiner,
    "triplets_with_memory": TripletMinerWithMemory,
    "miner_with_bank": MinerWithBank,
    "n_hard_triplets": NHardTripletsMiner,
}


def _is_pml_miner(attr: str, value: Any) -> bool:
    if not inspect.isclass(value) or attr.startswith("Base"):
        return False
    from pytorch_metric_learning.miners import BaseMiner

    return issubclass(value, BaseMiner)


PML_MINERS = LazyNamespace("pml.", "pytorch_metric_learning.miners", extra="pml", predicate=_is_pml_miner)


def _build_miner(name: str, args: Dict[str, Any], runtime: Dict[str, Any]) -> Any:
    args = dict(args)
    if is_cfg(args.get("miner")):
        args["miner"] = get_miner_by_cfg(args["miner"])
    if PML_MINERS.owns(name):
        constructor = PML_MINERS.resolve(name, "miner")
        return PMLMiner(build(constructor, "miner", name, build_pml_arguments(args, name), runtime))
    check_in_registry(name, MINERS_REGISTRY, "miner", extra=[PML_MINERS.hint()])
    return build(MINERS_REGISTRY[name], "miner", name, args, runtime)


def get_miner(name: str, **kwargs: Any) -> Any:
    """Build the miner registered as ``name``; a nested ``miner`` may be given as a ``{name, args}`` config.

    Names ``pml.<ClassName>`` build a pytorch-metric-learning miner wrapped into ``PMLMiner``; its
    distance may be a nested ``{name, args}`` block (``distance={"name": "pml.CosineSimilarity"}``).

    >>> get_miner("n_hard_triplets", n_positive=2, n_negative=[2, 5]).negative_range
    (2, 5)
    >>> get_miner("miner_with_bank", bank_size_in_batches=2, miner={"name": "hard_triplets"}).negative_range
    (1, 1)
    """
    return _build_miner(name, kwargs, {})


def get_miner_by_cfg(cfg: Any, **kwargs_runtime: Any) -> Any:
    """Build a miner from ``{"name": ..., "args": {...}}`` (a dict or an OmegaConf config).

    ``kwargs_runtime`` are passed only to constructors that name them.
    """
    name, args = parse_cfg(cfg, "miner")
    return _build_miner(name, args, kwargs_runtime)


__all__ = ["MINERS_REGISTRY", "PML_MINERS", "get_miner", "get_miner_by_cfg"]
