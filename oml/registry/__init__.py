"""Registries: ``name -> constructor`` tables with ``get_<x>(name, **kwargs)`` and ``get_<x>_by_cfg(cfg)``.

Import them from their modules, e.g. ``from oml.registry.losses import get_criterion_by_cfg``.
"""

import importlib
from typing import Dict, List

_SHOWN = {
    "oml.registry.models": ("EXTRACTORS_REGISTRY", "PAIRWISE_MODELS_REGISTRY"),
    "oml.registry.losses": ("LOSSES_REGISTRY",),
    "oml.registry.miners": ("MINERS_REGISTRY",),
    "oml.registry.samplers": ("SAMPLERS_REGISTRY",),
    "oml.registry.optimizers": ("OPTIMIZERS_REGISTRY",),
    "oml.registry.schedulers": ("SCHEDULERS_REGISTRY",),
    "oml.registry.transforms": ("TRANSFORMS_REGISTRY",),
}


def show_registry() -> Dict[str, List[str]]:
    """Print (and return) the names of every registry (except postprocessors and loggers).

    Registries are imported lazily; one whose module is not available is skipped.
    """
    shown: Dict[str, List[str]] = {}
    for module_name, attributes in _SHOWN.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            continue
        for attribute in attributes:
            if hasattr(module, attribute):
                shown[attribute] = sorted(getattr(module, attribute))
    for attribute, names in shown.items():
        print(f"{attribute}: {', '.join(names)}")
    return shown


__all__ = ["show_registry"]
