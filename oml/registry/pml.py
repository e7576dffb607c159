"""The parts of pytorch-metric-learning (PML) objects by name: distances, reducers and regularizers.

PML losses and miners take such objects as arguments (``distance=CosineSimilarity()``,
``reducer=MeanReducer()``, ``embedding_regularizer=LpRegularizer()``). In a config they are nested
``{name, args}`` blocks, e.g. ``distance: {name: pml.CosineSimilarity}``; :func:`build_pml_arguments`
builds them (recursively) before the loss or miner is constructed.
"""

import inspect
from typing import Any, Dict, List

from oml.registry._base import LazyNamespace, RegistryKeyError, build, is_cfg, parse_cfg


def _is_public_class(attr: str, value: Any) -> bool:
    return inspect.isclass(value) and not attr.startswith("Base")


PML_PARTS: List[LazyNamespace] = [
    LazyNamespace("pml.", f"pytorch_metric_learning.{module}", extra="pml", predicate=_is_public_class)
    for module in ("distances", "reducers", "regularizers")
]


def _resolve_part(name: str, argument: str, owner: str) -> Any:
    for namespace in PML_PARTS:
        try:
            return namespace.resolve(name, "PML object")
        except RegistryKeyError:
            continue
    available = sorted(n for namespace in PML_PARTS for n in namespace.names())
    raise RegistryKeyError(
        f"Argument {argument!r} of {owner!r} names {name!r}, which is not a PML distance, reducer or regularizer. "
        f"Available: {available}."
    )


def build_pml_arguments(args: Dict[str, Any], owner: str) -> Dict[str, Any]:
    """``args`` of the PML class ``owner`` with every nested ``{name, args}`` block built into its PML object.

    Nested blocks may nest further (e.g. a regularizer with its own distance). Blocks must name PML
    classes (``pml.<ClassName>``); the ``miner`` and ``loss`` arguments are built by the loss and miner
    registries before this is called.

    >>> args = {"margin": 0.1, "distance": {"name": "pml.CosineSimilarity"}}
    >>> built = build_pml_arguments(args, "pml.TripletMarginLoss")
    >>> type(built["distance"]).__name__, built["margin"]
    ('CosineSimilarity', 0.1)
    """
    built = dict(args)
    for argument, value in args.items():
        if not is_cfg(value):
            continue
        name, nested_args = parse_cfg(value, argument)
        if not (isinstance(name, str) and name.startswith("pml.")):
            raise RegistryKeyError(
                f"Argument {argument!r} of {owner!r} is a {{name, args}} block naming {name!r}; blocks inside PML "
                f"arguments must name PML classes, e.g. 'pml.CosineSimilarity'."
            )
        constructor = _resolve_part(name, argument, owner)
        try:
            built[argument] = build(constructor, argument, name, build_pml_arguments(nested_args, name))
        except TypeError as e:  # PML classes take **kwargs, so a misspelled argument fails inside PML
            raise TypeError(
                f"Cannot build {argument} {name!r} for {owner!r} with arguments {sorted(nested_args)}: {e}"
            ) from e
    return built


__all__ = ["PML_PARTS", "build_pml_arguments"]
